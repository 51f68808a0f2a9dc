"""A common polling place cut off from the municipal roll refuses with a clear screen (issue 17).

Real parts throughout: a PostgreSQL server holding the municipality's register, the municipal
roll service on a real central broker (Mosquitto, mutual TLS), a common station's own broker,
ledger and roll relay, and a real booth (``BoothRunner``) whose card reader is the session's
pcscd with a virtual My Number card. The link to the municipal roll is cut twice — the
municipal roll service stops (the relay's request times out), then the central broker itself
goes away (the relay knows at once) — and each time the booth shows the retry screen naming
the municipal roll and nobody is marked anywhere; once the link is back the same voter, still
at the booth, taps retry, checks in, votes, and cannot check in a second time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "booth"))

from booth_fixtures import PIN, ROLL_SALT, Voters, make_voters, terminal_data_dir
from gateway_fixtures import fresh_database
from hub_fixtures import pump_until

from appliance.card import AuthMode
from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.scripted_voter import ScriptedVoter
from gateway.central import Central
from gateway.municipal_roll import (
    Municipality,
    MunicipalRollService,
    MunicipalStore,
    create_municipality,
    grant_relay_identity,
)
from infra.broker import Broker, free_port
from infra.mqtt import HubClient
from infra.pki import Role
from protocol.municipal import municipal_roll_identity
from station_hub.ledger_service import LedgerService
from station_hub.monitor import MonitorLink, station_state
from station_hub.municipal_relay import RelayService, install_municipal_link, relay_request
from station_hub.operator import change_polls
from station_hub.roll import read_voter_keys
from station_hub.station import Station, init_station

MUNICIPALITY = "kaga"
STATION = "hall-2"
TERMINAL = "c1"
RELAY_TIMEOUT = 2.0
MONITOR = "op1-monitor"
BOUND = 10.0
"""Seconds within which the monitor must show a cut or restored link (probe every second here)."""
"""Seconds the relay waits for the municipal roll (5 in service; shorter keeps the test quick)."""


@dataclass
class Site:
    """The central office (broker, municipal roll) and one common polling place with its booth."""

    root: Path
    central: Central
    url: str
    municipality: Municipality
    voters: Voters
    station: Station
    relay: RelayService
    central_broker: Broker | None = None
    roll: MunicipalRollService | None = None
    roll_thread: threading.Thread | None = None

    def start_central_broker(self, n: int) -> None:
        self.central_broker = Broker(self.central, self.root / f"central-mosquitto-{n}.log")

    def stop_central_broker(self) -> None:
        assert self.central_broker is not None
        self.central_broker.stop()
        self.central_broker = None

    def start_roll(self) -> None:
        self.roll = MunicipalRollService(self.central, self.url, [self.municipality])
        self.roll_thread = threading.Thread(target=self.roll.run, daemon=True)
        self.roll_thread.start()
        assert self.roll.connected.wait(15), "the municipal roll did not subscribe"

    def stop_roll(self) -> None:
        if self.roll is not None:
            self.roll.stop()
            assert self.roll_thread is not None
            self.roll_thread.join(10)
            self.roll = None

    def marked(self) -> int:
        """Voters marked on the municipal register (read straight from PostgreSQL)."""
        store = MunicipalStore(self.url)
        try:
            return store.checked_in(MUNICIPALITY)
        finally:
            store.close()


@pytest.fixture
def site(tmp_path: Path, central: Central, postgres_admin: str, election_files) -> Iterator[Site]:
    voters = make_voters(tmp_path / "jpki-ca", 2)
    anchors, crls = [voters.ca.directory / "auth-ca.pem"], [voters.ca.crl_path(AuthMode.AUTH)]
    municipality = create_municipality(tmp_path / MUNICIPALITY, MUNICIPALITY, jpki_anchors=anchors, jpki_crls=crls,
                                       roll_salt=ROLL_SALT, key_bits=3072)  # fmt: skip
    url = fresh_database(postgres_admin)
    store = MunicipalStore(url)
    try:
        store.add_municipality(MUNICIPALITY, municipality.core().modulus_length)
        store.import_voters(MUNICIPALITY, read_voter_keys((voters.ca.directory / "roll.json").read_bytes()))
        store.add_station(STATION, MUNICIPALITY, "common")
        store.set_polls(MUNICIPALITY, "open")
    finally:
        store.close()
    central.issue(municipal_roll_identity(1), Role.ROLL)
    central.write_broker_files(1)
    station = init_station(tmp_path / STATION, STATION, election_files[0], [TERMINAL], ["op1", MONITOR],
                           port=free_port(), jpki_anchors=anchors, jpki_crls=crls)  # fmt: skip
    certificate = grant_relay_identity(central.directory, STATION, relay_request(station))
    install_municipal_link(station, municipality=MUNICIPALITY, kind="common", host=central.host, port=central.port,
                           ca_pem=central.ca_file.read_bytes(), certificate_pem=certificate,
                           token_public_pem=municipality.token_public_file.read_bytes())  # fmt: skip
    station = Station.open(station.directory)
    relay = RelayService(station, timeout=RELAY_TIMEOUT)
    ledger = LedgerService(station, checkpoint_interval=0.2)
    running = Site(tmp_path, central, url, municipality, voters, station, relay)
    threads: list[threading.Thread] = []
    station_broker = Broker(station, tmp_path / "station-mosquitto.log")
    try:
        running.start_central_broker(1)
        running.start_roll()
        threads = [threading.Thread(target=service.run, daemon=True) for service in (ledger, relay)]
        for thread in threads:
            thread.start()
        assert relay.central_ready.wait(15), "the station roll relay did not reach the central broker"
        with HubClient(station, "op1") as operator:  # the officials' training cards, as the demo does
            operator.connect()
            change_polls(operator, "open", timeout=20)
        yield running
    finally:
        for service in (ledger, relay):
            service.stop()
        for thread in threads:
            thread.join(10)
        running.stop_roll()
        if running.central_broker is not None:
            running.stop_central_broker()
        station_broker.stop()


@pytest.fixture
def booth(site: Site, pcscd, tmp_path: Path) -> Iterator[BoothRunner]:
    config = terminal_data_dir(site.station, site.voters, TERMINAL, tmp_path / TERMINAL, pcscd.reader)
    runner = BoothRunner(load_config(config)).start()
    try:
        assert runner.booth is not None and runner.booth.link.wait_online(20), "the booth did not reach its hub"
        yield runner
    finally:
        runner.stop()


def retry_refused(voter: ScriptedVoter, site: Site, timeout: float = 30) -> dict:
    """Tap retry on the retry screen and return the screen once the relay has refused this retry
    too (its ``roll_unreachable`` count moves: the booth did ask again, nothing was cached)."""
    assert voter.state()["screen"] == "hub_unreachable", voter.view
    refused = site.relay.refusals["roll_unreachable"]
    voter.tap("retry")
    deadline = time.monotonic() + timeout
    while site.relay.refusals["roll_unreachable"] == refused:
        assert time.monotonic() < deadline, "the booth's retry never reached the relay"
        time.sleep(0.05)
    return voter.wait_screen("hub_unreachable", "ballot", "already_voted", "not_eligible", "session_error")


def assert_roll_unreachable(voter: ScriptedVoter, site: Site, view: dict | None = None) -> None:
    """The booth's retry screen names the municipal roll, and nobody is marked anywhere."""
    view = view or voter.wait_screen("hub_unreachable", "ballot", "already_voted", "not_eligible", timeout=30)
    assert view["screen"] == "hub_unreachable", f"the partitioned booth went on to {view['screen']!r}"
    assert view["unreachable"] == "roll_unreachable", view
    assert site.marked() == 0, "a voter was marked at the municipal roll while the place was cut off"
    assert site.relay.store.checked_in() == 0, "the relay counted a check-in while cut off"
    assert site.relay.refusals["roll_unreachable"] >= 1


