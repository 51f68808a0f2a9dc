"""The monitor against the real broker: it stays current through a broker restart and a
concurrent ``polls`` command, shows a STALE/DISCONNECTED banner within a bound, lists every
configured terminal, never fights a connection that took its identity, and ``--json`` works."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hub_fixtures import Hub, copy_station, jpki_files, make_electorate, roll_of, write_election
from hub_fixtures import pump_until as wait_for_monitor

import station_hub.monitor as monitor
from infra.broker import Broker
from infra.mqtt import HubClient
from station_hub.monitor import MonitorLink, MonitorState, station_state
from station_hub.operator import change_polls
from station_hub.station import Station, init_station

MONITOR = "op1-monitor"
BOUND = 8.0
"""Seconds within which the monitor must show what happened."""


@pytest.fixture(scope="module")
def monitor_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor-template")
    election = write_election(root / "election-package")
    electorate = make_electorate(root / "jpki", 2)
    salt = secrets.token_bytes(32)
    roll_of(electorate, salt)
    init_station(root / "station", "st-1", election, ["t1", "t2", "t3"], ["op1", MONITOR], port=1, roll_salt=salt,
                 **jpki_files(electorate))  # fmt: skip
    return root / "station"


@pytest.fixture
def station(monitor_template: Path, tmp_path: Path) -> Station:
    return copy_station(monitor_template, tmp_path / "station")


def pump_until(link: MonitorLink, state: MonitorState, done: Callable[[], bool], what: str) -> None:
    wait_for_monitor(link, state, done, what, BOUND)


def test_monitor_stays_current_through_polls_and_broker_restart(
    station: Station, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(monitor, "STALE_AFTER", 2.0)
    broker = Broker(station, tmp_path / "mosquitto.log")
    hub = Hub(station).start()
    state = station_state(station)
    link = MonitorLink(station, MONITOR).start()
    try:
        pump_until(link, state, lambda: state.connected and state.ledger.online, "the ledger online")
        assert [row[:2] for row in state.rows()] == [("t1", "never seen"), ("t2", "never seen"), ("t3", "never seen")]
        assert state.stale(time.time()) is None
        with HubClient(station, "op1").connect() as operator:  # the concurrent `polls`
            change_polls(operator, "open")
        pump_until(link, state, lambda: state.ledger.polls == "open", "the polls open")
        assert state.connected
        assert "terminal t3 never seen" in state.alerts(time.time())

        broker.stop()
        pump_until(link, state, lambda: state.connected is False, "the lost broker")
        assert state.stale(time.time()).startswith("DISCONNECTED")
        broker = Broker(station, tmp_path / "mosquitto.log")  # retained statuses are gone (no persistence)
        seen = state.ledger_seen_at
        pump_until(link, state, lambda: state.connected and (state.ledger_seen_at or 0) > (seen or 0),
                   "a fresh ledger status after the restart (resubscribed)")  # fmt: skip
        assert state.stale(time.time()) is None and state.ledger.polls == "open"

        hub.stop()  # the broker stays, the hub's services are gone: no more ledger heartbeats
        pump_until(link, state, lambda: (state.stale(time.time()) or "").startswith("STALE"), "a STALE banner")
        assert "ledger service offline" in state.alerts(time.time())
    finally:
        link.close()
        hub.stop()
        broker.stop()


def test_monitor_leaves_its_identity_to_a_connection_that_takes_it(station: Station, tmp_path: Path):
    with Broker(station, tmp_path / "mosquitto.log"):
        state = MonitorState(station.topics, configured=station.terminals)
        link = MonitorLink(station, "op1").start()
        try:
            pump_until(link, state, lambda: state.connected is True, "the connection")
            with HubClient(station, "op1").connect() as operator:
                pump_until(link, state, lambda: state.connected is False, "the takeover")
                assert "took the session over" in state.stale(time.time())
                time.sleep(2)
                link.pump(state)
                operator.subscribe(station.topics.ledger_status)  # still connected: the monitor did not fight
        finally:
            link.close()


def test_json_status_lists_every_terminal_and_alerts(station: Station, tmp_path: Path):
    with Broker(station, tmp_path / "mosquitto.log"):
        hub = Hub(station).start()
        try:
            command = [sys.executable, "-m", "station_hub.cli", "monitor", str(station.directory), "--operator",
                       MONITOR, "--json", "--wait", "2"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        finally:
            hub.stop()
    document = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr  # alerts: no terminal was ever seen
    assert document["connected"] is True and document["stale"] is None
    assert document["polls"] == "pending" and document["ledger_online"] is True
    assert [t["terminal"] for t in document["terminals"]] == ["t1", "t2", "t3"]
    assert {t["link"] for t in document["terminals"]} == {"never seen"}
