"""``station-hub run`` restarts a service that died and leaves no orphan when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from election.encoding import parse_json
from infra.broker import wait_for_port
from infra.mqtt import HubClient
from station_hub.station import Station

CLI = [sys.executable, "-m", "station_hub.cli"]


def children(pid: int) -> dict[str, int]:
    """Direct children of ``pid`` by what they run: broker, ledger, roll, forward."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        words = [a.decode() for a in argv if a]
        if not words or ("mosquitto" not in words[0] and not {"ledger", "roll", "forward"} & set(words)):
            continue
        name = "broker" if "mosquitto" in words[0] else next(w for w in ("ledger", "roll", "forward") if w in words)
        found[name] = int(entry.name)
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def ledger_online(station: Station) -> bool:
    try:
        with HubClient(station, "op1").connect(3) as client:
            client.subscribe(station.topics.ledger_status)
            return parse_json(client.next_message(3).payload).get("online") is True
    except Exception:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.slow
def test_run_restarts_a_killed_service_and_kill_9_leaves_no_orphans(station: Station, tmp_path: Path):
    run = subprocess.Popen([*CLI, "-v", "run", str(station.directory)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(station.host, station.port, 15, run)
        first = wait_for(lambda: (c := children(run.pid)).keys() >= {"broker", "ledger", "roll"} and c, 15, "children")
        os.kill(first["ledger"], signal.SIGKILL)
        again = wait_for(lambda: children(run.pid).get("ledger") not in (None, first["ledger"]), 10, "a new ledger")
        assert again
        wait_for(lambda: ledger_online(station), 20, "the restarted ledger online")
        everyone = children(run.pid)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in everyone.values()), 15, "every child gone with the supervisor")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    stderr = run.stderr.read()  # type: ignore[union-attr]
    assert "started ledger" in stderr and "ledger exited with code" in stderr
    # A second start finds nothing in its way (no AuditLogBusy, the port is free).
    second = subprocess.Popen([*CLI, "run", str(station.directory)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(station.host, station.port, 15, second)
        wait_for(lambda: ledger_online(station), 20, "the ledger online after a fresh start")
        second.terminate()
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    assert "AuditLogBusy" not in second.stderr.read()  # type: ignore[union-attr]
