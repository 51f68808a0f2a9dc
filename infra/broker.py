"""Starting and stopping a site's Mosquitto (station hub or centre) with its generated configuration."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Protocol

from infra.errors import SiteError

START_TIMEOUT = 10.0


class BrokerProcessSite(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def broker_config(self) -> Path: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SiteError(f"mosquitto exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise SiteError(f"mosquitto did not open {host}:{port} within {timeout} s")


class Broker:
    """A Mosquitto process owned by the hub (or by a test), stopped on exit."""

    def __init__(self, station: BrokerProcessSite, log_file: Path | None = None) -> None:
        self.station = station
        self._log = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(station.broker_config)],
            stdout=self._log,
            stderr=self._log,
        )
        try:
            wait_for_port(station.host, station.port, START_TIMEOUT, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
