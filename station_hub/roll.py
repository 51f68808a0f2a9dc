"""The roll service's logic and store: who may vote, who has, and nothing about when.

A check-in is card-proven (docs/card-protocol.md §5): the terminal first gets a fresh,
single-use challenge that expires (bound to that terminal); the card then signs
``checkin_binding(station, terminal, challenge, blinded)``, and the roll checks the card's
certificate against the JPKI CAs and a fresh CRL, the validity dates and the signature, and
derives the voter key itself with the roll salt, which no terminal holds. Only then does it
look the voter up: it refuses an unknown key (``not_eligible``) or one already used with
another blinded token (``already_voted``); otherwise it marks the voter and blind-signs
(RFC 9474). A retry with the same blinded token (and a new challenge) gets the identical
answer (RSA signing is deterministic) and marks nothing. The certificate and the signature
are used in memory and dropped: never stored, never logged.

What is stored — one row per eligible voter, keyed by the voter key in a ``WITHOUT ROWID``
table, all rows the same size from import on: the blinded token the voter's check-in carried,
or zeros. Marking a voter overwrites that fixed-size value in place, so neither rowids nor
the placement of rows in the file record the order of check-ins; the rollback journal is
deleted after each commit and ``secure_delete`` zeroes freed space. No timestamps, and no
record of which terminal a voter used.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from election import tokens
from election.encoding import hex_bytes, parse_json
from election.errors import FormatError
from infra.errors import SiteError
from infra.jpki import CardRefused, JpkiVerifier
from infra.store import open_store
from protocol.errors import CheckinReason
from protocol.messages import (
    CHALLENGE_BYTES,
    CheckinChallenge,
    CheckinGranted,
    CheckinRefused,
    CheckinReply,
    CheckinRequest,
    checkin_binding,
)

CHALLENGE_TTL = 60.0
"""Seconds a challenge stays valid (a card signature takes up to ~5 s; the voter types first)."""
MAX_OPEN_CHALLENGES = 8
"""Outstanding challenges per terminal; asking for more drops that terminal's oldest."""

VOTER_KEYS_FORMAT = "polling-station/voter-keys/v1"
"""The card module's export (``appliance/card/testca.py``): ``{"format", "mode", "voter_keys"}``."""


def read_voter_keys(data: bytes) -> list[bytes]:
    """Parse a voter-key file: 32-byte lowercase hex keys, no duplicates."""
    try:
        document = parse_json(data, max_size=200_000_000)
        if not isinstance(document, dict) or document.get("format") != VOTER_KEYS_FORMAT:
            raise FormatError(f"voter keys: expected an object with format {VOTER_KEYS_FORMAT!r}")
        keys = document.get("voter_keys")
        if not isinstance(keys, list):
            raise FormatError("voter keys: voter_keys must be a list")
        parsed = [hex_bytes(key, 32, f"voter_keys[{i}]") for i, key in enumerate(keys)]
    except FormatError as error:
        raise SiteError(str(error)) from error
    if len(set(parsed)) != len(parsed):
        raise SiteError("voter keys: the list repeats a key")
    return parsed


@dataclass(frozen=True, slots=True)
class RollDecision:
    reply: CheckinReply
    mark: bool
    """Whether the voter must be marked (durably) before the reply is sent."""
    voter_key: bytes | None = None
    """The voter key the roll derived from the card (only when the card was proven)."""


def _refused(reason: CheckinReason, detail: str) -> RollDecision:
    return RollDecision(CheckinRefused(reason, detail), False)


