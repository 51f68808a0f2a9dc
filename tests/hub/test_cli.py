"""`station-hub init`, `run` and `polls open/close` end to end, with the closing report."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from hub_fixtures import cards_of, jpki_files, make_electorate, roll_of, write_election

from election.chain import verify_document
from election.devices import set_commitment
from infra.broker import free_port, wait_for_port
from station_hub.roll import VOTER_KEYS_FORMAT
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient

CLI = [sys.executable, "-m", "station_hub.cli"]


def test_init_run_open_vote_close(tmp_path: Path):
    election = write_election(tmp_path / "package")
    electorate = make_electorate(tmp_path / "jpki", 3)
    salt = secrets.token_bytes(32)
    (tmp_path / "salt.hex").write_text(salt.hex())
    voters = cards_of(electorate)
    (tmp_path / "voters.json").write_text(
        json.dumps({"format": VOTER_KEYS_FORMAT, "mode": "auth", "voter_keys": roll_of(electorate, salt)})
    )
    directory = tmp_path / "station"
    trust = jpki_files(electorate)
    subprocess.run([*CLI, "init", str(directory), "--station", "st-9", "--election",
                    str(election), "--terminal", "t1", "--operator", "op1", "--voters",
                    str(tmp_path / "voters.json"), "--port", str(free_port()), "--training-terminal-keys",
                    "--roll-salt", str(tmp_path / "salt.hex"), "--jpki-ca", str(trust["jpki_anchors"][0]),
                    "--jpki-crl", str(trust["jpki_crls"][0])],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    refused = subprocess.run([*CLI, "init", str(directory), "--station", "x", "--election",
                              str(election)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "already holds a station" in refused.stderr
    station = Station.open(directory)
    hub = subprocess.Popen([*CLI, "run", str(directory)])
    try:
        wait_for_port(station.host, station.port, 10, hub)
        opened = subprocess.run([*CLI, "polls", str(directory), "open", "--operator", "op1", "--training-cards"],
                                check=True, capture_output=True, timeout=60)  # fmt: skip
        ledger_key = station.signing_key("ledger").public_key()
        assert verify_document(json.loads(opened.stdout), ledger_key)["type"] == "zero_report"
        with TerminalClient(station, "t1").connect() as t1:
            ballot = t1.seal({"contest-1": {"candidate-1"}}, t1.check_in(voters[0]))
            assert t1.submit(t1.submission(ballot))["result"] == "held"
        pending = subprocess.run([*CLI, "polls", str(directory), "close", "--operator", "op1", "--wait", "1",
                                  "--training-cards"],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert pending.returncode == 3 and "t1: never seen" in pending.stderr  # t1 never published a status
        closed = subprocess.run([*CLI, "polls", str(directory), "close", "--operator", "op1", "--training-cards",
                                 "--declare-unreachable", "t1"],
                                check=True, capture_output=True, timeout=60)  # fmt: skip
        report = verify_document(json.loads(closed.stdout), ledger_key)
        stated = {"sealed": 1, "commitment": set_commitment([ballot.ballot_hash]).hex()}
        assert report["unreachable"] == {"t1": stated}, "the final close chained t1's ballot held in the pool"
        reopen = subprocess.run([*CLI, "polls", str(directory), "open", "--operator", "op1", "--training-cards"],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        assert reopen.returncode != 0 and "can never be opened again" in reopen.stderr
        assert report["type"] == "closing_report"
        assert report["ballots"] == report["check_ins"] == 1
        assert report["terminals"] == {"t1": 1} and report["position"] == 1
    finally:
        hub.terminate()
        assert hub.wait(20) == 0
