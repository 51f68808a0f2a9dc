"""``kill -9`` of a gateway worker right after it committed a batch and before it confirmed:
the hub asks again, the other worker answers, nothing is lost and nothing is counted twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from gateway_fixtures import fresh_database, running_station, use_database

from demo.linking import link_station
from election.record import DirectoryRecord
from election.verify import verify_record
from gateway.central import Central
from gateway.harness import CentralOffice, export_and_tally, start_forwarder, wait_until_complete

BALLOTS = 12


def wait_for_line(path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_of_a_worker_mid_stream_loses_and_duplicates_nothing(
    backend: str, request: pytest.FixtureRequest, central: Central, station_templates, election_files,
    tmp_path: Path,
) -> None:  # fmt: skip
    if backend == "postgresql":
        central = use_database(central, fresh_database(request.getfixturevalue("postgres_admin")))
    with running_station(station_templates["st-a"], tmp_path / "st-a") as station:
        link_station(central, station.station.directory)
        station.polls("open")
        station.vote(BALLOTS, rng_seed=7)
        station.polls("close")
        failing = {"gateway-2": {"POLLING_STATION_FAILPOINT": "gateway-after-commit"}}
        with CentralOffice(central, workers=2, worker_env=failing) as office:
            forwarder = start_forwarder(station.station.directory, timeout=2.0, batch=2)
            try:
                wait_for_line(office.log_dir / "gateway-2.log", "FAILPOINT gateway-after-commit")
                store = central.store()
                head_at_kill = store.station_state("st-a").head.position
                store.close()
                os.kill(office.workers["gateway-2"].pid, signal.SIGKILL)
                states = wait_until_complete(central, ["st-a"], timeout=60)
            finally:
                forwarder.terminate()
                forwarder.wait(10)
        assert 0 < head_at_kill < BALLOTS  # the kill really happened mid-stream
        assert states["st-a"].head.position == BALLOTS
        summary, results = export_and_tally(central, tmp_path / "record", election_files[1][1:])
    assert summary.cast == BALLOTS and summary.problems == []
    assert {p: t for p, t in results.totals.items() if t} == station.expected
    report = verify_record(DirectoryRecord(tmp_path / "record"))
    assert report.passed, {n: o.problems for n, o in report.outcomes.items() if not o.passed}