class Challenges:
    """Fresh challenges, each usable once, by one terminal, within ``ttl`` seconds."""

    def __init__(self, ttl: float = CHALLENGE_TTL, clock: Callable[[], float] = time.monotonic,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:  # fmt: skip
        self.ttl = ttl
        self._clock = clock
        self._random = random_bytes
        self._open: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, terminal: str) -> bytes:
        now = self._clock()
        challenge = self._random(CHALLENGE_BYTES)
        with self._lock:
            self._open = {c: (t, until) for c, (t, until) in self._open.items() if until > now}
            mine = [c for c, (t, _until) in self._open.items() if t == terminal]
            for stale in mine[: max(0, len(mine) - MAX_OPEN_CHALLENGES + 1)]:
                del self._open[stale]
            self._open[challenge] = (terminal, now + self.ttl)
        return challenge

    def redeem(self, terminal: str, challenge: bytes) -> str | None:
        """Spend the challenge; None if it was good, else why not (it is gone either way)."""
        with self._lock:
            entry = self._open.pop(challenge, None)
        if entry is None:
            return "this challenge is unknown or was already used"
        if entry[0] != terminal:
            return "this challenge was issued to another terminal"
        if entry[1] <= self._clock():
            return "this challenge has expired"
        return None

    def __len__(self) -> int:
        return len(self._open)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RollCore:
    """Sans-I/O: challenges out, check-ins judged. ``verifier`` is asked anew for each check-in
    (the service re-reads the JPKI directory when a CRL is replaced)."""

    def __init__(
        self,
        token_key: rsa.RSAPrivateKey,
        *,
        station_id: str,
        roll_salt: bytes,
        verifier: Callable[[], JpkiVerifier],
        challenges: Challenges | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.token_key = token_key
        self.modulus_length = (token_key.key_size + 7) // 8
        self.station_id = station_id
        self._salt = roll_salt
        self._verifier = verifier
        self.challenges = challenges or Challenges()
        self._clock = clock

    def challenge(self, terminal: str) -> CheckinChallenge:
        return CheckinChallenge(self.challenges.issue(terminal), int(self.challenges.ttl))

    def prove(self, terminal: str, request: CheckinRequest) -> bytes | RollDecision:
        """The voter key of the card behind ``request``, or the refusal (the challenge is spent)."""
        problem = self.challenges.redeem(terminal, request.challenge)
        if problem is not None:
            return _refused(CheckinReason.BAD_CHALLENGE, problem)
        binding = checkin_binding(self.station_id, terminal, request.challenge, request.blinded)
        try:
            verifier = self._verifier()
        except (OSError, ValueError) as error:
            return _refused(CheckinReason.STALE_CRL, f"the roll has no usable JPKI trust: {error}")
        try:
            voter_key = verifier.voter_key(request.certificate, binding, request.signature, self._salt, self._clock())
        except CardRefused as refusal:
            return _refused(CheckinReason(refusal.reason), refusal.detail)
        return bytes.fromhex(voter_key)

    def decide(
        self, terminal: str, request: CheckinRequest, polls: str, lookup: Callable[[bytes], bytes | None]
    ) -> RollDecision:
        """``lookup(voter_key)``: the voter's row (None = not on the roll, zeros = not yet checked in)."""
        proven = self.prove(terminal, request)
        if isinstance(proven, RollDecision):
            return proven
        stored = lookup(proven)
        if stored is not None and stored == request.blinded:
            return RollDecision(CheckinGranted(tokens.blind_sign(self.token_key, request.blinded)), False, proven)
        if polls != "open":
            return _refused(CheckinReason.POLLS_NOT_OPEN, f"the polls are {polls}")
        if stored is None:
            return _refused(CheckinReason.NOT_ELIGIBLE, "this card is not on the roll")
        if any(stored):
            return _refused(CheckinReason.ALREADY_VOTED, "this voter has already voted")
        try:
            signature = tokens.blind_sign(self.token_key, request.blinded)
        except tokens.TokenError as error:
            return _refused(CheckinReason.MALFORMED, str(error))
        return RollDecision(CheckinGranted(signature), True, proven)


ROLL_SCHEMA_VERSION = 1
ROLL_SCHEMA = """
CREATE TABLE IF NOT EXISTS voters (voter_key BLOB PRIMARY KEY, blinded BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class RollStore:
    def __init__(self, path: Path, modulus_length: int) -> None:
        self.path = path
        self.empty = bytes(modulus_length)
        # Rollback journal + secure_delete: no WAL frame keeps an older version of a row.
        self._db = open_store(path, ROLL_SCHEMA, ROLL_SCHEMA_VERSION, journal="delete", secure_delete=True)

    def import_voters(self, keys: Iterable[bytes]) -> int:
        """Add voters (before the polls open); returns how many were new."""
        if self.polls() != "pending":
            raise SiteError("voters can only be imported before the polls open")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            before = self.eligible()
            self._db.executemany(
                "INSERT OR IGNORE INTO voters VALUES (?, ?)",
                ((key, self.empty) for key in sorted(keys)),
            )
            return self.eligible() - before

    def lookup(self, voter_key: bytes) -> bytes | None:
        row = self._db.execute("SELECT blinded FROM voters WHERE voter_key = ?", (voter_key,))
        found = row.fetchone()
        return found[0] if found else None

    def mark(self, voter_key: bytes, blinded: bytes) -> None:
        if len(blinded) != len(self.empty):
            raise SiteError("a blinded token has the wrong size for this roll")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE voters SET blinded = ? WHERE voter_key = ? AND blinded = ?",
                (blinded, voter_key, self.empty),
            )

    def eligible(self) -> int:
        return self._db.execute("SELECT count(*) FROM voters").fetchone()[0]

    def checked_in(self) -> int:
        query = "SELECT count(*) FROM voters WHERE blinded != ?"
        return self._db.execute(query, (self.empty,)).fetchone()[0]

    def polls(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'polls'").fetchone()
        return row[0] if row else "pending"

    def set_polls(self, state: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('polls', ?)", (state,))

    def close(self) -> None:
        self._db.close()
