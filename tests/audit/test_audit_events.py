"""The allow-list: what may be logged, and that identity or choices are refused at append time."""

from __future__ import annotations

import pytest

from audit.errors import ForbiddenEvent
from audit.events import EVENT_KINDS, check_event
from audit.store import AuditLog

VOTER_KEY = "9f" * 32  # what appliance.card.voter_key derives: 64 hex digits


def test_every_listed_kind_documents_why_it_exists() -> None:
    assert all(kind.why for kind in EVENT_KINDS.values())


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        ("voter_checked_in", {}, "not an audit event kind"),
        ("session_started", {"voter_key": VOTER_KEY}, "could identify a voter"),
        ("session_started", {"name": "山田 太郎"}, "could identify a voter"),
        ("card_error", {"error": "wrong_password", "certificate": "MII..."}, "could identify a voter"),
        ("ballots_cast", {"count": 1, "selections": ["candidate-1"]}, "could identify"),
        ("session_ended", {"outcome": "cast", "note": "voter was Mr Yamada"}, "is not allowed"),
        ("ballots_cast", {"count": 1, "ballot_id": "00" * 16}, "is not allowed"),  # no event names a ballot
        ("configuration_changed", {"setting": "station.crl", "sha256": "AB" * 32}, "SHA-256"),
        ("card_error", {"error": "the card of 山田 太郎 failed"}, "is not one of"),
        ("polls_opened", {"station": "station 12; voter 山田"}, "identifier"),
        ("ballots_cast", {"count": -1}, "non-negative"),
        ("ballots_cast", {"count": True}, "non-negative"),
        ("ballots_cast", {}, "missing field"),
        ("software_started", {"role": "booth", "version": 1.5}, "version"),
    ],
)
def test_refuses_events_off_the_allow_list(kind: str, data: dict, reason: str) -> None:
    with pytest.raises(ForbiddenEvent, match=reason):
        check_event(kind, data)


def test_refused_event_leaves_the_log_untouched(audit_log: AuditLog) -> None:
    before = audit_log.path.read_bytes()
    head = audit_log.head
    with pytest.raises(ForbiddenEvent, match="voter_key"):
        audit_log.append("session_started", voter_key=VOTER_KEY)
    assert audit_log.path.read_bytes() == before
    assert audit_log.head == head
    assert audit_log.append("session_started").seq == 1  # the chain continues without a gap


def test_check_ins_counted_has_one_count_per_refusal_reason() -> None:
    """The roll counts each refusal under its own reason (a bad card signature, a stale CRL, a
    revoked terminal...), none folded into ``malformed``; the event's fields follow the enum."""
    from protocol.errors import CheckinReason
    from station_hub.roll_service import COUNTED_REASONS

    fields = set(EVENT_KINDS["check_ins_counted"].fields)
    assert fields == {"checked_in", *(reason.value for reason in CheckinReason)}
    assert set(COUNTED_REASONS) == set(CheckinReason)
    check_event("check_ins_counted", dict.fromkeys(fields, 0))
