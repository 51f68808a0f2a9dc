"""Two polling places (early, common) check voters in against the municipal roll through the
real path: terminal → station broker → station roll relay → central broker (mutual TLS,
per-station identity ``<station>.roll``) → municipal roll on a real PostgreSQL → back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gateway_fixtures import fresh_database
from municipal_fixtures import MUNICIPALITY, EarlyStation, make_early_station, make_municipality, prepare_store

from election import tokens
from gateway.central import Central
from gateway.municipal_roll import MunicipalRollService, MunicipalStore
from infra.broker import Broker
from infra.mqtt import HubClient
from infra.pki import Role
from protocol.messages import CheckinChallengeRequest
from protocol.municipal import checkin_topic, municipal_roll_identity, reply_topic
from station_hub.terminal_client import CheckinRefused, TerminalClient

NOT_AUTHORIZED = 135


class Centre:
    def __init__(self, central: Central, url: str, municipality, root: Path) -> None:
        central.issue(municipal_roll_identity(1), Role.ROLL)
        central.write_broker_files(1)
        self.central, self.url, self.municipality = central, url, municipality
        self.broker = Broker(central, root / "central-mosquitto.log")
        self.service: MunicipalRollService | None = None
        self.thread: threading.Thread | None = None

    def start_roll(self) -> None:
        self.service = MunicipalRollService(self.central, self.url, [self.municipality])
        self.thread = threading.Thread(target=self.service.run, daemon=True)
        self.thread.start()
        assert self.service.connected.wait(10), "the municipal roll did not subscribe"

    def stop_roll(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.thread.join(10)
            self.service = None

    def stop(self) -> None:
        self.stop_roll()
        self.broker.stop()


@pytest.fixture
def setup(tmp_path: Path, central: Central, postgres_admin: str, election_files):
    electorate = make_municipality(tmp_path / "municipality", key_bits=3072)
    url = fresh_database(postgres_admin)
    prepare_store(url, electorate, tmp_path / "municipality", {"st-a": "early", "st-b": "common"})
    centre = Centre(central, url, electorate.municipality, tmp_path)
    stations: list[EarlyStation] = []
    try:
        centre.start_roll()
        for station_id, kind in (("st-a", "early"), ("st-b", "common")):
            stations.append(make_early_station(tmp_path, station_id, kind, election_files[0], central,
                                               electorate.municipality, timeout=2.0))  # fmt: skip
        for early in stations:
            assert early.relay.central_ready.wait(10), "a station roll did not reach the central broker"
        yield electorate, centre, stations[0], stations[1]
    finally:
        for early in stations:
            early.stop()
        centre.stop()


def marked(url: str) -> int:
    store = MunicipalStore(url)
    try:
        return store.checked_in(MUNICIPALITY)
    finally:
        store.close()


def test_checked_in_early_is_refused_at_the_common_place(setup):
    electorate, centre, early, common = setup
    key = electorate.municipality.token_public_key()
    with TerminalClient(early.station, "a1").connect() as a1, TerminalClient(common.station, "b1").connect() as b1:
        assert a1.token_key.public_numbers() == key.public_numbers()  # the booth blinds with the municipality's key
        token = a1.check_in(electorate.voters[0])
        assert tokens.verify(key, token.message, token.signature)
        with pytest.raises(CheckinRefused) as refused:
            b1.check_in(electorate.voters[0])
        assert refused.value.reason == "already_voted"
        with pytest.raises(CheckinRefused) as stranger:
            b1.check_in(electorate.stranger)
        assert stranger.value.reason == "not_eligible"
        other = b1.check_in(electorate.voters[1])
        assert tokens.verify(key, other.message, other.signature)
    assert marked(centre.url) == 2
    # Each relay counts the voters checked in at its own station (its closing report's check-ins).
    assert (early.relay.store.checked_in(), common.relay.store.checked_in()) == (1, 1)
    common.relay.store.granted(b"\x01" * 384)
    common.relay.store.granted(b"\x01" * 384)  # a retry with the same blinded token counts once
    assert common.relay.store.checked_in() == 2


def test_a_place_whose_polls_are_not_open_checks_nobody_in(setup):
    electorate, centre, early, _common = setup
    early.relay.store.set_polls("closed")
    with TerminalClient(early.station, "a1").connect() as a1:
        with pytest.raises(CheckinRefused) as refused:
            a1.check_in(electorate.voters[9])
        assert refused.value.reason == "polls_not_open" and "st-a" in str(refused.value)
    assert marked(centre.url) == 0


def test_concurrent_double_check_in_at_two_places_yields_one_token(setup):
    electorate, centre, early, common = setup
    with TerminalClient(early.station, "a1").connect() as a1, TerminalClient(common.station, "b1").connect() as b1:
        for card in electorate.voters[2:7]:
            results: list = [None, None]
            start = threading.Barrier(2)

            def run(i: int, client: TerminalClient, card=card, results=results, start=start) -> None:
                start.wait()
                try:
                    results[i] = client.check_in(card)
                except CheckinRefused as refusal:
                    results[i] = refusal.reason

            threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((a1, b1))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(map(str, results)).count("already_voted") == 1, results
            assert sum(1 for r in results if not isinstance(r, str)) == 1, results
    assert marked(centre.url) == 5


def test_unreachable_municipal_roll_refuses_clearly_and_marks_nobody(setup):
    electorate, centre, early, _common = setup
    centre.stop_roll()
    with TerminalClient(early.station, "a1").connect() as a1:
        began = time.monotonic()
        with pytest.raises(CheckinRefused) as refused:
            a1.check_in(electorate.voters[7])
        assert refused.value.reason == "roll_unreachable"
        assert "municipal roll" in str(refused.value)
        assert time.monotonic() - began < 8
        assert marked(centre.url) == 0
        # The central broker itself goes away: refused at once, still nothing marked.
        centre.broker.stop()
        deadline = time.monotonic() + 10
        while early.relay.central_ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(CheckinRefused) as partitioned:
            a1.check_in(electorate.voters[7])
        assert partitioned.value.reason == "roll_unreachable"
        # Back: the broker and the roll return, the relay reconnects, the voter checks in.
        centre.broker = Broker(centre.central, Path(centre.central.directory).parent / "central-mosquitto-2.log")
        centre.start_roll()
        assert early.relay.central_ready.wait(15), "the station roll did not reconnect"
        token = a1.check_in(electorate.voters[7])
        assert tokens.verify(electorate.municipality.token_public_key(), token.message, token.signature)
    assert marked(centre.url) == 1


def test_a_station_roll_cannot_speak_for_another_station(setup):
    """The central broker's ACL: st-a's roll identity can neither send as st-b nor read st-b's replies."""
    electorate, _centre, early, common = setup
    early.relay.stop()  # its identity is used by hand below (one client id per identity)
    early.thread.join(10)
    with HubClient(early.relay.link, "st-a.roll").connect() as spy:  # type: ignore[arg-type]
        assert spy.publish(checkin_topic("st-b", "b1"), CheckinChallengeRequest().encode()) == NOT_AUTHORIZED
        assert spy.publish(checkin_topic("st-a", "a1"), CheckinChallengeRequest().encode()) in (0, 16)
        spy.subscribe(reply_topic("st-b"))  # granted, but Mosquitto delivers nothing the ACL forbids
        spy.subscribe("central/roll/+/checkin/+")
        with TerminalClient(common.station, "b1").connect() as b1:
            b1.check_in(electorate.voters[8])
        time.sleep(0.5)
        assert [m.topic for m in spy.pending() if "st-b" in m.topic] == []
