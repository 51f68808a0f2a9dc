"""The station roll's store (and its decision, from infra/rollcore.py): who may vote, who has,
and nothing about when. The decision (RollCore, Challenges) lives in infra/ because the
municipal roll at the central office (gateway/municipal_roll.py) makes the same one.

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

from collections.abc import Iterable
from pathlib import Path

from infra.errors import SiteError
from infra.rollcore import (  # the decision lives in infra/ (shared with the municipal roll)
    CHALLENGE_TTL,
    MAX_OPEN_CHALLENGES,
    VOTER_KEYS_FORMAT,
    Challenges,
    RollCore,
    RollDecision,
    read_voter_keys,
)
from infra.store import open_store

__all__ = [
    "CHALLENGE_TTL",
    "MAX_OPEN_CHALLENGES",
    "ROLL_SCHEMA",
    "ROLL_SCHEMA_VERSION",
    "VOTER_KEYS_FORMAT",
    "Challenges",
    "RollCore",
    "RollDecision",
    "RollStore",
    "read_voter_keys",
]

ROLL_SCHEMA_VERSION = 1
ROLL_SCHEMA = """
CREATE TABLE IF NOT EXISTS voters (voter_key BLOB PRIMARY KEY, blinded BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class RollStore:
    def __init__(self, path: Path, modulus_length: int) -> None:
        self.path = path
        self.empty = bytes(modulus_length)
        self.elsewhere = b"\xff" * modulus_length
        """The row of a voter who voted early at the municipal roll (never a blinded value: ≥ n)."""
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

    def mark_voted_elsewhere(self, keys: Iterable[bytes]) -> int:
        """Before the polls open: mark the voters the municipal roll says voted early (signed early
        marks, station_hub/municipal_marks.py); keys not on this segment are ignored. Returns how
        many of this roll's voters are now marked so."""
        if self.polls() != "pending":
            raise SiteError("early marks can only be imported before the polls open")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE voters SET blinded = ? WHERE voter_key = ? AND blinded = ?",
                ((self.elsewhere, key, self.empty) for key in sorted(keys)),
            )
        return self.voted_elsewhere()

    def marked_keys(self) -> list[bytes]:
        """The voter keys checked in at this station, sorted (its marks, for the municipal roll)."""
        query = "SELECT voter_key FROM voters WHERE blinded != ? AND blinded != ? ORDER BY voter_key"
        return [row[0] for row in self._db.execute(query, (self.empty, self.elsewhere))]

    def voted_elsewhere(self) -> int:
        return self._db.execute("SELECT count(*) FROM voters WHERE blinded = ?", (self.elsewhere,)).fetchone()[0]

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
        """Voters checked in at this station (not those who voted early elsewhere)."""
        query = "SELECT count(*) FROM voters WHERE blinded != ? AND blinded != ?"
        return self._db.execute(query, (self.empty, self.elsewhere)).fetchone()[0]

    def polls(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'polls'").fetchone()
        return row[0] if row else "pending"

    def set_polls(self, state: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('polls', ?)", (state,))

    def close(self) -> None:
        self._db.close()
