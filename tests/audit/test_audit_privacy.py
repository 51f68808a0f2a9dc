"""An audit log of realistic voting sessions holds no voter identity and no choice.

The end-to-end version of this check (a full simulated election through the booth) waits for
the booth; here the same check runs on a log written with real cards from the test JPKI CA
and the election core's sample manifest.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from audit_day import LOG_ID
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.card.testca import TestCa
from appliance.card.voter_key import voter_key_of
from audit.cli import main
from audit.privacy import find_forbidden
from audit.store import AuditLog
from election.manifest import sample_manifest

HOLDERS = [
    {"name": "山田 花子", "sex": "2", "birth_date": "19751203", "address": "大阪府大阪市北区梅田三丁目4番5号"},
    {"name": "Tanaka Ichiro", "sex": "1", "birth_date": "19900417", "address": "Sapporo Chuo-ku Kita 1-jo 7"},
]


@pytest.fixture(scope="module")
def voting_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A log of two voters (each mistypes the password once) and the strings it must not hold."""
    root = tmp_path_factory.mktemp("privacy")
    ca = TestCa.create(root / "jpki")
    cards = [ca.issue_card(holder=holder) for holder in HOLDERS]
    roll_salt = secrets.token_bytes(32)
    manifest = sample_manifest(contests=2, selections=3, limit=1)
    log_path = root / "booth.log"
    with AuditLog.open(log_path, Ed25519PrivateKey.generate(), LOG_ID) as audit_log:
        audit_log.append("software_started", role="booth", version="0.1.0")
        audit_log.append("polls_opened", station="station-12")
        for _holder in HOLDERS:
            audit_log.append("session_started")
            audit_log.append("card_error", error="wrong_password")
            audit_log.append("session_ended", outcome="cast")
        audit_log.append("ballots_cast", count=len(HOLDERS))
        audit_log.append("polls_closed", station="station-12")
    forbidden: list[str] = []
    for card, holder in zip(cards, HOLDERS, strict=True):
        forbidden += [holder["name"], holder["address"], holder["birth_date"], card.card_id, card.sign.secret]
        for certificate in (card.auth.certificate, card.sign.certificate):
            forbidden += [voter_key_of(roll_salt, certificate), str(certificate.serial_number)]
            forbidden += [f"{certificate.serial_number:x}", certificate.subject.rfc4514_string()]
    for contest in manifest.contests:
        for selection in contest.selections:
            forbidden += [selection.id, selection.name["en"], selection.name["ja"]]
    return log_path, forbidden


def test_no_voter_identity_or_choice_in_the_log(voting_day: tuple[Path, list[str]]) -> None:
    log_path, forbidden = voting_day
    assert find_forbidden(log_path, forbidden) == []


def test_no_voter_identity_or_choice_in_the_text_dump(voting_day: tuple[Path, list[str]], tmp_path: Path) -> None:
    log_path, forbidden = voting_day
    dump = tmp_path / "dump.txt"
    result = CliRunner().invoke(main, ["export", str(log_path), "--format", "text", "--out", str(dump)])
    assert result.exit_code == 0, result.output
    assert "ballots_cast" in dump.read_text()
    assert find_forbidden(dump, forbidden) == []


def test_the_check_finds_a_planted_leak(voting_day: tuple[Path, list[str]], tmp_path: Path) -> None:
    """The check itself must be able to fail: plant a voter key and a candidate in a copy."""
    log_path, forbidden = voting_day
    voter_key = next(text for text in forbidden if len(text) == 64)
    leaky = tmp_path / "leaky.log"
    leaky.write_bytes(log_path.read_bytes() + f'{{"voter":"{voter_key.upper()}","vote":"Candidate 2"}}\n'.encode())
    leaks = find_forbidden(leaky, forbidden)
    last_line = len(leaky.read_bytes().split(b"\n")) - 1
    assert {(leak.line, leak.forbidden) for leak in leaks} == {(last_line, voter_key), (last_line, "candidate 2")}


def test_the_check_refuses_strings_too_short_to_mean_anything(voting_day: tuple[Path, list[str]]) -> None:
    with pytest.raises(ValueError, match="too short"):
        find_forbidden(voting_day[0], ["s1"])
