"""A PN532 on a pseudo-terminal, hosting a simulated Type B card (training, demos, tests).

The core (Pn532Emulator) is sans-I/O: feed it the bytes the host wrote, get back the bytes
the PN532 would answer. It speaks the HSU frame protocol (wake-up preamble, ACK, NACK
retransmission, normal and extended frames, checksums) and the commands a contactless reader
needs: GetFirmwareVersion, SAMConfiguration, RFConfiguration, InListPassiveTarget (Type B),
InDataExchange with MI chaining both ways, Diagnose (card presence), InDeselect, InRelease.
PtyPn532 runs it on a pty whose other end a driver opens as a serial port.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import tty
from enum import Enum

import click

from appliance.card.testca import CardFile
from appliance.drivers.pn532.frames import (
    ACK,
    ERROR_FRAME,
    HOST_TO_PN532,
    MAX_EXTENDED_PAYLOAD,
    PN532_TO_HOST,
    FrameError,
    FrameKind,
    decode_frame,
    encode_frame,
)
from appliance.simulators.jpki_card import CardWithdrawn, SimulatedCard, VirtualJpkiCard

log = logging.getLogger(__name__)

FIRMWARE_VERSION = bytes((0x32, 0x01, 0x06, 0x07))  # PN532 v1.6, Type A, Type B, ISO 18092
STATUS_OK = 0x00
STATUS_TIMEOUT = 0x01
STATUS_NOT_ACCEPTABLE = 0x27
MI = 0x40
BAUD_TYPE_B = 0x03
ATTRIB_RESPONSE = b"\x00"  # MBLI 0, CID 0
# Data bytes after D5 41 Status that fit one extended frame.
MAX_EXCHANGE_CHUNK = MAX_EXTENDED_PAYLOAD - 3


class FrameFault(Enum):
    """Ways the emulator can spoil its next response frames (for fault drills and tests)."""

    BAD_CHECKSUM = "bad-checksum"
    BAD_LENGTH_CHECKSUM = "bad-length-checksum"
    GARBAGE = "garbage"
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    SILENT = "silent"


class Pn532Emulator:
    """PN532 firmware behaviour as a byte-in, byte-out state machine."""

    def __init__(self, card: SimulatedCard | None = None, *, exchange_chunk: int = 0) -> None:
        if not 0 <= exchange_chunk <= MAX_EXCHANGE_CHUNK:
            raise ValueError(f"exchange_chunk must be 0..{MAX_EXCHANGE_CHUNK}")
        self.card = card
        self._chunk = exchange_chunk or MAX_EXCHANGE_CHUNK
        self._buffer = bytearray()
        self._last_response = b""
        self._target_active = False
        self._incoming_apdu = bytearray()
        self._outgoing = b""
        self._faults: list[FrameFault] = []

    def insert(self, card: SimulatedCard) -> None:
        self.card = card

    def remove(self) -> None:
        """Take the card away; an active target then times out, as on a real PN532."""
        self.card = None

    def inject(self, fault: FrameFault, count: int = 1) -> None:
        """Spoil the next `count` response frames (retransmissions included)."""
        self._faults.extend([fault] * count)

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while self._buffer:
            try:
                frame, consumed = decode_frame(bytes(self._buffer))
            except FrameError as exc:
                log.info("PN532 emulator dropped a frame: %s", exc.reason)
                del self._buffer[: exc.consumed]
                continue
            del self._buffer[:consumed]
            if frame is None:
                if consumed == 0:
                    break
                continue
            if frame.kind is FrameKind.NACK:
                out += self._send(self._last_response)
            elif frame.kind is FrameKind.DATA:
                out += self._handle(frame.payload)
        return bytes(out)

    def _handle(self, payload: bytes) -> bytes:
        if len(payload) < 2 or payload[0] != HOST_TO_PN532:
            return ERROR_FRAME
        command, params = payload[1], payload[2:]
        handler = {
            0x00: self._diagnose,
            0x02: lambda _params: FIRMWARE_VERSION,
            0x14: lambda _params: b"",
            0x32: lambda _params: b"",
            0x4A: self._in_list_passive_target,
            0x40: self._in_data_exchange,
            0x44: self._in_release,
            0x52: self._in_release,
        }.get(command)
        if handler is None:
            return ACK + ERROR_FRAME
        self._last_response = bytes((PN532_TO_HOST, command + 1)) + handler(params)
        return ACK + self._send(self._last_response)

    def _send(self, payload: bytes) -> bytes:
        frame = encode_frame(payload)
        if not self._faults:
            return frame
        fault = self._faults.pop(0)
        if fault is FrameFault.BAD_CHECKSUM:
            return frame[:-2] + bytes(((frame[-2] + 1) & 0xFF, 0))
        if fault is FrameFault.BAD_LENGTH_CHECKSUM:
            return frame[:4] + bytes(((frame[4] + 1) & 0xFF,)) + frame[5:]
        if fault is FrameFault.GARBAGE:
            return bytes(range(0x80, 0x80 + len(frame)))
        if fault is FrameFault.TRUNCATED:
            return frame[: len(frame) // 2]
        if fault is FrameFault.OVERSIZED:
            length = (MAX_EXTENDED_PAYLOAD + 100).to_bytes(2, "big")
            return b"\x00\x00\xff\xff\xff" + length + bytes(((-sum(length)) & 0xFF,)) + payload
        return b""  # SILENT

    def _diagnose(self, params: bytes) -> bytes:
        if params[:1] != b"\x06":
            return bytes((STATUS_NOT_ACCEPTABLE,))
        present = self._target_active and self.card is not None
        return bytes((STATUS_OK if present else STATUS_TIMEOUT,))

    def _in_list_passive_target(self, params: bytes) -> bytes:
        if len(params) < 2 or params[0] != 1 or params[1] != BAUD_TYPE_B or self.card is None:
            return b"\x00"
        self.card.reset()
        self._target_active = True
        self._incoming_apdu.clear()
        self._outgoing = b""
        atqb = self.card.atqb
        return b"\x01\x01" + atqb + bytes((len(ATTRIB_RESPONSE),)) + ATTRIB_RESPONSE

    def _in_data_exchange(self, params: bytes) -> bytes:
        if not params or params[0] & 0x3F != 1 or not self._target_active:
            return bytes((STATUS_NOT_ACCEPTABLE,))
        if self.card is None:
            self._target_active = False
            return bytes((STATUS_TIMEOUT,))
        more_from_host, data = params[0] & MI, params[1:]
        if not data and self._outgoing:
            return self._next_chunk()
        self._incoming_apdu += data
        if more_from_host:
            return bytes((STATUS_OK,))
        command, self._incoming_apdu = bytes(self._incoming_apdu), bytearray()
        try:
            self._outgoing = self.card.process(command)
        except CardWithdrawn:
            self.remove()
            self._target_active = False
            return bytes((STATUS_TIMEOUT,))
        return self._next_chunk()

    def _next_chunk(self) -> bytes:
        chunk, self._outgoing = self._outgoing[: self._chunk], self._outgoing[self._chunk :]
        return bytes((MI if self._outgoing else STATUS_OK,)) + chunk

    def _in_release(self, _params: bytes) -> bytes:
        self._target_active = False
        return bytes((STATUS_OK,))


class PtyPn532:
    """Runs an emulator on a pseudo-terminal; `port` is the path a driver opens."""

    def __init__(self, emulator: Pn532Emulator) -> None:
        self.emulator = emulator
        self.lock = threading.Lock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass untouched
        self.port = os.ttyname(self._slave)
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="pn532-emulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            with self.lock:
                reply = self.emulator.feed(data)
            if reply:
                os.write(self._master, reply)

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._stop_read, self._stop_write):
            os.close(fd)


@click.command(help="Emulate a PN532 on a pseudo-terminal with a virtual JPKI card on it.")
@click.argument("card_file", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--link", type=click.Path(), help="also make a symlink to the pty here")
def main(card_file: str | None, link: str | None) -> None:
    logging.basicConfig(level=logging.INFO)
    card = VirtualJpkiCard(CardFile.load(card_file)) if card_file else None
    pty_device = PtyPn532(Pn532Emulator(card))
    if link:
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(pty_device.port, link)
    click.echo(f"PN532 on {link or pty_device.port}; card {'on' if card else 'off'} the reader")
    click.echo("press Enter to take the card off / put it back, Ctrl-D to quit")
    try:
        for _line in sys.stdin:
            with pty_device.lock:
                if pty_device.emulator.card is None and card is not None:
                    pty_device.emulator.insert(card)
                    click.echo("card on the reader")
                else:
                    pty_device.emulator.remove()
                    click.echo("card off the reader")
    except KeyboardInterrupt:
        pass
    finally:
        pty_device.close()
        if link and os.path.islink(link):
            os.unlink(link)
