"""Time from card present to authenticated, through each real stack.

PC/SC: pyscard -> pcscd (started here, vpcd on free ports) -> vsmartcard-vpcd -> virtual card.
PN532: adafruit driver (extended) -> pty -> PN532 emulator -> virtual card.
"Card present" is the moment the card enters the field (vpcd link up / card on the emulator);
"authenticated" is when JpkiAuthenticator returns the voter key. The PIN is supplied at once,
so the figure is the terminal's own latency, not the voter's typing.

Run: .venv/bin/python benchmarks/bench_card.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.card import AuthMode, JpkiAuthenticator, ReaderUnavailable
from appliance.card.testca import CardFile, TestCa
from appliance.drivers.pcsc import PcscTransport
from appliance.drivers.pn532.uart import Pn532Uart
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.vpcd import READER_NAME, VpcdCardLink, free_vpcd_port, write_vpcd_reader_config

SALT = b"benchmark-roll-salt!"


def authenticate(ca: TestCa, card: CardFile, transport, mode: AuthMode) -> None:
    flow = JpkiAuthenticator(transport, mode, ca.trust_store(mode), SALT)
    flow.tries_left()
    flow.authenticate(card.credential(mode).secret)


def bench_pcsc(ca: TestCa, card: CardFile, mode: AuthMode, rounds: int, work: Path) -> list[float]:
    port = free_vpcd_port()
    config = work / "pcscd-conf"
    write_vpcd_reader_config(config, port)
    process = subprocess.Popen(
        ["pcscd", "--foreground", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        transport = wait_for_pcscd()
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            link = VpcdCardLink(VirtualJpkiCard(card), port=port)
            if not transport.wait_for_card(10):
                raise RuntimeError("pcscd did not see the card")
            authenticate(ca, card, transport, mode)
            times.append(time.perf_counter() - started)
            link.close()
            transport.wait_for_removal(5)
        transport.close()
        return times
    finally:
        process.terminate()
        process.wait(5)


def wait_for_pcscd() -> PcscTransport:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            transport = PcscTransport(READER_NAME)
            if READER_NAME in transport.readers():
                return transport
            transport.close()
        except ReaderUnavailable:
            pass
        time.sleep(0.05)
    raise RuntimeError("pcscd did not start (is another pcscd running?)")


def bench_pn532(ca: TestCa, card: CardFile, mode: AuthMode, rounds: int) -> list[float]:
    emulator = Pn532Emulator(None)
    pty = PtyPn532(emulator)
    try:
        reader = Pn532Uart(pty.port, 115200)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            with pty.lock:
                emulator.insert(VirtualJpkiCard(card))
            if not reader.wait_for_card(10):
                raise RuntimeError("the emulator did not activate the card")
            authenticate(ca, card, reader, mode)
            times.append(time.perf_counter() - started)
            reader.release()
            with pty.lock:
                emulator.remove()
        reader.close()
        return times
    finally:
        pty.close()


def report(stack: str, mode: AuthMode, times: list[float]) -> None:
    print(
        f"{stack:6} {mode:4}  median {statistics.median(times) * 1000:7.1f} ms  "
        f"min {min(times) * 1000:7.1f} ms  max {max(times) * 1000:7.1f} ms  (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = TestCa.create(work / "ca")
        card = ca.issue_card(pin="1234", password="BENCH2024")
        print("card present -> authenticated (virtual card; RSA signing on this CPU)")
        for mode in AuthMode:
            report("pn532", mode, bench_pn532(ca, card, mode, args.rounds))
        for mode in AuthMode:
            mode_dir = work / f"pcsc-{mode}"
            mode_dir.mkdir()
            report("pcsc", mode, bench_pcsc(ca, card, mode, args.rounds, mode_dir))


if __name__ == "__main__":
    sys.exit(main())
