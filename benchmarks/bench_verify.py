"""Verification throughput of a whole record: ballots per second with 1, 2, … workers (same
record, same process, one after the other), the speed-up over one worker, and the record's
size per ballot. The record (format 2: ristretto255, sorted batches of 10, device statements)
is simulated first (2 contests × 4 selections by default, like the record measured in issue
18) and reused for every run.

    python benchmarks/bench_verify.py --ballots 2000
    python benchmarks/bench_verify.py --ballots 100000 --workers 1,2 --record /tmp/record-100k
    nice -n 19 python benchmarks/bench_verify.py --ballots 100000 --simulate-only  # the record alone

The record is simulated into ``<record>.partial`` and renamed into place once complete, so a
record folder is always a whole record: an interrupted simulation is started afresh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from election.cli import ProgressLine
from election.manifest import sample_manifest
from election.record import DirectoryRecord, RecordWriter
from election.simulation import simulate
from election.verify import verify_record


def record_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def simulate_record(root: Path, ballots: int, contests: int, selections: int, workers: int | None) -> None:
    """Simulate the benchmark's record into ``<root>.partial``, then rename it to ``root``."""
    if root.exists():
        if any(path.is_file() for path in root.rglob("*")):
            raise SystemExit(f"{root} holds files but no results.json: not a record of this benchmark, or an "
                             f"unfinished one; delete it first")  # fmt: skip
        shutil.rmtree(root)  # the empty folders an interrupted run of an older version left
    partial = root.with_name(f"{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted simulation: start afresh
    started = time.perf_counter()
    manifest = sample_manifest(contests, selections, 1, batch_min=10)  # a production-sized batch
    shown = [-1]

    def log(stage: str, done: int, total: int) -> None:  # every 1 %, timed: a long run is followed in its log
        percent = 100 * done // max(total, 1)
        if percent != shown[0]:
            shown[0] = percent
            print(f"{time.perf_counter() - started:8.1f} s  {stage} {done}/{total}", flush=True)

    simulate(manifest, RecordWriter(partial), ballots, trustee_count=3, quorum=2, spoil_rate=0.02, seed=1,
             progress=log, workers=workers)  # fmt: skip
    partial.rename(root)
    print(f"simulated {ballots} ballots into {root} in {time.perf_counter() - started:.1f} s")


def versus_one(rate: float, one: float | None) -> str:
    """The speed-up over one worker, when one worker was measured in this run."""
    return "" if one is None else f" ({rate / one:.2f}× one worker)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ballots", type=int, default=2000)
    parser.add_argument("--contests", type=int, default=2)
    parser.add_argument("--selections", type=int, default=4)
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="comma-separated worker counts")
    parser.add_argument("--record", type=Path, default=None, help="where to keep the simulated record (reused)")
    parser.add_argument("--cluster-workers", type=int, default=2,
                        help="Dask worker processes of the local cluster measured last (0: skip)")  # fmt: skip
    parser.add_argument("--simulate-only", action="store_true", help="create the record if need be, then exit")
    parser.add_argument("--sim-workers", type=int, default=None,
                        help="processes sealing the simulated ballots (default: every core)")  # fmt: skip
    args = parser.parse_args()
    # The format version is in the default path: a record of another format is never reused.
    root = args.record or Path(f"/tmp/bench-verify-v2-{args.ballots}-{args.contests}x{args.selections}")
    if not (root / "results.json").exists():
        simulate_record(root, args.ballots, args.contests, args.selections, args.sim_workers)
    size = record_size(root)
    print(f"record: {size / 2**20:.1f} MiB, {size / args.ballots / 1024:.2f} KiB per ballot")
    if args.simulate_only:
        return
    baseline = None
    for workers in (int(w) for w in args.workers.split(",") if w):  # "" : the cluster alone
        progress = ProgressLine()
        started = time.perf_counter()
        report = verify_record(
            DirectoryRecord(root), lambda done, total, show=progress: show("verifying", done, total), workers=workers
        )
        elapsed = time.perf_counter() - started
        rate = report.ballots_checked / elapsed
        if workers == 1:
            baseline = rate
        verdict = "passed" if report.passed else f"FAILED {report.failed_checks()}"
        print(f"workers={workers}: {report.ballots_checked} ballots in {elapsed:.1f} s = {rate:.0f} ballots/s"
              f"{versus_one(rate, baseline)}, {verdict}")  # fmt: skip
    if args.cluster_workers:
        from distributed import LocalCluster

        # Scheduler and workers as separate processes on loopback, as on a real cluster.
        with LocalCluster(n_workers=args.cluster_workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, host="127.0.0.1") as cluster:  # fmt: skip
            progress = ProgressLine()
            started = time.perf_counter()
            report = verify_record(DirectoryRecord(root), lambda done, total: progress("verifying", done, total),
                                   cluster=cluster.scheduler_address)  # fmt: skip
            elapsed = time.perf_counter() - started
        rate = report.ballots_checked / elapsed
        print(f"Dask local cluster, {args.cluster_workers} workers: {elapsed:.1f} s = {rate:.0f} ballots/s"
              f"{versus_one(rate, baseline)}, {'passed' if report.passed else 'FAILED'}")  # fmt: skip


if __name__ == "__main__":
    main()
