"""Serve a simulated card to pcscd through vsmartcard-vpcd (training, demos, tests).

vpcd's reader driver (loaded by pcscd) waits on a TCP port for a "virtual ICC" to connect.
Connecting is inserting the card, closing the connection is removing it. Each message in
both directions is a 2-byte big-endian length and a payload: a 1-byte payload from vpcd is a
control (0 power off, 1 power on, 2 reset, 4 request the ATR), anything longer a command APDU
that is answered with the response APDU.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from pathlib import Path

import click

from appliance.card.testca import CardFile
from appliance.simulators.jpki_card import CardQuirks, CardWithdrawn, SimulatedCard, VirtualJpkiCard

log = logging.getLogger(__name__)

DEFAULT_PORT = 35963  # vpcd's first reader, "Virtual PCD 00 00"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
READER_NAME = "Virtual PCD 00 00"
POWER_OFF, POWER_ON, RESET, GET_ATR = 0, 1, 2, 4


def free_vpcd_port() -> int:
    """A port p with p and p+1 free on all interfaces (vpcd listens on both, one per reader)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("", port))
                second.bind(("", port + 1))
        except OSError:
            continue
        return port
    raise OSError("no two consecutive free TCP ports")


def write_vpcd_reader_config(directory: Path, port: int) -> None:
    """A reader.conf.d for `pcscd --config DIRECTORY` with vpcd's readers on `port`, `port`+1."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vpcd").write_text(
        f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{port}\nLIBPATH {VPCD_DRIVER}\nCHANNELID {port}\n'
    )


class VpcdCardLink:
    """One insertion of a card into a vpcd reader; close() removes the card."""

    def __init__(
        self,
        card: SimulatedCard,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        connect_timeout: float = 5.0,
    ) -> None:
        self.card = card
        self._socket = socket.create_connection((host, port), timeout=connect_timeout)
        self._socket.settimeout(None)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._thread = threading.Thread(target=self._serve, name="vpcd-card", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Pull the card out of the reader; returns once the link is down."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def wait_removed(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        try:
            while True:
                header = self._receive(2)
                if header is None:
                    return
                payload = self._receive(int.from_bytes(header, "big"))
                if payload is None:
                    return
                reply = self._answer(payload)
                if reply is not None:
                    self._socket.sendall(len(reply).to_bytes(2, "big") + reply)
        except CardWithdrawn:
            log.info("virtual card withdrawn")
        except OSError:
            pass
        finally:
            self._socket.close()

    def _answer(self, payload: bytes) -> bytes | None:
        if len(payload) != 1:
            return self.card.process(payload)
        control = payload[0]
        if control in (POWER_OFF, POWER_ON, RESET):
            self.card.reset()
            return None
        if control == GET_ATR:
            return self.card.atr
        log.warning("vpcd sent unknown control byte %d", control)
        return None

    def _receive(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            chunk = self._socket.recv(count - len(data))
            if not chunk:
                return None
            data += chunk
            # vpcd writes length and payload separately; acknowledging at once keeps the
            # kernel's delayed ACK (40 ms) from stalling its second write under Nagle.
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return bytes(data)


@click.command(help="Insert a virtual JPKI card (a jpki-testca card file) into a vpcd reader.")
@click.argument("card_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--short-read", type=click.IntRange(1, 256), help="READ BINARY answers at most N bytes (short reads).")
@click.option("--exact-le", type=click.IntRange(1, 256), help="READ BINARY answers 6Cxx unless Le is N (or the rest).")
@click.option(
    "--response-chunk", type=click.IntRange(1, 256), help="Answer data via 61xx + GET RESPONSE, N bytes each."
)
def main(
    card_file: str,
    host: str,
    port: int,
    short_read: int | None,
    exact_le: int | None,
    response_chunk: int | None,
) -> None:
    logging.basicConfig(level=logging.INFO)
    quirks = CardQuirks(short_read=short_read, exact_le=exact_le, response_chunk=response_chunk)
    try:
        link = VpcdCardLink(VirtualJpkiCard(CardFile.load(card_file), quirks), host, port)
    except OSError as exc:
        click.echo(f"cannot reach vpcd at {host}:{port} (is pcscd running?): {exc}", err=True)
        sys.exit(1)
    click.echo(f"card inserted into vpcd at {host}:{port}; Ctrl-C removes it")
    try:
        link.wait_removed()
    except KeyboardInterrupt:
        link.close()
