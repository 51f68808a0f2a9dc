"""The realistic polling day the audit tests write, shared by their modules."""

from __future__ import annotations

import datetime as dt

from audit.store import AuditLog

LOG_ID = "terminal-07.booth"


def fixed_clock() -> dt.datetime:
    return dt.datetime(2026, 11, 25, 8, 30, 59, tzinfo=dt.UTC)


def write_day(audit_log: AuditLog) -> None:
    """A small polling day: start, polls open, two voters (one challenges), tamper, close."""
    audit_log.append("software_started", role="booth", version="0.1.0")
    audit_log.append("polls_opened", station="station-12")
    for index in range(3):
        audit_log.append("session_started")
        if index == 1:
            audit_log.append("card_error", error="card_removed")
        audit_log.append("card_error", error="wrong_password")
        audit_log.append("ballots_cast", count=1)  # a count interval ended while the voter voted
        audit_log.append("session_ended", outcome="cast")
    audit_log.append("tamper", state="open")
    audit_log.append("polls_closed", station="station-12")
