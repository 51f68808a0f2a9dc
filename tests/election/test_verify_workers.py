"""``verify --workers N``: the per-ballot checks in a process pool give the very report one
process gives (passing and failing records alike), and a dead worker is a clear failure."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from test_verify import edit, first, flip_hex_bit, selection

from election.manifest import Manifest
from election.pool import WorkerLost
from election.record import DirectoryRecord
from election.tally import add_ballot_files
from election.verify import VerificationReport, verify_record


def outcome(report: VerificationReport) -> dict[int, tuple[list[str], int]]:
    return {n: (o.problems, o.problem_count) for n, o in report.outcomes.items()} | {0: ([], report.ballots_checked)}


def test_two_workers_report_exactly_what_one_reports_on_a_good_record(many_ballots: Path) -> None:
    one = verify_record(DirectoryRecord(many_ballots), workers=1)
    two = verify_record(DirectoryRecord(many_ballots), workers=2)
    assert one.passed and outcome(one) == outcome(two)


def test_two_workers_report_exactly_what_one_reports_on_a_tampered_record(many_ballots: Path, tmp_path: Path) -> None:
    import shutil

    record = tmp_path / "record"
    shutil.copytree(many_ballots, record)
    ballots = sorted((record / "ballots").glob("*.json"))
    edit(ballots[3], lambda d: selection(d)["proof"]["responses"].__setitem__(
        0, flip_hex_bit(selection(d)["proof"]["responses"][0])))  # fmt: skip
    (record / "device_statements" / "terminal-2.json").unlink()
    (record / "ballots" / ballots[100].name).write_text(json.dumps({"not": "a ballot"}))
    edit(first(record / "spoiled"), lambda d: d["opening"].update(contests=[]))
    one = verify_record(DirectoryRecord(record), workers=1)
    two = verify_record(DirectoryRecord(record), workers=2)
    assert not one.passed
    assert outcome(one) == outcome(two)
    assert {6, 7, 8, 10, 12, 13} <= set(one.failed_checks())


def test_the_tally_on_two_workers_is_the_tally_on_one(many_ballots: Path) -> None:
    record = DirectoryRecord(many_ballots)
    manifest = Manifest.from_json(record.read("manifest.json"))
    one = add_ballot_files(record, manifest, "ballots", workers=1)
    two = add_ballot_files(record, manifest, "ballots", workers=2)
    assert one.to_json(manifest) == two.to_json(manifest) == record.read("tally.json")


def test_a_killed_worker_is_a_clear_failure_not_a_partial_pass(many_ballots: Path) -> None:
    killed: list[int] = []

    def kill_a_worker(done: int, total: int) -> None:
        children = multiprocessing.active_children()
        if not killed and children:
            killed.append(children[0].pid or 0)
            os.kill(children[0].pid or 0, signal.SIGKILL)

    with pytest.raises(WorkerLost):
        verify_record(DirectoryRecord(many_ballots), kill_a_worker, workers=2)
    assert killed