def test_a_partitioned_common_place_refuses_plainly_then_checks_the_voter_in(site: Site, booth: BoothRunner,
                                                                              card_slot) -> None:  # fmt: skip
    assert booth.ui is not None
    voter = ScriptedVoter(booth.ui.url, timeout=60)
    voter.wait_screen("idle", card_present=False)
    card = card_slot.insert(VirtualJpkiCard(site.voters.eligible[0]))
    voter.wait_screen("pin")

    # 1. The municipal roll service is down (the central broker still up): the relay's request
    #    goes unanswered for its timeout, the terminal hears roll_unreachable.
    site.stop_roll()
    voter.pin(PIN)
    assert_roll_unreachable(voter, site)

    # 2. The central broker goes too (the link itself is cut): the relay refuses at once.
    site.stop_central_broker()
    deadline = time.monotonic() + 10
    while site.relay.central_ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not site.relay.central_ready.is_set(), "the relay did not notice the central broker went away"
    began = time.monotonic()
    assert_roll_unreachable(voter, site, retry_refused(voter, site))
    assert time.monotonic() - began < RELAY_TIMEOUT + 10

    # 3. The link is back: the central broker and the roll service return, the relay reconnects
    #    on its own; the same voter, card still in, taps retry, checks in and votes.
    site.start_central_broker(2)
    site.start_roll()
    assert site.relay.central_ready.wait(20), "the station roll relay did not reconnect to the central broker"
    voter.tap("retry")
    view = voter.wait_screen("ballot", "already_voted", "session_error", timeout=30)
    assert view["screen"] == "ballot", f"after the link came back the booth showed {view}"
    manifest = site.station.election().manifest
    voter.vote({contest.id: [contest.selection_ids()[0]] for contest in manifest.contests})
    voter.seal()
    receipt = voter.cast(wait_for_code=True)
    assert voter.wait_screen("receipt", receipt="held")["tracking_code"] == receipt["tracking_code"]
    assert site.marked() == 1
    assert site.relay.store.checked_in() == 1
    card_slot.remove(card)
    voter.tap("done")
    voter.wait_screen("idle", card_present=False)

    # 4. The same card again: the municipal roll now refuses it — one person, one vote.
    card = card_slot.insert(VirtualJpkiCard(site.voters.eligible[0]))
    voter.wait_screen("pin")
    voter.pin(PIN)
    assert voter.wait_screen("already_voted", "ballot", "hub_unreachable", timeout=30)["screen"] == "already_voted"
    card_slot.remove(card)
    assert site.marked() == 1


