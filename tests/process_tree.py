"""A process's descendants, read from /proc: what a test kills must not leave any behind."""

from __future__ import annotations

import time
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, their children, …)."""
    below: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if fields[0] != "Z":
            below.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = list(below.get(pid, []))
    while todo:
        child = todo.pop()
        found.add(child)
        todo += below.get(child, [])
    return found


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie has ended: only its parent's wait is missing)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def wait_ended(pids: set[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` seconds for every one of ``pids`` to end; those still running."""
    deadline = time.monotonic() + timeout
    while (left := running(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
