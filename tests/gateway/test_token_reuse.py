"""The same roll-signed token spent at two stations (which share a roll key, so each ledger
alone accepts it) is caught at the centre, reported with both places, and fails the record."""

from __future__ import annotations

from pathlib import Path

from gateway_fixtures import running_station

from demo.linking import link_station
from election.record import DirectoryRecord
from election.verify import verify_record
from gateway.central import Central
from gateway.export import export_record
from gateway.harness import CentralOffice, start_forwarder, wait_until_complete
from station_hub.terminal_client import TerminalClient

CHOICES = {"contest-1": {"candidate-1"}, "contest-2": {"candidate-2"}}


def test_token_spent_at_two_stations_is_caught(central: Central, station_templates, tmp_path: Path) -> None:
    with (
        running_station(station_templates["st-a"], tmp_path / "st-a") as a,
        running_station(station_templates["st-b"], tmp_path / "st-b", roll_key_of=a.station) as b,
    ):
        for station in (a, b):
            link_station(central, station.station.directory)
            station.polls("open")
        with TerminalClient(a.station, "a1").connect() as at_a, TerminalClient(b.station, "b1").connect() as at_b:
            token = at_a.check_in(a.voters[0])
            assert at_a.submit(at_a.submission(at_a.seal(CHOICES, token)))["result"] == "held"
            assert at_b.submit(at_b.submission(at_b.seal(CHOICES, token)))["result"] == "held"
        for station in (a, b):
            station.polls("close")
        with CentralOffice(central, workers=2):
            for station in (a, b):  # one after the other, so which use is "second" is known
                forwarder = start_forwarder(station.station.directory, timeout=2.0)
                try:
                    wait_until_complete(central, [station.station_id], timeout=30)
                finally:
                    forwarder.terminate()
                    forwarder.wait(10)
    store = central.store()
    try:
        reuse = [i for i in store.incidents() if i.kind == "token_reused"]
        summary = export_record(central, store, tmp_path / "record")
    finally:
        store.close()
    assert [(i.station_id, i.position) for i in reuse] == [("st-b", 1)]
    assert "station st-a position 1" in reuse[0].detail
    assert any("TOKEN_REUSED" in problem for problem in summary.problems)
    report = verify_record(DirectoryRecord(tmp_path / "record"))
    assert any("token used twice" in problem for problem in report.outcomes[9].problems)
