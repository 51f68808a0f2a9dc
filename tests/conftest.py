"""Fixtures shared by several test folders.

pcscd has one control socket per machine (/run/pcscd/pcscd.comm), so the session starts one
instance with its own reader config (vpcd on free ports) and refuses to run beside a pcscd it
did not start; a pcscd left over from an interrupted run of these tests is stopped first.
Card tests (tests/card) and booth tests (tests/booth) share it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.card import ReaderUnavailable
from appliance.drivers.pcsc import PcscTransport
from appliance.simulators.jpki_card import SimulatedCard
from appliance.simulators.vpcd import READER_NAME, VpcdCardLink, free_vpcd_port, write_vpcd_reader_config

PCSCD_PID_FILE = Path("/run/pcscd/pcscd.pid")
OUR_PCSCD_MARKER = Path(tempfile.gettempdir()) / "polling-station-card-tests-pcscd.pid"


def _pcscd_pid() -> int | None:
    try:
        pid = int(PCSCD_PID_FILE.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "pcscd" else None


def _stop_our_stale_pcscd() -> None:
    try:
        stale = int(OUR_PCSCD_MARKER.read_text())
    except (OSError, ValueError):
        return
    if stale == _pcscd_pid():
        os.kill(stale, signal.SIGTERM)
        _wait_until(lambda: _pcscd_pid() is None, 5, "stale pcscd did not stop")
    OUR_PCSCD_MARKER.unlink(missing_ok=True)


def _wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.05)


@dataclass(frozen=True)
class Pcscd:
    port: int
    reader: str = READER_NAME


def _readers_listed() -> bool:
    try:
        transport = PcscTransport()
    except ReaderUnavailable:
        return False
    try:
        return READER_NAME in transport.readers()
    except ReaderUnavailable:
        return False
    finally:
        transport.close()


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    _stop_our_stale_pcscd()
    foreign = _pcscd_pid()
    if foreign is not None:
        pytest.fail(
            f"a pcscd (pid {foreign}) not started by these tests is running; stop it "
            "(e.g. systemctl stop pcscd.socket pcscd) so the tests can run their own"
        )
    port = free_vpcd_port()
    config = tmp_path_factory.mktemp("pcscd-conf")
    write_vpcd_reader_config(config, port)
    log = (config.parent / "pcscd.log").open("wb")
    process = subprocess.Popen(
        ["pcscd", "--foreground", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    OUR_PCSCD_MARKER.write_text(str(process.pid))
    try:
        _wait_until(_readers_listed, 10, "pcscd did not list the vpcd readers")
        yield Pcscd(port)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        OUR_PCSCD_MARKER.unlink(missing_ok=True)


class CardSlot:
    """The session reader's slot, used the way a hand uses it: one card at a time.

    Each insertion first waits until pcscd has seen the reader empty (a card pulled and
    another pushed in faster than pcscd polls would otherwise look like no change at all),
    and every card still in the reader is pulled out when the test ends, pass or fail, so
    one test's card can never block the next test's reader.
    """

    def __init__(self, pcscd: Pcscd) -> None:
        self.pcscd = pcscd
        self.links: list[VpcdCardLink] = []

    def insert(self, card: SimulatedCard) -> VpcdCardLink:
        self.wait_empty()
        link = VpcdCardLink(card, port=self.pcscd.port)
        self.links.append(link)
        return link

    def remove(self, link: VpcdCardLink) -> None:
        link.close()
        self.wait_empty()

    def wait_empty(self, timeout: float = 10) -> None:
        transport = PcscTransport(self.pcscd.reader)
        try:
            if not transport.wait_for_removal(timeout):
                raise AssertionError("pcscd still reports a card in the virtual reader")
        finally:
            transport.close()

    def empty(self) -> None:
        for link in self.links:
            link.close()
        self.links.clear()
        self.wait_empty()


@pytest.fixture
def card_slot(pcscd: Pcscd) -> Iterator[CardSlot]:
    slot = CardSlot(pcscd)
    try:
        yield slot
    finally:
        slot.empty()
