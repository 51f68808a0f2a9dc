"""``kill -9`` of the ledger between receiving and acknowledging loses and duplicates nothing."""

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

from election.chain import verify_chain
from election.encoding import canonical_bytes, parse_json
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
               "--checkpoint-interval", "0.2"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


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


@pytest.mark.parametrize("failpoint", ["ledger-before-commit", "ledger-after-commit"])
def test_kill_between_receive_and_ack_loses_and_duplicates_nothing(
    station: Station, roll: RollService, voters: list[str], failpoint: str
):
    with ledger_process(station) as _, HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open")
    with TerminalClient(station, "t1").connect() as t1:
        ballot = t1.seal(CHOICES, t1.check_in(voters[0]))
        payload = canonical_bytes(ballot.to_json())
        with ledger_process(station, failpoint) as lines:
            assert t1.publish(t1.topics.ballot("t1"), payload) in (0, 16)
            wait_for_line(lines, f"FAILPOINT {failpoint}")
            # The process is stopped at the failpoint; kill -9 it there.
        assert t1.pending() == [], "no acknowledgement may leave before the commit is done"
        with ledger_process(station):
            ack = t1.submit(payload, timeout=15)  # the terminal's outbox resends
            assert ack["result"] == "accepted" and ack["position"] == 1
            second = t1.seal(CHOICES, t1.check_in(voters[1]))
            assert t1.submit(canonical_bytes(second.to_json()))["position"] == 2
            assert t1.submit(payload) == ack
    chain = chain_of(station)
    verify_chain(station.genesis, chain)
    assert [entry.ballot_hash for entry in chain] == [ballot.ballot_hash, second.ballot_hash]
    for message in t1.pending():
        data = parse_json(message.payload)
        assert data.get("result") != "refused", data
