"""The site layer's service loop (infra/service.py) speaks sd_notify to a real datagram socket,
bound here the way systemd binds its own and passed as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.broker import Broker
from infra.service import Notifier, Vitals, run_service
from station_hub.station import Station


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; every datagram is kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.datagrams: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def lines(self) -> list[str]:
        return [line for datagram in self.datagrams for line in datagram.splitlines()]

    def wait_for(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            assert time.monotonic() < deadline, f"no {line} within {timeout} s: {self.datagrams}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify")
    try:
        yield listener
    finally:
        listener.close()


def wait_for_line(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout} s: {log.read_text()}"
        time.sleep(0.1)


class Looping:
    """A service whose main loop turns every 50 ms until told to stop, or stalls when asked."""

    def __init__(self) -> None:
        self.vitals = Vitals()
        self.stopped = threading.Event()
        self.stall = threading.Event()

    def run(self) -> None:
        self.vitals.mark_ready()
        while not self.stopped.wait(0.05):
            if not self.stall.is_set():
                self.vitals.beat()

    def stop(self) -> None:
        self.stopped.set()


def test_ready_watchdog_while_the_loop_turns_and_stopping(notify_socket: NotifySocket) -> None:
    service = Looping()
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"})
    thread = threading.Thread(target=run_service, args=(service, "looping"),
                              kwargs={"notifier": notifier, "install_signals": False})  # fmt: skip
    thread.start()
    notify_socket.wait_for("READY=1", 2)
    time.sleep(1.0)
    pings = notify_socket.lines().count("WATCHDOG=1")
    assert pings >= 3, notify_socket.datagrams  # every 0.2 s (half of WatchdogSec)

    service.stall.set()  # a wedged main loop: the pings stop, so systemd would restart the unit
    time.sleep(0.6)
    stalled_at = notify_socket.lines().count("WATCHDOG=1")
    time.sleep(0.8)
    assert notify_socket.lines().count("WATCHDOG=1") == stalled_at, "pings went on for a stalled loop"

    service.stall.clear()
    time.sleep(0.6)
    assert notify_socket.lines().count("WATCHDOG=1") > stalled_at, "no pings after the loop turned again"
    service.stop()
    thread.join(5)
    notify_socket.wait_for("STOPPING=1", 2)
    lines = notify_socket.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1") and lines.count("STOPPING=1") == 1


def test_no_notify_socket_no_datagram_and_no_failure() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None and not notifier.send("READY=1")
    service = Looping()
    threading.Timer(0.3, service.stop).start()
    run_service(service, "looping", notifier=notifier, install_signals=False)


def test_watchdog_meant_for_another_process_is_ignored(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_interval is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog_interval == 1.0


def test_the_ledger_service_notifies_systemd(station: Station, broker: Broker, notify_socket: NotifySocket,
                                             tmp_path: Path) -> None:  # fmt: skip
    """`station-hub ledger` as systemd runs it: READY=1 once connected, WATCHDOG=1 pings,
    STOPPING=1 on SIGTERM; start, recovery, broker loss and regain logged at info without -v."""
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    log = tmp_path / "ledger.log"
    with log.open("wb") as out:
        ledger = subprocess.Popen([sys.executable, "-m", "station_hub.cli", "ledger", str(station.directory)],
                                  stdout=out, stderr=out, env=env)  # fmt: skip
    try:
        notify_socket.wait_for("READY=1", 20)
        time.sleep(1.2)
        assert notify_socket.lines().count("WATCHDOG=1") >= 2, notify_socket.datagrams
        broker.stop()
        wait_for_line(log, "ledger lost the station broker", 10)
        restarted = Broker(station, tmp_path / "mosquitto-2.log")
        try:
            wait_for_line(log, "ledger regained the station broker after", 20)
            pings = notify_socket.lines().count("WATCHDOG=1")
            time.sleep(1.0)
            assert notify_socket.lines().count("WATCHDOG=1") > pings, "no watchdog pings after the broker came back"
            ledger.send_signal(signal.SIGTERM)
            assert ledger.wait(15) == 0, log.read_text()
        finally:
            restarted.stop()
    finally:
        if ledger.poll() is None:
            ledger.kill()
            ledger.wait(5)
    notify_socket.wait_for("STOPPING=1", 2)
    text = log.read_text()
    for expected in ("ledger starting", "recovered chain position 0 and 0 ballot(s) in the pool, polls pending",
                     "ledger connected to the station broker", "ledger ready", "ledger stopped"):  # fmt: skip
        assert expected in text, text
    assert "level=error" not in text, text


def test_the_roll_command_notifies_systemd_too(station: Station, broker: Broker, notify_socket: NotifySocket,
                                               tmp_path: Path) -> None:  # fmt: skip
    """The roll runs under the same loop (`station-hub roll`): its unit is Type=notify as well."""
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}
    log = tmp_path / "roll.log"
    with log.open("wb") as out:
        roll = subprocess.Popen([sys.executable, "-m", "station_hub.cli", "roll", str(station.directory)],
                                stdout=out, stderr=out, env=env)  # fmt: skip
    try:
        notify_socket.wait_for("READY=1", 20)
        notify_socket.wait_for("WATCHDOG=1", 3)
        roll.send_signal(signal.SIGTERM)
        assert roll.wait(15) == 0, log.read_text()
    finally:
        if roll.poll() is None:
            roll.kill()
            roll.wait(5)
    notify_socket.wait_for("STOPPING=1", 2)
    text = log.read_text()
    assert "roll starting" in text and "roll stopped" in text, text
    assert "roll connected to the station broker" in text and "voters on the roll" in text, text
