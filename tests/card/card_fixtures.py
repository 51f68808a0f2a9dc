"""Fixtures for card tests: a test CA, a private pcscd with vpcd, and the PN532 emulator.

The session's pcscd (one per machine, shared with the booth tests) is in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.card import AuthMode, JpkiAuthenticator
from appliance.card.testca import CardFile, TestCa
from appliance.drivers.pcsc import PcscTransport
from appliance.drivers.pn532.base import Pn532Settings
from appliance.drivers.pn532.uart import Pn532Uart
from appliance.simulators.jpki_card import CardWithdrawn, SimulatedCard, VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532

ROLL_SALT = bytes.fromhex("5a17" * 16)
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


Connect = Callable[[SimulatedCard], object]


@pytest.fixture
def pcsc_connect(pcscd: Any, card_slot: Any) -> Iterator[Connect]:
    transports: list[PcscTransport] = []

    def connect(card: SimulatedCard) -> PcscTransport:
        transport = PcscTransport(pcscd.reader)
        transports.append(transport)
        card_slot.insert(card)
        assert transport.wait_for_card(5), "pcscd did not see the virtual card"
        return transport

    try:
        yield connect
    finally:
        card_slot.empty()
        for transport in transports:
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