UNREACHABLE_ALERT = "MUNICIPAL ROLL UNREACHABLE: nobody can be checked in here until it is back"


def test_the_monitor_says_when_the_municipal_roll_cannot_be_reached(site: Site) -> None:
    """`station-hub monitor`'s state, on the station's real broker: the relay's retained roll
    status says ``municipal_roll`` reachable, then unreachable (with an alert) when the central
    broker goes, then when only the municipal roll service is gone (found by the relay's probe),
    and reachable again once both are back."""
    site.relay.probe_interval = 1.0
    state = station_state(site.station)
    link = MonitorLink(site.station, MONITOR).start()

    def shows(done, what: str) -> None:
        pump_until(link, state, done, what, BOUND)

    try:
        shows(lambda: state.roll.online and state.roll.municipal_roll == "reachable", "the municipal roll reachable")
        assert UNREACHABLE_ALERT not in state.alerts(time.time())
        assert "municipal roll reachable" in state.summary()
        assert state.to_json(time.time())["municipal_roll"] == "reachable"

        site.stop_central_broker()  # the link is cut
        shows(lambda: state.roll.municipal_roll == "unreachable", "the cut link")
        assert UNREACHABLE_ALERT in state.alerts(time.time())
        assert state.roll.online and state.roll.polls == "open", "the relay itself is still up"

        site.start_central_broker(2)
        shows(lambda: state.roll.municipal_roll == "reachable", "the link back")
        assert UNREACHABLE_ALERT not in state.alerts(time.time())

        site.stop_roll()  # the broker answers, the municipal roll does not: only the probe can tell
        shows(lambda: UNREACHABLE_ALERT in state.alerts(time.time()), "the municipal roll service gone")
        site.start_roll()
        shows(lambda: UNREACHABLE_ALERT not in state.alerts(time.time()), "the municipal roll service back")
        assert site.marked() == 0, "a probe marked somebody"
    finally:
        link.close()
