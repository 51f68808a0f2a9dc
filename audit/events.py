"""The closed list of audit events and, for each, the only fields it may carry.

The audit log must never hold who voted or how. Rather than trying to spot identity in free
text, nothing free is allowed: every event kind names its fields, every field has a narrow
shape (an enumerated word, an identifier, an integer, a hash of a fixed size),
and anything else is refused when the event is appended. Names that would announce identity
or choices (``voter_key``, ``name``, ``certificate``, ``selections``, …) get a pointed error
so a developer sees at once why the event was refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.errors import ForbiddenEvent

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_SETTING = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

# Field names that betray an attempt to log a voter or a choice. The allow-list below already
# refuses them; naming them gives the developer the reason instead of "unknown field".
IDENTITY_FIELD_NAMES = frozenset(
    {
        "voter", "voter_key", "voter_id", "name", "name_kana", "address", "birth_date", "sex",
        "certificate", "cert", "serial", "serial_number", "subject", "issuer", "card", "card_id",
        "pin", "password", "token", "blinded_token", "choice", "choices", "selection",
        "selections", "contest", "contests", "vote", "votes", "plaintext", "nonce", "nonces",
    }
)  # fmt: skip


@dataclass(frozen=True)
class FieldShape:
    """One allowed shape of a field value; `parse` turns command-line text into that value."""

    description: str
    pattern: re.Pattern[str] | None = None
    words: frozenset[str] = frozenset()
    hex_bytes: int = 0
    integer: bool = False
    boolean: bool = False

    def check(self, value: Any, where: str) -> None:
        if self.integer:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise ForbiddenEvent(f"{where}: must be {self.description}")
            return
        if self.boolean:
            if not isinstance(value, bool):
                raise ForbiddenEvent(f"{where}: must be {self.description}")
            return
        if not isinstance(value, str):
            raise ForbiddenEvent(f"{where}: must be {self.description}, got {type(value).__name__}")
        if self.words and value not in self.words:
            raise ForbiddenEvent(f"{where}: {value!r} is not one of {sorted(self.words)}")
        if self.hex_bytes and not re.fullmatch(f"[0-9a-f]{{{2 * self.hex_bytes}}}", value):
            raise ForbiddenEvent(f"{where}: must be {self.description}")
        if self.pattern is not None and not self.pattern.match(value):
            raise ForbiddenEvent(f"{where}: must be {self.description}")

    def parse(self, text: str) -> Any:
        if self.integer:
            try:
                return int(text, 10)
            except ValueError:
                raise ForbiddenEvent(f"{text!r} is not {self.description}") from None
        if self.boolean:
            if text not in ("true", "false"):
                raise ForbiddenEvent(f"{text!r} is not {self.description}")
            return text == "true"
        return text


def _words(*values: str) -> FieldShape:
    return FieldShape(f"one of {', '.join(values)}", words=frozenset(values))


IDENTIFIER = FieldShape("an identifier (letters, digits, . _ -, at most 64)", pattern=_IDENTIFIER)
VERSION = FieldShape("a version string (letters, digits, . _ + -, at most 64)", pattern=_VERSION)
SETTING = FieldShape("a setting name (lowercase letters, digits, . _ -)", pattern=_SETTING)
SHA256 = FieldShape("a SHA-256 digest as 64 lowercase hex digits", hex_bytes=32)
PUBLIC_KEY = FieldShape("an Ed25519 public key as 64 lowercase hex digits", hex_bytes=32)
COUNT = FieldShape("a non-negative integer", integer=True)
FLAG = FieldShape("true or false", boolean=True)

ROLE = _words("booth", "hub", "ledger", "roll", "gateway", "forwarder", "kiosk")
SESSION_OUTCOME = _words("cast", "abandoned", "timeout", "card_removed", "refused", "error")
CARD_ERROR = _words(
    "wrong_password", "card_locked", "card_invalid", "card_revoked", "certificate_expired",
    "unknown_issuer", "bad_signature", "card_removed", "protocol_error", "reader_unavailable",
    "not_eligible", "already_voted", "stale_crl",
)  # fmt: skip
OPEN_CLOSED = _words("open", "closed")
REPORT = _words("zero_report", "closing_report")
UP_DOWN = _words("up", "down")
POLLS_COMMAND = _words("open", "close", "final")
OFFICIAL_FUNCTION = _words("station_manager", "witness")


@dataclass(frozen=True)
class EventKind:
    name: str
    fields: Mapping[str, FieldShape]
    why: str


EVENT_KINDS: dict[str, EventKind] = {
    kind.name: kind
    for kind in (
        EventKind("log_created", {"log": IDENTIFIER, "public_key": PUBLIC_KEY}, "first entry of every log"),
        EventKind(
            "log_recovered",
            {"discarded_bytes": COUNT, "discarded_sha256": SHA256},
            "a torn last line (power cut mid-append) was cut off when the log was reopened",
        ),
        EventKind("software_started", {"role": ROLE, "version": VERSION}, "a service started"),
        EventKind("software_stopped", {"role": ROLE, "clean": FLAG}, "a service stopped"),
        EventKind(
            "configuration_changed",
            {"setting": SETTING, "sha256": SHA256},
            "a setting or file changed; only the hash of its new content is logged",
        ),
        EventKind("polls_opened", {"station": IDENTIFIER}, "the station opened the polls"),
        EventKind("polls_closed", {"station": IDENTIFIER}, "the station closed the polls"),
        EventKind(
            "polls_command_authorized",
            {"command": POLLS_COMMAND, "function": OFFICIAL_FUNCTION, "certificate_sha256": SHA256},
            "an official's card signed an accepted polls command (the card's certificate by its "
            "fingerprint only: never a name)",
        ),
        EventKind(
            "polls_command_refused",
            {"command": POLLS_COMMAND, "reason": IDENTIFIER},
            "the ledger refused a polls command (officials' signatures, state or challenge), with the reason",
        ),
        EventKind("session_started", {}, "a card was presented; nothing about it is logged"),
        EventKind("session_ended", {"outcome": SESSION_OUTCOME}, "how a voter's session ended"),
        EventKind("card_error", {"error": CARD_ERROR}, "a card or reader problem, by kind only"),
        EventKind(
            "ballots_cast",
            {"count": COUNT},
            "the terminal committed this many ballots, with their voters' tokens, to its outbox since "
            "its previous count (one entry per interval, never per ballot: nothing in the log dates a ballot)",
        ),
        EventKind(
            "batch_committed",
            {"position": COUNT, "entries": COUNT},
            "the ledger chained a hash-sorted batch of this many ballots, ending at this position "
            "(one entry per batch, never per ballot: nothing in the log dates a ballot)",
        ),
        EventKind(
            "refusals_counted",
            {"terminal": IDENTIFIER, "reason": IDENTIFIER, "count": COUNT},
            "how many messages the ledger refused from one terminal for one reason in the last "
            "checkpoint interval (counts, not one entry per message: the log stays bounded)",
        ),
        EventKind(
            "report_signed",
            {"report": REPORT, "position": COUNT, "head_hash": SHA256},
            "the ledger signed its zero or closing report at this chain head",
        ),
        EventKind(
            "check_ins_counted",
            {
                "checked_in": COUNT,
                # One count per refusal reason (protocol.errors.CheckinReason), none folded into another:
                "not_eligible": COUNT,
                "already_voted": COUNT,
                "polls_not_open": COUNT,
                "malformed": COUNT,
                "internal_error": COUNT,
                "bad_challenge": COUNT,
                "bad_card_signature": COUNT,
                "unknown_issuer": COUNT,
                "card_expired": COUNT,
                "card_revoked": COUNT,
                "stale_crl": COUNT,
                "revoked": COUNT,
                "not_a_terminal": COUNT,
                "roll_unreachable": COUNT,
            },
            "the roll's check-ins as totals only (voters marked; refusals by reason since the "
            "service started), so nothing orders a check-in against the ledger's ballots",
        ),
        EventKind("tamper", {"state": OPEN_CLOSED}, "the enclosure's tamper switch changed"),
        EventKind("reader", {"state": UP_DOWN}, "the card reader appeared or went away"),
        EventKind("hub_link", {"state": UP_DOWN}, "the connection to the hub (or central broker) changed"),
        EventKind(
            "self_test",
            {"passed": FLAG, "failed_checks": COUNT},
            "result of booth self-test or the production-mode checks",
        ),
        EventKind(
            "production_refused",
            {"reason": IDENTIFIER},
            "production mode refused to start, with the reason's code",
        ),
    )
}


def check_event(kind: str, data: Mapping[str, Any]) -> None:
    """Refuse an event that is not on the allow-list or carries a field it may not carry."""
    event = EVENT_KINDS.get(kind)
    if event is None:
        raise ForbiddenEvent(f"{kind!r} is not an audit event kind (allowed: {', '.join(sorted(EVENT_KINDS))})")
    if not isinstance(data, Mapping):
        raise ForbiddenEvent(f"{kind}: event data must be an object")
    for field in data:
        if field in IDENTITY_FIELD_NAMES:
            raise ForbiddenEvent(f"{kind}: field {field!r} could identify a voter or a choice; never log it")
        if field not in event.fields:
            raise ForbiddenEvent(f"{kind}: field {field!r} is not allowed (allowed: {sorted(event.fields)})")
    missing = sorted(set(event.fields) - set(data))
    if missing:
        raise ForbiddenEvent(f"{kind}: missing field(s) {missing}")
    for field, shape in event.fields.items():
        shape.check(data[field], f"{kind}.{field}")
