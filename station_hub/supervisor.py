"""``station-hub run``: start the broker and the services, restart a failed one with backoff,
and leave no process behind.

- Every child is started with ``PR_SET_PDEATHSIG`` (Linux): if the supervisor itself dies,
  even by ``kill -9``, the kernel sends each child SIGTERM, so no orphan keeps the audit log
  locked (``AuditLogBusy``) or the broker's port bound for the next start.
- On a clean stop (SIGTERM/SIGINT) the services get SIGTERM, then SIGKILL after a grace time,
  and the broker goes last so the services can publish their "offline" status.
- A service that exits is started again after 1, 2, 4 … :data:`MAX_BACKOFF` seconds; the delay
  starts over once it ran :data:`STABLE_AFTER` seconds. Each start, exit and restart is logged.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("station_hub.run")
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
GRACE = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Child:
    name: str
    argv: list[str]
    log_file: Path | None = None
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    _log: object = field(default=None, repr=False)

    def start(self, now: float) -> None:
        out = subprocess.DEVNULL if self.name == "broker" and self.log_file is None else None
        if self.log_file is not None:
            self._log = open(self.log_file, "ab")  # noqa: SIM115 (kept open while the child runs)
            out = self._log  # type: ignore[assignment]
        # sd_notify is this process's business: a child that inherited NOTIFY_SOCKET would tell
        # systemd it is ready (or ping its watchdog) for the whole unit.
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.process = subprocess.Popen(self.argv, stdout=out, stderr=out, env=env, preexec_fn=_die_with_parent)
        self.started_at, self.restart_at = now, None
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def schedule_restart(self, now: float) -> float:
        if now - self.started_at >= STABLE_AFTER:
            self.failures = 0
        delay = min(MAX_BACKOFF, 2.0**self.failures)
        self.failures += 1
        self.restart_at = now + delay
        return delay

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(GRACE)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killed", self.name, GRACE)
                process.kill()
                process.wait(5)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


class Supervisor:
    def __init__(self, services: list[Child], broker: Child | None = None) -> None:
        self.services = services
        self.broker = broker
        self.stop_event = threading.Event()

    def children(self) -> list[Child]:
        return ([self.broker] if self.broker else []) + self.services

    def run(self, ready: object = None, poll: float = 0.5) -> None:
        from infra.broker import wait_for_port

        try:
            if self.broker is not None:
                self.broker.start(time.monotonic())
                host, port = ready  # type: ignore[misc]
                wait_for_port(host, port, 10.0, self.broker.process)  # type: ignore[arg-type]
            for child in self.services:
                child.start(time.monotonic())
            while not self.stop_event.wait(poll):
                now = time.monotonic()
                for child in self.children():
                    if child.restart_at is not None:
                        if now >= child.restart_at:
                            child.start(now)
                        continue
                    code = child.exited()
                    if code is not None:
                        delay = child.schedule_restart(now)
                        log.error("%s exited with code %s; restarting in %.0f s", child.name, code, delay)
        finally:
            for child in self.services:
                child.stop()
            if self.broker is not None:
                self.broker.stop()
            log.info("stopped every service")


def service_argv(name: str, directory: Path) -> list[str]:
    return [sys.executable, "-m", "station_hub.cli", name, str(directory)]
