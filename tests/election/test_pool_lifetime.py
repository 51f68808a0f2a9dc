"""A pool's worker processes end with the process that made them, however it ends.

A ``kill -9`` of a ledger or a verifier used to leave its fork server and workers waiting
forever outside systemd (a worker holds both ends of its own task queue): the hub tests'
kill -9 runs alone left twelve fork servers and their workers behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from process_tree import descendants, wait_ended

MAKER = """
import os, sys
from election.pool import process_pool
pool = process_pool(2)
futures = [pool.submit(os.getpid) for _ in range(4)]
print(" ".join(str(future.result()) for future in futures), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_every_worker_and_the_fork_server_end_with_the_pools_maker(how: signal.Signals) -> None:
    maker = subprocess.Popen([sys.executable, "-c", MAKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert maker.stdout is not None
        workers = {int(pid) for pid in maker.stdout.readline().split()}
        below = descendants(maker.pid)
        assert workers and workers < below, f"workers {workers} and a fork server should be below the maker: {below}"
        maker.send_signal(how)
        maker.wait(10)
        assert wait_ended(below, 10) == set(), "processes of the pool outlived the process that made it"
    finally:
        if maker.poll() is None:
            maker.kill()
            maker.wait(10)
