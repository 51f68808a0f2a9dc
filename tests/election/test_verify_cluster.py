"""``election verify --cluster``: the same checks and sums on a real Dask cluster — a scheduler
and workers started as separate processes on loopback — give the report one process gives; a
worker killed mid-run has its chunks retried on the others; a cluster left with no worker is
a clear failure, never a pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_verify_workers import outcome

from election import pool
from election.manifest import Manifest
from election.pool import WorkerLost
from election.record import DirectoryRecord
from election.tally import add_ballot_files
from election.verify import verify_record
from infra.broker import free_port, wait_for_port


class Cluster:
    def __init__(self, tmp_path: Path, workers: int) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log = (tmp_path / "dask.log").open("ab")
        scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                     "--port", str(self.port), "--dashboard-address", ":0", "--no-show"]  # fmt: skip
        self.scheduler = subprocess.Popen(scheduler, stdout=self.log, stderr=self.log, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, 30, self.scheduler)
        self.workers = [self.start_worker() for _ in range(workers)]
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)

    def start_worker(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nworkers", "1",
                   "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]  # fmt: skip
        return subprocess.Popen(command, stdout=self.log, stderr=self.log, start_new_session=True)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.log.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, workers=2)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_the_cluster_reports_and_tallies_what_one_process_does(many_ballots: Path, cluster: Cluster) -> None:
    record = DirectoryRecord(many_ballots)
    local = verify_record(record, workers=1)
    remote = verify_record(record, cluster=cluster.address)
    assert local.passed and outcome(remote) == outcome(local)
    manifest = Manifest.from_json(record.read("manifest.json"))
    assert add_ballot_files(record, manifest, "ballots", cluster=cluster.address).to_json(manifest) == record.read(
        "tally.json"
    )


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_nothing_but_time(many_ballots: Path, cluster: Cluster) -> None:
    record = DirectoryRecord(many_ballots)
    killed = []

    def kill_one_worker(done: int, total: int) -> None:
        if not killed:
            killed.append(cluster.workers[0].pid)
            os.killpg(cluster.workers[0].pid, signal.SIGKILL)

    report = verify_record(record, kill_one_worker, cluster=cluster.address)
    assert killed and outcome(report) == outcome(verify_record(record))


@pytest.mark.slow
def test_a_cluster_without_workers_fails_clearly(
    many_ballots: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "CLUSTER_IDLE_LIMIT", 3.0)
    for worker in cluster.workers:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    started = time.monotonic()
    with pytest.raises(WorkerLost, match="no worker"):
        verify_record(DirectoryRecord(many_ballots), cluster=cluster.address)
    assert time.monotonic() - started < 60
