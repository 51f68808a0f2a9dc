"""Opening and closing the polls through pcscd with two virtual officials' cards (one in each of
vpcd's two readers), against the real broker, ledger and roll; and the refusals: one card, the
same official twice, a wrong role, a wrong PIN. The cards are the files `station-hub
issue-official-card --training` writes, served by the virtual JPKI card over vpcd."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from appliance.card.testca import CardFile
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pcscd import PrivatePcscd
from appliance.simulators.vpcd import VpcdCardLink
from election.chain import verify_document
from infra.broker import Broker, free_port
from infra.mqtt import HubClient
from infra.official_card import (
    OfficialCardError,
    OfficialInReader,
    PcscOfficialCard,
    WrongOfficialPin,
    cards_in_readers,
)
from infra.officials import authorize, fingerprint
from protocol.errors import PollsReason
from protocol.messages import PollsCommand
from station_hub.ledger_service import LedgerService
from station_hub.operator import PollsRefused, change_polls
from station_hub.roll_service import RollService
from station_hub.station import Station, init_station

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_fixtures import write_election

READERS = ["Virtual PCD 00 00", "Virtual PCD 00 01"]
CLI = [sys.executable, "-m", "station_hub.cli"]


@pytest.fixture
def shared_pcscd(pcscd: PrivatePcscd) -> PrivatePcscd:
    """The test run's one pcscd (tests/conftest.py): starting a second one would stop it under
    every later test that uses it."""
    return pcscd


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    station = init_station(tmp_path / "station", "st-o", write_election(tmp_path / "election"), ["t1"], ["op1"],
                           port=free_port())  # fmt: skip
    with Broker(station, tmp_path / "mosquitto.log"):
        services = [LedgerService(station, checkpoint_interval=0.2), RollService(station)]
        threads = [threading.Thread(target=s.run, daemon=True) for s in services]
        for thread in threads:
            thread.start()
        try:
            yield station
        finally:
            for service in services:
                service.stop()
            for thread in threads:
                thread.join(10)


def issue(station: Station, function: str, holder: str, pin: str, out: Path) -> VirtualJpkiCard:
    done = subprocess.run([*CLI, "issue-official-card", str(station.directory), "--function", function, "--holder",
                           holder, "--pin", pin, "--training", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return VirtualJpkiCard(CardFile.load(out))


class Readers:
    """Cards in vpcd's two readers; each insertion waits until pcscd saw the reader empty."""

    def __init__(self, pcscd: PrivatePcscd) -> None:
        self.pcscd = pcscd
        self.links: list[VpcdCardLink | None] = [None, None]

    def insert(self, slot: int, card: VirtualJpkiCard) -> None:
        self.remove(slot)
        self.links[slot] = VpcdCardLink(card, port=self.pcscd.port + slot)

    def remove(self, slot: int) -> None:
        link = self.links[slot]
        if link is not None:
            link.close()
            self.links[slot] = None
            time.sleep(0.6)  # pcscd polls the reader a few times a second

    def empty(self) -> None:
        for slot in (0, 1):
            self.remove(slot)


def test_opening_and_closing_with_two_officials_cards_through_pcscd(shared_pcscd: PrivatePcscd, station: Station,
                                                                    tmp_path: Path):  # fmt: skip
    manager = issue(station, "station_manager", "staff-0001", "1111", tmp_path / "manager.json")
    witness = issue(station, "witness", "staff-0002", "2222", tmp_path / "witness.json")
    second_witness = issue(station, "witness", "staff-0003", "3333", tmp_path / "witness-2.json")
    readers = Readers(shared_pcscd)
    pins = {"the station manager's card": "1111", "the witness's card": "2222"}
    try:
        # a wrong PIN: the card refuses it and counts the try; nothing is signed or sent
        readers.insert(0, manager)
        with PcscOfficialCard(READERS[0], "station_manager", wait=5) as card, pytest.raises(WrongOfficialPin) as wrong:
            card.unlock("9999")
        assert wrong.value.tries_left == 2 and "refused the PIN" in str(wrong.value)

        # the console refuses a card of the wrong role in the manager's reader at once
        readers.insert(0, witness)
        with pytest.raises(OfficialCardError, match="witness card, not the station manager's"):
            cards_in_readers(READERS[:1], pins.get, wait=5)

        # one card: the ledger refuses, with its reason, at once
        readers.insert(0, manager)
        (only,) = cards_in_readers(READERS[:1], lambda label: "1111", wait=5)
        try:
            with HubClient(station, "op1").connect() as operator, pytest.raises(PollsRefused) as refused:
                change_polls(operator, "open", officials=[only])
            assert refused.value.reason is PollsReason.OFFICIALS_MISSING
        finally:
            only.close()

        # the same official twice: the manager's card (a copy of it) in both readers
        readers.insert(1, VirtualJpkiCard(manager.card))
        twice = [PcscOfficialCard(reader, wait=5) for reader in READERS]
        try:
            for card in twice:
                card.unlock("1111")
            with HubClient(station, "op1").connect() as operator, pytest.raises(PollsRefused) as refused:
                change_polls(operator, "open", officials=twice)
            assert refused.value.reason is PollsReason.SAME_OFFICIAL
        finally:
            for card in twice:
                card.close()

        # a wrong role: two witnesses (different officials), no station manager
        readers.insert(0, second_witness)
        readers.insert(1, witness)
        witnesses = [PcscOfficialCard(READERS[0], wait=5), PcscOfficialCard(READERS[1], wait=5)]
        try:
            witnesses[0].unlock("3333")
            witnesses[1].unlock("2222")
            with HubClient(station, "op1").connect() as operator, pytest.raises(PollsRefused) as refused:
                change_polls(operator, "open", officials=witnesses)
            assert refused.value.reason is PollsReason.WRONG_ROLE
        finally:
            for card in witnesses:
                card.close()

        # the manager's and a witness's card: open, then close (both phases signed)
        readers.insert(0, manager)
        officials = cards_in_readers(READERS, pins.get, wait=5)
        try:
            with HubClient(station, "op1").connect() as operator:
                zero = change_polls(operator, "open", officials=officials)
                closing = change_polls(operator, "close", drain_wait=0.1, officials=officials)
        finally:
            for card in officials:
                card.close()

        # one reader for both, in turn (the demo's way): each signature inserts, unlocks, signs, removes
        readers.empty()
        in_turn = [
            OfficialInReader(
                READERS[1],
                function,
                lambda label, pin=pin: pin,
                wait=5,
                insert=lambda card=card: VpcdCardLink(card, port=shared_pcscd.port + 1).close,
            )
            for function, pin, card in (("station_manager", "1111", manager), ("witness", "2222", witness))
        ]
        signed = authorize(PollsCommand("open"), in_turn)  # signatures only: the polls are closed by now
        for official, card in zip(signed.officials, (manager, witness), strict=True):
            assert official.certificate == card.card.auth.certificate.public_bytes(serialization.Encoding.DER)
            card.card.auth.certificate.public_key().verify(official.signature, signed.signing_input(),
                                                            padding.PKCS1v15(), hashes.SHA256())  # fmt: skip
    finally:
        readers.empty()
    ledger_key = station.signing_key("ledger").public_key()
    der = serialization.Encoding.DER
    expected = {fingerprint(card.card.auth.certificate.public_bytes(der)) for card in (manager, witness)}
    for report, command in ((zero, "open"), (closing, "final")):
        authorization = verify_document(report, ledger_key)["authorized_by"]
        assert authorization["command"] == command
        assert {o["certificate_sha256"] for o in authorization["officials"]} == expected
