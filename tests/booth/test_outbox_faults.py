"""The outbox under faults: kill -9 of the booth process around sealing, a broker outage.

Afterwards the hub holds exactly the ballots cast, once each.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from booth_fixtures import PIN, Voters, booth_set, ledger_rows, ledger_statement, terminal_data_dir

from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.scripted_voter import ScriptedVoter
from election.chain import tracking_code
from election.encoding import canonical_bytes, parse_json, sha256
from infra.broker import Broker
from station_hub.station import Station

BOOTH = [sys.executable, "-m", "appliance.cli"]


def wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


class BoothProcess:
    """``booth run`` in its own process; stderr is watched for the FAILPOINT line."""

    def __init__(self, config: Path, failpoint: str | None = None) -> None:
        env = {**os.environ, "POLLING_STATION_FAILPOINT": f"booth-{failpoint}" if failpoint else ""}
        self.process = subprocess.Popen([*BOOTH, "run", "--config", str(config)], env=env, stderr=subprocess.PIPE)
        self.failpoint_hit = threading.Event()
        self.lines: list[str] = []
        threading.Thread(target=self._watch, daemon=True).start()
        self.voter = ScriptedVoter(f"http://127.0.0.1:{load_config(config).ui_port}/")
        wait_until(self._serving, 20, f"booth run did not start: {self.lines[-5:]}")

    def _watch(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if line.startswith("FAILPOINT"):
                self.failpoint_hit.set()

    def _serving(self) -> bool:
        assert self.process.poll() is None, f"booth run exited: {self.lines[-5:]}"
        try:
            self.voter.state()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def processes() -> Iterator[list[BoothProcess]]:
    started: list[BoothProcess] = []
    yield started
    for booth in started:
        booth.stop()


def cast_count(station: Station) -> int:
    """Cast ballots the ledger holds (chained or in its pool)."""
    return sum(row.kind == "cast" for row in ledger_rows(station))


def outbox_payloads(outbox: Path) -> list[bytes]:
    """The submissions a booth's outbox owes the hub, as committed (read from its file)."""
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT payload FROM outbox")]
    finally:
        db.close()


def vote_until_sealed(voter: ScriptedVoter) -> None:
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.vote({"contest-1": ["candidate-1"], "contest-2": ["candidate-2"]})
    voter.seal()


def test_kill_9_after_commit_and_after_seal(
    station: Station, voters: Voters, hub, pcscd, card_slot, tmp_path: Path, processes: list[BoothProcess]
) -> None:
    config = terminal_data_dir(station, voters, "t2", tmp_path / "t2", pcscd.reader)
    before = cast_count(station)

    # 1. Killed right after the cast ballot was committed, before it was published.
    booth = BoothProcess(config, failpoint="after-commit")
    processes.append(booth)
    card = card_slot.insert(VirtualJpkiCard(voters.eligible[4]))
    vote_until_sealed(booth.voter)
    booth.voter.tap("cast")
    assert booth.failpoint_hit.wait(20), "the failpoint was not reached"
    booth.kill()
    card_slot.remove(card)
    assert cast_count(station) == before, "the ballot left before the failpoint"
    [committed] = outbox_payloads(load_config(config).outbox)
    submission = parse_json(committed)
    statement = submission["statement"]
    assert statement["sealed"] == len(booth_set(load_config(config).outbox))

    # 2. Restarted: it resends the very bytes it committed, statement and all; then a voter is
    #    killed after sealing (nothing committed).
    booth = BoothProcess(config, failpoint="after-seal")
    processes.append(booth)
    wait_until(lambda: cast_count(station) == before + 1, 20, "the outbox did not drain after the restart")
    ballot_hash = sha256(canonical_bytes(submission["ballot"]))
    [held] = [row for row in ledger_rows(station) if row.ballot_hash == ballot_hash]
    assert parse_json(held.stored) == submission["ballot"]
    committed_statement = (statement["sealed"], *(bytes.fromhex(statement[k]) for k in ("commitment", "signature")))
    assert ledger_statement(station, "t2") == committed_statement, "the resend did not carry the committed statement"
    wait_until(lambda: not outbox_payloads(load_config(config).outbox), 20, "the held ack did not empty the outbox")
    card = card_slot.insert(VirtualJpkiCard(voters.eligible[5]))
    booth.voter.wait_screen("pin")
    booth.voter.pin(PIN)
    booth.voter.vote({"contest-1": ["candidate-3"]})
    booth.voter.tap("seal")
    assert booth.failpoint_hit.wait(20)
    booth.kill()
    card_slot.remove(card)

    # 3. The same voter comes back: the stored check-in gets the same token; the vote counts once.
    booth = BoothProcess(config)
    processes.append(booth)
    card = card_slot.insert(VirtualJpkiCard(voters.eligible[5]))
    vote_until_sealed(booth.voter)
    assert booth.voter.cast()["tracking_code"]
    card_slot.remove(card)
    booth.stop()
    assert cast_count(station) == before + 2
    stored = [row.stored for row in ledger_rows(station)]
    assert len(stored) == len(set(stored)), "the ledger holds a ballot twice"


def test_broker_outage_during_voting(
    station: Station, voters: Voters, hub, broker: Broker, pcscd, card_slot, tmp_path: Path
) -> None:
    config = terminal_data_dir(station, voters, "t1", tmp_path / "t1", pcscd.reader)
    before = cast_count(station)
    with BoothRunner(load_config(config)) as runner:
        assert runner.booth is not None and runner.ui is not None and runner.booth.link.wait_online(10)
        voter = ScriptedVoter(runner.ui.url)
        card = card_slot.insert(VirtualJpkiCard(voters.eligible[3]))
        voter.wait_screen("pin")
        voter.pin(PIN)
        voter.wait_screen("ballot")
        broker.stop()
        voter.wait_screen("ballot", hub_online=False)
        voter.vote({"contest-1": ["candidate-2"], "contest-2": ["candidate-1"]})
        voter.seal()
        receipt = voter.cast(wait_for_code=False)
        assert receipt["receipt"] == "kept", "the receipt claims more than that the ballot waits here"
        assert receipt["tracking_code"] == tracking_code(bytes.fromhex(receipt["ballot_hash"]))
        assert runner.booth.outbox.depth() == 1
        restarted = Broker(station, tmp_path / "mosquitto.log")
        try:
            view = voter.wait_screen("receipt", timeout=30, receipt="held")
            assert view["tracking_code"] == receipt["tracking_code"]
            assert runner.booth.outbox.depth() == 0
            card_slot.remove(card)
        finally:
            restarted.stop()
    assert cast_count(station) == before + 1
