"""The roll service's logic and store: who may vote, who has, and nothing about when.

A check-in carries the voter key (derived by the card module) and the terminal's blinded
token. The roll refuses an unknown key (``not_eligible``) or one already used with another
blinded token (``already_voted``); otherwise it marks the voter and blind-signs (RFC 9474).
An identical retry gets the identical answer (RSA signing is deterministic) and marks nothing.

What is stored — one row per eligible voter, keyed by the voter key in a ``WITHOUT ROWID``
table, all rows the same size from import on: the blinded token the voter's check-in carried,
or zeros. Marking a voter overwrites that fixed-size value in place, so neither rowids nor
the placement of rows in the file record the order of check-ins; the rollback journal is
deleted after each commit and ``secure_delete`` zeroes freed space. No timestamps, and no
record of which terminal a voter used.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from election import tokens
from election.encoding import hex_bytes, parse_json
from election.errors import FormatError
from infra.errors import SiteError
from protocol.errors import CheckinReason
from protocol.messages import CheckinGranted, CheckinRefused, CheckinReply, CheckinRequest

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


class RollCore:
    def __init__(self, token_key: rsa.RSAPrivateKey) -> None:
        self.token_key = token_key
        self.modulus_length = (token_key.key_size + 7) // 8

    def decide(self, request: CheckinRequest, polls: str, stored: bytes | None) -> RollDecision:
        """``stored``: the voter's row (None = not on the roll, zeros = not yet checked in)."""
        if stored is not None and stored == request.blinded:
            return RollDecision(CheckinGranted(tokens.blind_sign(self.token_key, request.blinded)), False)
        if polls != "open":
            return RollDecision(CheckinRefused(CheckinReason.POLLS_NOT_OPEN, f"the polls are {polls}"), False)
        if stored is None:
            return RollDecision(CheckinRefused(CheckinReason.NOT_ELIGIBLE, "this card is not on the roll"), False)
        if any(stored):
            return RollDecision(CheckinRefused(CheckinReason.ALREADY_VOTED, "this voter has already voted"), False)
        try:
            signature = tokens.blind_sign(self.token_key, request.blinded)
        except tokens.TokenError as error:
            return RollDecision(CheckinRefused(CheckinReason.MALFORMED, str(error)), False)
        return RollDecision(CheckinGranted(signature), True)


class RollStore:
    def __init__(self, path: Path, modulus_length: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.empty = bytes(modulus_length)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS voters (voter_key BLOB PRIMARY KEY, blinded BLOB NOT NULL)"
            " WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
            " WITHOUT ROWID;"
        )

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
