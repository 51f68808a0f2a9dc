"""A private pcscd serving the vpcd virtual readers, for training, demos and tests.

pcscd has one control socket per machine (/run/pcscd/pcscd.comm), so only one can run. This
starts one with its own reader configuration (vpcd on a free loopback port), refuses to run
beside a pcscd it did not start, and stops a pcscd left over from an interrupted run of its
own (it knows that one by a marker file). Never on a production booth: see
``appliance/production.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance.card import ReaderUnavailable
from appliance.drivers.pcsc import PcscTransport
from appliance.simulators.vpcd import READER_NAME, free_vpcd_port, write_vpcd_reader_config

PCSCD_PID_FILE = Path("/run/pcscd/pcscd.pid")
OUR_PCSCD_MARKER = Path(tempfile.gettempdir()) / "polling-station-virtual-pcscd.pid"


class PcscdUnavailable(RuntimeError):
    """A private pcscd cannot be started here (another one runs, or it did not come up)."""


def running_pcscd_pid() -> int | None:
    try:
        pid = int(PCSCD_PID_FILE.read_text().strip().strip("\x00").strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "pcscd" else None


def _wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PcscdUnavailable(failure)
        time.sleep(0.05)


def _stop_our_stale_pcscd() -> None:
    try:
        stale = int(OUR_PCSCD_MARKER.read_text())
    except (OSError, ValueError):
        return
    if stale == running_pcscd_pid():
        os.kill(stale, signal.SIGTERM)
        _wait_until(lambda: running_pcscd_pid() is None, 5, "a stale pcscd did not stop")
    OUR_PCSCD_MARKER.unlink(missing_ok=True)


def _readers_listed() -> bool:
    try:
        transport = PcscTransport()
    except ReaderUnavailable:
        return False
    try:
        return READER_NAME in transport.readers()
    except ReaderUnavailable:
        return False
    finally:
        transport.close()


class PrivatePcscd:
    """``with PrivatePcscd(workdir) as pcscd:`` — the vpcd reader ``pcscd.reader`` on ``pcscd.port``."""

    reader = READER_NAME

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir).resolve()  # pcscd refuses a relative --config
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivatePcscd:
        _stop_our_stale_pcscd()
        foreign = running_pcscd_pid()
        if foreign is not None:
            raise PcscdUnavailable(
                f"a pcscd (pid {foreign}) not started here is running; stop it "
                "(systemctl stop pcscd.socket pcscd) so a private one can serve the virtual reader"
            )
        self.port = free_vpcd_port()
        config = self.workdir / "pcscd-conf"
        config.mkdir(parents=True, exist_ok=True)
        write_vpcd_reader_config(config, self.port)
        with (self.workdir / "pcscd.log").open("wb") as log:
            self._process = subprocess.Popen(
                ["pcscd", "--foreground", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        OUR_PCSCD_MARKER.write_text(str(self._process.pid))
        try:
            _wait_until(_readers_listed, 10, "pcscd did not list the vpcd readers")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._process = None
        OUR_PCSCD_MARKER.unlink(missing_ok=True)

    def __enter__(self) -> PrivatePcscd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
