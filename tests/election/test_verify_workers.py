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

from election.manifest import Manifest, sample_manifest
from election.pool import CHUNK, WorkerLost
from election.record import DirectoryRecord, RecordWriter
from election.simulation import SEAL_CHUNK, simulate
from election.tally import add_ballot_files
from election.verify import VerificationReport, _chunk_size, verify_record


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


def test_simulated_sealing_on_two_workers_gives_the_record_one_gives(tmp_path: Path) -> None:
    """The seeded decisions are the parent's, the sealing the workers': the same seed makes the
    same voters (choices, challenges, check-ins) whatever the number of workers, and a valid record."""
    manifest = sample_manifest(contests=2, selections=3, limit=2, batch_min=3)
    ballots = 2 * SEAL_CHUNK + 3  # three tasks: the pool runs
    outcomes, stages = [], []
    for workers in (1, 2):
        seen: list[tuple[str, int, int]] = []
        outcome = simulate(manifest, RecordWriter(tmp_path / str(workers)), ballots, trustee_count=2, quorum=2,
                           spoil_rate=0.3, seed=5, workers=workers,
                           progress=lambda *args, seen=seen: seen.append(args))  # fmt: skip
        outcomes.append(outcome)
        stages.append(seen)
        report = verify_record(DirectoryRecord(tmp_path / str(workers)), workers=1)
        assert report.passed, report.failed_checks()
        assert report.ballots_checked == ballots + outcome.spoiled
    one, two = outcomes
    assert (one.expected, one.cast, one.spoiled) == (two.expected, two.cast, two.spoiled)
    assert one.spoiled > 0
    assert one.results is not None and two.results is not None and one.results.totals == two.results.totals
    assert one.results.totals == {p: one.expected.get(p, 0) for p in one.results.totals}
    sealing = [done for stage, done, total in stages[1] if stage == "sealing ballots"]
    assert sealing == sorted(sealing) and sealing[-1] == ballots
    for folder in ("ballots", "spoiled", "device_statements", "stations/station-1"):
        assert len(list((tmp_path / "1" / folder).iterdir())) == len(list((tmp_path / "2" / folder).iterdir()))
    check_ins = [json.loads((tmp_path / w / "reconciliation.json").read_text())["stations"] for w in "12"]
    assert check_ins[0] == check_ins[1]


def test_small_records_are_cut_into_smaller_chunks_for_the_pool() -> None:
    assert _chunk_size(1_000_000, 2) == CHUNK
    assert _chunk_size(1018, 2) == 32
    assert _chunk_size(10, 2) == 8
