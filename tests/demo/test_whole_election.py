"""The README's main command: a whole election through the real parts verifies end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.whole_election import run
from election.record import DirectoryRecord
from election.verify import verify_record


def test_whole_election_on_one_machine_verifies(tmp_path: Path, pcscd, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "election", voters_per_booth=2, challenge_every=2, seed=5, pcscd=pcscd)
    printed = capsys.readouterr().out
    assert "decrypted totals EQUAL what the scripted voters chose" in printed
    assert "[PASS] 18." in printed and "found at station-1" in printed
    # The record stands on its own: a fresh verifier run over the files passes, and it holds
    # every ballot cast (2 per booth) plus the challenged ones, each chained at the station.
    report = verify_record(DirectoryRecord(tmp_path / "election" / "record"))
    assert report.passed
    assert len(list((tmp_path / "election" / "record" / "ballots").iterdir())) == 6
    assert len(list((tmp_path / "election" / "record" / "spoiled").iterdir())) == 3
