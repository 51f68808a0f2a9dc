"""Card-proven check-in end to end: the virtual JPKI card on the real pcscd (vpcd), the booth's
authenticator signing the roll's challenge, the real broker, roll and ledger."""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from card_fixtures import Cards, Connect

from appliance.card import AuthMode, JpkiAuthenticator
from appliance.card.testca import TestCa
from appliance.simulators.jpki_card import VirtualJpkiCard
from infra.broker import Broker, free_port
from infra.mqtt import HubClient
from station_hub.ledger_service import LedgerService
from station_hub.operator import change_polls
from station_hub.roll import RollStore
from station_hub.roll_service import RollService
from station_hub.station import Station, init_station, install_jpki
from station_hub.terminal_client import CheckinRefused, TerminalClient

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
from hub_fixtures import write_election

CHOICES = {"contest-1": {"candidate-1"}}


class CardOnReader:
    """The booth's view of an authenticated card, as TerminalClient.check_in wants it."""

    def __init__(self, authenticator: JpkiAuthenticator) -> None:
        self.authenticator = authenticator

    @property
    def certificate_der(self) -> bytes:
        return self.authenticator.certificate_der

    def sign(self, message: bytes) -> bytes:
        return self.authenticator.sign_checkin(message)


@pytest.fixture
def pcsc(request: pytest.FixtureRequest) -> Connect:
    return request.getfixturevalue("pcsc_connect")


@pytest.fixture
def hub_station(cards: Cards, tmp_path: Path) -> Iterator[tuple[Station, TestCa]]:
    ca = TestCa.create(tmp_path / "jpki")  # this test's own CA: it revokes a card mid-way
    salt = secrets.token_bytes(32)
    station = init_station(tmp_path / "station", "st-c", write_election(tmp_path / "election"), ["t1"], ["op1"],
                           port=free_port(), roll_salt=salt,
                           jpki_anchors=[ca.directory / "auth-ca.pem", ca.directory / "sign-ca.pem"],
                           jpki_crls=[ca.crl_path(AuthMode.AUTH), ca.crl_path(AuthMode.SIGN)])  # fmt: skip
    with Broker(station, tmp_path / "mosquitto.log"):
        services = [LedgerService(station, checkpoint_interval=0.2), RollService(station)]
        threads = [threading.Thread(target=s.run, daemon=True) for s in services]
        for thread in threads:
            thread.start()
        try:
            yield station, ca
        finally:
            for service in services:
                service.stop()
            for thread in threads:
                thread.join(10)


def _roll(station: Station, ca: TestCa) -> None:
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    for mode in AuthMode:
        store.import_voters(bytes.fromhex(k) for k in ca.roll(station.roll_salt(), mode)["voter_keys"])  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize("mode", list(AuthMode))
def test_the_card_on_the_reader_proves_itself_to_the_roll(
    hub_station: tuple[Station, TestCa], pcsc: Connect, card_slot: object, mode: AuthMode
):
    station, ca = hub_station
    card = ca.issue_card(pin="1234", password="PASS2024")
    later = ca.issue_card(pin="1234", password="PASS2024")
    _roll(station, ca)
    booth_trust = ca.trust_store(mode)  # the booth's CRL: from before the revocation below
    ca.revoke(later.card_id)
    install_jpki(station, [], [ca.crl_path(AuthMode.AUTH), ca.crl_path(AuthMode.SIGN)])
    with HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open", 10)
    with TerminalClient(station, "t1").connect() as t1:
        reader = pcsc(VirtualJpkiCard(card))
        authenticator = JpkiAuthenticator(reader, mode, booth_trust)
        authenticator.authenticate(card.credential(mode).secret)
        ballot = t1.seal(CHOICES, t1.check_in(CardOnReader(authenticator)))
        assert t1.submit(t1.submission(ballot))["result"] == "held"
        reader.release()
        card_slot.empty()  # type: ignore[attr-defined]
        # The booth's older CRL let the revoked card through; the roll's fresh one does not.
        authenticator = JpkiAuthenticator(pcsc(VirtualJpkiCard(later)), mode, booth_trust)
        authenticator.authenticate(later.credential(mode).secret)
        with pytest.raises(CheckinRefused) as refused:
            t1.check_in(CardOnReader(authenticator))
        assert refused.value.reason == "card_revoked"
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    assert store.checked_in() == 1
    store.close()
