"""Running the central office and a hub's forwarder as processes, for the demo, tests and benchmarks.

with CentralOffice(central, workers=2) as office:      # central broker + N workers
    forwarder = start_forwarder(station_dir)            # a hub's forwarder (process)
    wait_until_complete(central, ["st-1"], timeout=60)  # every chain up to its closing report
    summary = export_record(...)                        # or export_and_tally(...)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from election.tally import Results
from gateway.central import Central, worker_name
from gateway.errors import GatewayError
from gateway.export import ExportSummary, export_record
from gateway.results import tally_and_decrypt
from gateway.store import StationState
from infra.broker import Broker


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class CentralOffice:
    """The central broker and ``workers`` ``gateway run`` processes, stopped on exit."""

    def __init__(
        self,
        central: Central,
        *,
        workers: int = 2,
        database: str | None = None,
        log_dir: Path | None = None,
        worker_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """``worker_env``: extra environment per worker name (e.g. a fault test's failpoint)."""
        self.central = central
        self.database = database
        self.log_dir = log_dir or central.directory / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        central.write_broker_files(workers)
        self.broker: Broker | None = Broker(central, self.log_dir / "mosquitto.log")  # type: ignore[arg-type]
        self.workers: dict[str, subprocess.Popen] = {}
        try:
            for index in range(1, workers + 1):
                name = worker_name(index)
                self.start_worker(name, (worker_env or {}).get(name))
        except BaseException:
            self.stop()
            raise

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        command = [sys.executable, "-m", "gateway.cli", "run", str(self.central.directory), "--name", name]
        if self.database:
            command += ["--database", self.database]
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(command, stdout=log, stderr=log, env={**os.environ, **(env or {})})
        log.close()
        self.workers[name] = process
        return process

    def stop(self) -> None:
        for process in self.workers.values():
            _stop(process)
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> CentralOffice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_forwarder(
    station_dir: Path, *, timeout: float = 10.0, batch: int = 200, log_file: Path | None = None
) -> subprocess.Popen:
    """``station-hub forward STATION_DIR`` as a process (stop it with ``terminate()``)."""
    command = [sys.executable, "-m", "station_hub.cli", "forward", str(station_dir), "--timeout", str(timeout),
               "--batch", str(batch)]  # fmt: skip
    log = open(log_file or Path(station_dir) / "forward.log", "ab")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(command, stdout=log, stderr=log)
    log.close()
    return process


def station_states(central: Central, database: str | None = None) -> dict[str, StationState]:
    store = central.store(database)
    try:
        return {s: state for s in store.station_ids() if (state := store.station_state(s)) is not None}
    finally:
        store.close()


def wait_until_complete(
    central: Central, station_ids: Sequence[str], *, timeout: float = 120.0, database: str | None = None
) -> dict[str, StationState]:
    """Block until the centre holds every station's chain up to its closing report."""
    deadline = time.monotonic() + timeout
    while True:
        states = station_states(central, database)
        if all(s in states and states[s].complete for s in station_ids):
            return states
        if time.monotonic() > deadline:
            shown = {s: (states[s].head.position, states[s].complete) if s in states else None for s in station_ids}
            raise GatewayError(f"stations not complete within {timeout} s: {shown}")
        time.sleep(0.2)


def export_and_tally(
    central: Central, record: Path, key_files: Sequence[Path], *, database: str | None = None
) -> tuple[ExportSummary, Results]:
    """Export the record, tally it and decrypt the totals with the given trustees' key files."""
    store = central.store(database)
    try:
        summary = export_record(central, store, Path(record))
    finally:
        store.close()
    return summary, tally_and_decrypt(Path(record), key_files)
