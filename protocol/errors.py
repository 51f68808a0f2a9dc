"""Why a message is refused: one error root for what arrives, with its reason as an enum.

Every decoder in :mod:`protocol` raises only :class:`Refusal` (a :class:`FormatError`, so a
caller that handles the election core's format errors handles these too).
"""

from __future__ import annotations

from enum import StrEnum

from election.errors import FormatError


class Reason(StrEnum):
    """Why the ledger refused a message on a ballot topic (the ``reason`` of a refusal ack)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    WRONG_ELECTION = "wrong_election"
    POLLS_NOT_OPEN = "polls_not_open"
    DEVICE_MISMATCH = "device_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    BAD_SIGNATURE = "bad_signature"
    BAD_STATEMENT = "bad_statement"
    """The device statement the submission carries does not verify under the device's key, or
    contradicts the statement of the same count the ledger holds (docs/design-record-v2.md §3)."""
    DUPLICATE_BALLOT_ID = "duplicate_ballot_id"
    NO_TOKEN = "no_token"
    BAD_TOKEN = "bad_token"
    TOKEN_USED = "token_used"
    TOKEN_ON_SPOILED = "token_on_spoiled"
    BAD_PROOF = "bad_proof"
    BAD_OPENING = "bad_opening"
    TOO_MANY_SPOILED = "too_many_spoiled"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"


class CheckinReason(StrEnum):
    """Why the roll refused a check-in (the ``reason`` of a refused check-in reply)."""

    NOT_ELIGIBLE = "not_eligible"
    ALREADY_VOTED = "already_voted"
    POLLS_NOT_OPEN = "polls_not_open"
    MALFORMED = "malformed"
    INTERNAL_ERROR = "internal_error"
    BAD_CHALLENGE = "bad_challenge"
    """The challenge is unknown, already used, expired, or was issued to another terminal."""
    BAD_CARD_SIGNATURE = "bad_card_signature"
    """The card's signature does not verify over this check-in's binding."""
    UNKNOWN_ISSUER = "unknown_issuer"
    """The card certificate does not chain to a JPKI CA the roll trusts."""
    CARD_EXPIRED = "card_expired"
    CARD_REVOKED = "card_revoked"
    STALE_CRL = "stale_crl"
    """The roll's CRL for the card's CA is past its next update (or missing): no card passes."""
    REVOKED = "revoked"
    """The terminal's own station certificate is revoked."""
    NOT_A_TERMINAL = "not_a_terminal"
    """The sender holds no valid terminal-role certificate of this station."""
    ROLL_UNREACHABLE = "roll_unreachable"
    """An early-voting or common station cannot reach the municipal roll (or it did not answer
    in time): nobody is checked in there until it can (protocol/municipal.py)."""


class PollsReason(StrEnum):
    """Why the ledger (or the roll) refused a polls command (the ``reason`` of a polls result).

    A refused command changes nothing; the ledger logs it once and answers on its polls result
    topic at once, so the console prints the reason (docs/ledger.md, "Polls command").
    """

    MALFORMED = "malformed"
    WRONG_STATION = "wrong_station"
    WRONG_ELECTION = "wrong_election"
    STALE_NONCE = "stale_nonce"
    """The command does not carry the ledger's current challenge (an old or replayed command)."""
    EXPIRED = "expired"
    """The challenge the command answers is older than its lifetime."""
    OFFICIALS_MISSING = "officials_missing"
    """Not exactly one station manager's and one witness's signature."""
    SAME_OFFICIAL = "same_official"
    """Both signatures come from one card, or from two cards of one official."""
    WRONG_ROLE = "wrong_role"
    """A card certificate is not for the function it signed as (or not an official's card)."""
    UNKNOWN_OFFICIAL = "unknown_official"
    """A card certificate is not issued by this station's CA (or unreadable)."""
    OFFICIAL_REVOKED = "official_revoked"
    OFFICIAL_EXPIRED = "official_expired"
    BAD_OFFICIAL_SIGNATURE = "bad_official_signature"
    TRAINING_CARD = "training_card"
    """A training card, on a station that has real officials' cards enrolled."""
    POLLS_STATE = "polls_state"
    """The polls are in a state that does not allow this command (re-opening after close)."""
    UNKNOWN_TERMINAL = "unknown_terminal"
    """The final close declares a terminal this station does not have."""
    INTERNAL_ERROR = "internal_error"


class Refusal(FormatError):
    """A message that is not what its topic carries; ``reason`` says which rule it broke."""

    def __init__(self, reason: Reason | CheckinReason | PollsReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
