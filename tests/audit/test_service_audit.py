"""How the services use their audit logs: the booth's mapping of what happened to events, the
service wrapper (key file, start/stop entries, failures never stopping the service), and the
roll's record of a voter import."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.booth import card_error_word, session_change
from appliance.card import (
    BadCardSignature,
    CardLocked,
    CardProtocolError,
    CardRemoved,
    CardRevoked,
    CertificateExpired,
    InvalidPinFormat,
    ReaderUnavailable,
    UnknownIssuer,
    WrongPin,
)
from appliance.session import State
from appliance.session import events as ev
from audit.chain import AuditEntry, verify_lines
from audit.keys import load_public_key, load_signing_key, public_key_path
from audit.service import ServiceAudit
from audit.store import AuditLog, read_log
from demo.whole_election import demo_manifest
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from station_hub.cli import main as station_hub
from station_hub.roll import VOTER_KEYS_FORMAT
from station_hub.roll_service import roll_audit_paths
from station_hub.station import Station


def logged(path: Path) -> list[AuditEntry]:
    lines, _ = read_log(path)
    return [AuditEntry.parse(line) for line in lines]


def verifies(path: Path, key_path: Path) -> bool:
    lines, torn = read_log(path)
    return not torn and verify_lines(lines, load_public_key(public_key_path(key_path))).ok


@pytest.mark.parametrize(
    ("before", "after", "event", "expected"),
    [
        (State.IDLE, State.PIN, ev.CardInserted(), ("session_started", {})),
        (State.NOT_ELIGIBLE, State.PIN, ev.CardInserted(), ("session_started", {})),  # next voter at once
        (State.CASTING, State.RECEIPT, ev.Cast("00"), ("session_ended", {"outcome": "cast"})),
        (State.CHECKING_IN, State.NOT_ELIGIBLE, ev.Tick(), ("session_ended", {"outcome": "refused"})),
        (State.AUTHENTICATING, State.CARD_LOCKED, ev.CardInserted(), ("session_ended", {"outcome": "refused"})),
        (State.REVIEW, State.CARD_REMOVED, ev.CardTaken(), ("session_ended", {"outcome": "card_removed"})),
        (State.BALLOT, State.IDLE, ev.Tick(), ("session_ended", {"outcome": "timeout"})),
        (State.PIN, State.IDLE, ev.Tap("cancel"), ("session_ended", {"outcome": "abandoned"})),
        (State.SEALED, State.OUT_OF_SERVICE, ev.ServiceChanged(False), ("session_ended", {"outcome": "error"})),
        (State.SEALED, State.SPOILING, ev.Tap("challenge"), None),  # still the same voter
        (State.RECEIPT, State.IDLE, ev.Tap("done"), None),  # the session ended when the ballot was cast
        (State.IDLE, State.OUT_OF_SERVICE, ev.ServiceChanged(False), None),
    ],
)
def test_a_session_is_logged_once_at_its_start_and_once_at_its_end(
    before: State, after: State, event: ev.Event, expected: tuple | None
) -> None:
    assert session_change(before, after, event) == expected


@pytest.mark.parametrize(
    ("error", "word"),
    [
        (WrongPin(2), "wrong_password"),
        (InvalidPinFormat("letters"), "wrong_password"),
        (CardLocked(), "card_locked"),
        (CardRemoved(), "card_removed"),
        (CardRevoked(), "card_revoked"),
        (CertificateExpired(), "certificate_expired"),
        (UnknownIssuer(), "unknown_issuer"),
        (BadCardSignature(), "bad_signature"),
        (ReaderUnavailable("gone"), "reader_unavailable"),
        (CardProtocolError("SW 6A82"), "protocol_error"),
    ],
)
def test_card_errors_are_logged_by_kind_only(error: Exception, word: str) -> None:
    assert card_error_word(error) == word  # type: ignore[arg-type]


def test_a_service_log_starts_with_its_version_and_creates_a_private_key(tmp_path: Path) -> None:
    log_path, key_path = tmp_path / "audit" / "booth.log", tmp_path / "audit" / "audit.key"
    audit = ServiceAudit.start(log_path, key_path, "T01.booth", "booth")
    audit.record("session_started")
    audit.stop()
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert [e.kind for e in logged(log_path)] == ["log_created", "software_started", "session_started",
                                                  "software_stopped"]  # fmt: skip
    assert verifies(log_path, key_path)
    # A restart reuses the key and continues the same chain.
    ServiceAudit.start(log_path, key_path, "T01.booth", "booth").stop()
    assert len(logged(log_path)) == 6 and verifies(log_path, key_path)


def test_a_refused_event_is_reported_and_the_service_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log_path, key_path = tmp_path / "ledger.log", tmp_path / "audit.key"
    audit = ServiceAudit.start(log_path, key_path, "station-1.ledger", "ledger")
    with caplog.at_level(logging.ERROR, logger="audit.service"):
        audit.record("refusals_counted", terminal="t1", reason="not an identifier!", count=1)
    assert "refusals_counted could not be recorded" in caplog.text
    audit.record("refusals_counted", terminal="t1", reason="malformed", count=3)
    audit.stop()
    assert [e.kind for e in logged(log_path)][-2:] == ["refusals_counted", "software_stopped"]
    assert verifies(log_path, key_path)


def test_appends_from_several_threads_keep_one_chain(tmp_path: Path) -> None:
    """The booth records from its worker and from the MQTT thread (acknowledgements)."""
    log_path, key_path = tmp_path / "booth.log", tmp_path / "audit.key"
    audit = ServiceAudit.start(log_path, key_path, "T01.booth", "booth")

    def record(n: int) -> None:
        for count in range(25):
            audit.record("ballots_cast", count=n * 100 + count)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    audit.stop()
    assert len(logged(log_path)) == 2 + 100 + 1 and verifies(log_path, key_path)


def test_importing_voters_is_recorded_in_the_rolls_log_without_a_key(tmp_path: Path) -> None:
    manifest = demo_manifest()
    _trustees, publics, context = ceremony(manifest, 1, 1)
    write_election_package(RecordWriter(tmp_path / "package"), manifest, context, publics)
    keys = [f"{n:064x}" for n in range(1, 4)]
    voters = tmp_path / "voters.json"
    voters.write_text(json.dumps({"format": VOTER_KEYS_FORMAT, "voter_keys": keys}))
    station_dir = tmp_path / "station"
    runner = CliRunner()
    package = str(tmp_path / "package")
    init = ["init", str(station_dir), "--station", "st-1", "--election", package, "--terminal", "T01"]
    result = runner.invoke(station_hub, [*init, "--voters", str(voters)])
    assert result.exit_code == 0, result.output
    again = runner.invoke(station_hub, ["import-voters", str(station_dir), str(voters)])  # nothing new: no change
    assert again.exit_code == 0 and "0 voters added" in again.output

    log_path, key_path = roll_audit_paths(Station.open(station_dir))
    changes = [e for e in logged(log_path) if e.kind == "configuration_changed"]
    assert [e.data["setting"] for e in changes] == ["roll.voters"]
    assert verifies(log_path, key_path)
    assert not any(key in log_path.read_text() for key in keys)

    # While the roll service runs it holds its log: an import is refused with the reason.
    holder = AuditLog.open(log_path, load_signing_key(key_path), "st-1.roll")
    try:
        busy = runner.invoke(station_hub, ["import-voters", str(station_dir), str(voters)])
    finally:
        holder.close()
    assert busy.exit_code != 0 and "stop it to import voters" in busy.output
