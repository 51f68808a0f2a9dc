"""``kill -9`` of the ledger between receiving and acknowledging loses and duplicates nothing, and
leaves none of its check workers behind."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hub_fixtures import chain_of
from process_tree import descendants, wait_ended

from election.chain import verify_chain
from election.encoding import parse_json
from infra.broker import Broker
from infra.mqtt import HubClient
from station_hub.operator import change_polls
from station_hub.roll_service import RollService
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient

CHOICES = {"contest-1": {"candidate-1"}, "contest-2": {"candidate-3"}}


@contextmanager
def ledger_process(station: Station, failpoint: str | None = None) -> Iterator[queue.Queue[str]]:
    env = {k: v for k, v in os.environ.items() if k != "POLLING_STATION_FAILPOINT"}
    if failpoint:
        env["POLLING_STATION_FAILPOINT"] = failpoint
    command = [sys.executable, "-m", "station_hub.cli", "ledger", str(station.directory),
               "--checkpoint-interval", "0.2", "--proof-workers", "2"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield lines
    finally:
        below = descendants(process.pid)  # its check workers and their fork server
        if process.poll() is None:
            process.kill()
        process.wait(10)
        assert wait_ended(below, 10) == set(), "the ledger's check workers outlived it"


def wait_for_line(lines: queue.Queue[str], text: str, timeout: float = 15.0) -> None:
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the ledger never printed {text!r}") from None
        if text in line:
            return


@pytest.fixture
def roll(station: Station, broker: Broker) -> Iterator[RollService]:
    service = RollService(station)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(10)


@pytest.mark.parametrize(
    ("failpoint", "before"),
    [("ledger-before-commit", 0), ("ledger-after-commit", 0), ("ledger-before-batch", 1), ("ledger-after-batch", 1)],
)
def test_kill_between_receive_ack_and_batch_loses_and_duplicates_nothing(
    station: Station, roll: RollService, voters: list[str], failpoint: str, before: int
):
    """Killed while holding a ballot (before or after its pool commit) or while chaining the pool
    as a batch (batch_min is 2: the second ballot fills it): the resends are held once, the pool
    survives the restart and becomes one sorted batch."""
    with ledger_process(station) as _, HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open")
    with TerminalClient(station, "t1").connect() as t1:
        ballots = [t1.seal(CHOICES, t1.check_in(voter)) for voter in voters[:2]]
        payloads = [t1.submission(ballot) for ballot in ballots]
        with ledger_process(station, failpoint) as lines:
            for payload in payloads[:before]:
                assert t1.submit(payload)["result"] == "held"
            assert t1.publish(t1.topics.ballot("t1"), payloads[before]) in (0, 16)
            wait_for_line(lines, f"FAILPOINT {failpoint}")
            # The process is stopped at the failpoint; kill -9 it there.
        if not before:  # (killed at a batch, the second ballot's ack may have left already)
            assert t1.pending() == [], "no acknowledgement may leave before the pool commit is done"
        with ledger_process(station):
            acks = [t1.submit(payload, timeout=15) for payload in payloads]  # the terminal's outbox resends
            assert [ack["result"] for ack in acks] == ["held", "held"]
            assert t1.submit(payloads[0]) == acks[0]
            t1.subscribe(station.topics.checkpoint)
            t1.next_message(10, lambda m: m.topic == station.topics.checkpoint and b'"position":2' in m.payload)
    chain = chain_of(station)
    verify_chain(station.genesis, chain, batch_min=2)
    assert [entry.ballot_hash for entry in chain] == sorted(ballot.ballot_hash for ballot in ballots)
    for message in t1.pending():
        data = parse_json(message.payload)
        assert data.get("result") != "refused", data
