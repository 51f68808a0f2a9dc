"""Fixtures for card tests: a test CA, a private pcscd with vpcd, and the PN532 emulator.

pcscd has one control socket per machine (/run/pcscd/pcscd.comm), so the session starts one
instance with its own reader config (vpcd on free ports) and refuses to run beside a pcscd it
did not start; a pcscd left over from an interrupted run of these tests is stopped first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.card import AuthMode, JpkiAuthenticator, ReaderUnavailable
from appliance.card.testca import CardFile, TestCa
from appliance.drivers.pcsc import PcscTransport
from appliance.drivers.pn532.base import Pn532Settings
from appliance.drivers.pn532.uart import Pn532Uart
from appliance.simulators.jpki_card import CardWithdrawn, SimulatedCard, VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.vpcd import READER_NAME, VpcdCardLink, free_vpcd_port, write_vpcd_reader_config

ROLL_SALT = bytes.fromhex("5a17" * 16)
PCSCD_PID_FILE = Path("/run/pcscd/pcscd.pid")
OUR_PCSCD_MARKER = Path(tempfile.gettempdir()) / "polling-station-card-tests-pcscd.pid"
PN532_TEST_SETTINGS = Pn532Settings(command_timeout=0.5, exchange_timeout=2.0, poll_interval=0.05)


@dataclass(frozen=True)
class Cards:
    ca: TestCa
    good: CardFile
    revoked: CardFile
    expired: CardFile
    foreign: CardFile  # same CA name, different CA key
    cloned: CardFile  # good's certificates, fresh keys


@pytest.fixture(scope="session")
def cards(tmp_path_factory: pytest.TempPathFactory) -> Cards:
    ca = TestCa.create(tmp_path_factory.mktemp("ca"))
    good = ca.issue_card(pin="1234", password="PASS2024")
    revoked = ca.issue_card(pin="1234", password="PASS2024")
    ca.revoke(revoked.card_id)
    now = datetime.now(UTC)
    expired = ca.issue_card(
        pin="1234",
        password="PASS2024",
        not_before=now - timedelta(days=5 * 365),
        not_after=now - timedelta(days=1),
    )
    foreign_ca = TestCa.create(tmp_path_factory.mktemp("foreign-ca"))
    foreign = foreign_ca.issue_card(pin="1234", password="PASS2024")
    return Cards(ca, good, revoked, expired, foreign, good.cloned())


def authenticator(cards: Cards, transport, mode: AuthMode) -> JpkiAuthenticator:
    return JpkiAuthenticator(transport, mode, cards.ca.trust_store(mode), ROLL_SALT)


class ScriptedCard:
    """A virtual card whose answers to chosen commands are replaced.

    `replace(command)` returns the response to send instead, None to let the real card
    answer, or raises CardWithdrawn to pull the card out of the field.
    """

    def __init__(self, card: SimulatedCard, replace: Callable[[bytes], bytes | None]) -> None:
        self._card = card
        self._replace = replace
        self.commands: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return self._card.atr

    @property
    def atqb(self) -> bytes:
        return self._card.atqb

    def reset(self) -> None:
        self._card.reset()

    def process(self, raw: bytes) -> bytes:
        self.commands.append(raw)
        replacement = self._replace(raw)
        return self._card.process(raw) if replacement is None else replacement


def withdraw() -> bytes:
    raise CardWithdrawn()


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


Connect = Callable[[SimulatedCard], object]


@pytest.fixture
def pcsc_connect(pcscd: Pcscd) -> Iterator[Connect]:
    opened: list[tuple[VpcdCardLink, PcscTransport]] = []

    def connect(card: SimulatedCard) -> PcscTransport:
        transport = PcscTransport(pcscd.reader)
        link = VpcdCardLink(card, port=pcscd.port)
        opened.append((link, transport))
        assert transport.wait_for_card(5), "pcscd did not see the virtual card"
        return transport

    yield connect
    for link, transport in opened:
        link.close()
        transport.wait_for_removal(5)
        transport.close()


@dataclass
class Pn532Rig:
    emulator: Pn532Emulator
    reader: Pn532Uart


@pytest.fixture
def pn532_rig() -> Iterator[Callable[..., Pn532Rig]]:
    opened: list[tuple[PtyPn532, Pn532Uart | None]] = []

    def start(card: SimulatedCard | None, **emulator_options) -> Pn532Rig:
        emulator = Pn532Emulator(card, **emulator_options)
        pty = PtyPn532(emulator)
        opened.append((pty, None))
        reader = Pn532Uart(pty.port, 115200, settings=PN532_TEST_SETTINGS)
        opened[-1] = (pty, reader)
        return Pn532Rig(emulator, reader)

    yield start
    for pty, reader in opened:
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()
        pty.close()


@pytest.fixture
def pn532_connect(pn532_rig: Callable[..., Pn532Rig]) -> Connect:
    def connect(card: SimulatedCard) -> Pn532Uart:
        rig = pn532_rig(card)
        assert rig.reader.wait_for_card(2), "the PN532 emulator did not activate the card"
        return rig.reader

    return connect


@pytest.fixture(params=["pcsc", "pn532"])
def connect(request: pytest.FixtureRequest) -> Connect:
    """Each test using this runs through both real stacks."""
    return request.getfixturevalue(f"{request.param}_connect")


@pytest.fixture
def virtual_card(cards: Cards) -> VirtualJpkiCard:
    return VirtualJpkiCard(cards.good)
