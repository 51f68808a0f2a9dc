"""Two stations, a central broker and two gateway workers (real Mosquitto; SQLite and PostgreSQL):
totals equal what the voters chose, the exported record verifies, and a station whose centre
was offline catches up."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import CliRunner
from gateway_fixtures import fresh_database, read_json, running_station, use_database

from demo.linking import link_station
from election.record import DEVICE_STATEMENTS, DirectoryRecord
from election.verify import verify_record
from gateway.central import Central
from gateway.cli import main
from gateway.harness import CentralOffice, export_and_tally, start_forwarder, wait_until_complete
from gateway.results import NIST_RESULTS_FILE
from station_hub.cli import main as hub_main


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_stations_two_workers_count_what_voters_chose(
    backend: str, request: pytest.FixtureRequest, central: Central, station_templates, election_files,
    tmp_path: Path,
) -> None:  # fmt: skip
    if backend == "postgresql":
        central = use_database(central, fresh_database(request.getfixturevalue("postgres_admin")))
    with ExitStack() as stack:
        stations = [stack.enter_context(running_station(station_templates[s], tmp_path / s)) for s in ("st-a", "st-b")]
        for station in stations:
            link_station(central, station.station.directory)
            station.polls("open")
        acks = stations[0].vote(7, rng_seed=1) + stations[1].vote(5, rng_seed=2)
        # The hubs forward while the centre is still offline: nothing depends on both being up.
        forwarders = [start_forwarder(s.station.directory, timeout=2.0) for s in stations]
        stack.callback(lambda: [f.terminate() or f.wait(10) for f in forwarders])
        for station in stations:
            station.polls("close")
        office = stack.enter_context(CentralOffice(central, workers=2))
        states = wait_until_complete(central, ["st-a", "st-b"], timeout=60)
        assert {s: states[s].head.position for s in states} == {"st-a": 7, "st-b": 5}
        assert all(process.poll() is None for process in office.workers.values())

        record = tmp_path / "record"
        summary, results = export_and_tally(central, record, election_files[1][:2])
    assert summary.problems == []
    assert (summary.cast, summary.spoiled) == (12, 0)
    expected: dict[tuple[str, str], int] = {}
    for station in stations:
        for position, count in station.expected.items():
            expected[position] = expected.get(position, 0) + count
    assert {p: t for p, t in results.totals.items() if t} == expected
    report = verify_record(DirectoryRecord(record))
    assert report.passed, {n: o.problems for n, o in report.outcomes.items() if not o.passed}
    nist = read_json(record / NIST_RESULTS_FILE)
    counts = {
        selection["@id"]: selection["VoteCounts"][0]["Count"]
        for contest in nist["Election"][0]["Contest"]
        for selection in contest["BallotSelection"]
    }
    assert counts == {f"sel-{c}-{s}": t for (c, s), t in results.totals.items()}

    store = central.store()
    try:
        found = store.find_tracking_code(acks[8]["tracking_code"].lower().replace("-", " "))
    finally:
        store.close()
    assert found is not None and found[0] == "st-b" and found[1].tracking_code == acks[8]["tracking_code"]
    assert (record / DEVICE_STATEMENTS / "b1.json").exists() and (record / DEVICE_STATEMENTS / "a2.json").exists()


def test_cli_status_lookup_export_and_tally(
    central: Central, station_templates, election_files, tmp_path: Path
) -> None:
    with running_station(station_templates["st-a"], tmp_path / "st-a") as station:
        runner = CliRunner()
        station_dir = station.station.directory
        registration, grant = tmp_path / "st-a.registration.json", tmp_path / "st-a.link.json"
        written = runner.invoke(hub_main, ["registration", str(station_dir), str(registration)])
        assert written.exit_code == 0, written.output
        registered = runner.invoke(main, ["register-station", str(central.directory), str(registration), str(grant)])
        assert registered.exit_code == 0 and "terminals added: a1, a2" in registered.output
        assert not (central.directory / "keys" / "st-a.key").exists()  # the centre never holds a hub's key
        linked = runner.invoke(hub_main, ["link", str(station_dir), str(grant)])
        assert linked.exit_code == 0, linked.output
        station.polls("open")
        ack = station.vote(2)[1]
        station.polls("close")
        with CentralOffice(central, workers=1):
            forwarder = start_forwarder(station.station.directory, timeout=2.0)
            try:
                wait_until_complete(central, ["st-a"], timeout=30)
            finally:
                forwarder.terminate()
                forwarder.wait(10)
    status = runner.invoke(main, ["status", str(central.directory)])
    assert status.exit_code == 0 and "st-a: position 2, ok, complete" in status.output
    lookup = runner.invoke(main, ["lookup", str(central.directory), ack["tracking_code"]])
    assert lookup.exit_code == 0 and "station st-a, batch " in lookup.output and "counted" in lookup.output
    assert runner.invoke(main, ["lookup", str(central.directory), "AAAA-AAAA-AAAA-AAAA"]).exit_code == 1
    record = tmp_path / "record"
    exported = runner.invoke(main, ["export", str(central.directory), str(record)])
    assert exported.exit_code == 0 and "2 cast, 0 spoiled" in exported.output and "!" not in exported.output
    one_key = runner.invoke(main, ["tally", str(record), "--key", str(election_files[1][0])])
    assert one_key.exit_code != 0 and "2 needed to decrypt" in one_key.output
    keys = [arg for key in election_files[1][1:] for arg in ("--key", str(key))]
    tallied = runner.invoke(main, ["tally", str(record), *keys])
    assert tallied.exit_code == 0, tallied.output
    assert verify_record(DirectoryRecord(record)).passed
