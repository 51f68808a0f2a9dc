"""The ledger's durable store: SQLite in WAL mode with ``synchronous=FULL``.

A batch of accepted ballots is one transaction; when :meth:`LedgerStore.append` returns, the
entries survive a power cut, and only then may the service acknowledge them. The store keeps
no wall-clock time and nothing about check-ins: its only order is the chain's own positions.
Refused ballots are never written.

``meta`` holds the polls state (``pending``, ``open``, ``closing``, ``closed``) and, written in
the same transaction as the final close, the chain position then (``closed_position``) and the
terminals declared unreachable with their device-chain heads (``unreachable``, JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from election.chain import ChainEntry, ChainHead
from infra.errors import SiteError
from infra.store import open_store
from station_hub.ledger import Accepted, LedgerState

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    position INTEGER PRIMARY KEY,
    prev_hash BLOB NOT NULL,
    ballot_hash BLOB NOT NULL UNIQUE,
    ballot_id BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    entry_hash BLOB NOT NULL,
    device_id TEXT NOT NULL,
    device_seq INTEGER NOT NULL,
    token_message BLOB UNIQUE,  -- NULL for a spoiled ballot
    ballot BLOB NOT NULL,
    UNIQUE (device_id, device_seq)
);
"""


class LedgerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_store(path, SCHEMA, SCHEMA_VERSION)

    def load(self, genesis: bytes) -> LedgerState:
        """Read the whole state back, re-checking the chain's links on the way."""
        state = LedgerState(ChainHead(0, genesis), polls=self.polls())
        closed = self._meta("closed_position")
        state.closed_position = None if closed is None else int(closed)
        unreachable = json.loads(self._meta("unreachable") or "{}")
        state.unreachable = {name: (seq, bytes.fromhex(head)) for name, (seq, head) in unreachable.items()}
        for entry, entry_hash, device_id, device_seq, token, ballot_id in self._rows():
            if entry.prev_hash != state.head.entry_hash or entry.entry_hash != entry_hash:
                raise SiteError(f"{self.path}: the chain is broken at position {entry.position}")
            state.record(entry, entry_hash, device_id, device_seq, token, ballot_id)
        return state

    def _rows(self) -> Iterator[tuple[ChainEntry, bytes, str, int, bytes | None, bytes]]:
        query = (
            "SELECT position, prev_hash, ballot_hash, kind, entry_hash, device_id, device_seq,"
            " token_message, ballot_id FROM entries ORDER BY position"
        )
        for position, prev, ballot, kind, entry_hash, device, seq, token, ballot_id in self._db.execute(query):
            yield ChainEntry(position, prev, ballot, kind), entry_hash, device, seq, token, ballot_id

    def append(self, accepted: Sequence[Accepted]) -> None:
        """Write a batch in one durable transaction."""
        rows = [
            (
                a.entry.position,
                a.entry.prev_hash,
                a.entry.ballot_hash,
                a.ballot.ballot_id,
                a.entry.kind,
                a.entry_hash,
                a.ballot.device_id,
                a.ballot.device_seq,
                a.ballot.token.message if a.ballot.token else None,
                a.payload,
            )
            for a in accepted
        ]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def polls(self) -> str:
        return self._meta("polls") or "pending"

    def close_final(self, position: int, unreachable: dict[str, tuple[int, bytes]]) -> None:
        """The final close: state, position and declared-unreachable terminals in one transaction."""
        declared = {name: [seq, head.hex()] for name, (seq, head) in sorted(unreachable.items())}
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("polls", "closed"), ("closed_position", str(position)), ("unreachable", json.dumps(declared))],
            )

    def set_polls(self, state: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('polls', ?)", (state,))

    def ballots(self) -> Iterator[tuple[ChainEntry, bytes]]:
        """Every entry with the payload the terminal sent (a sealed ballot, or for a spoiled entry the
        spoiled-ballot message with its opening), in chain order (for export and sync)."""
        query = "SELECT position, prev_hash, ballot_hash, kind, ballot FROM entries ORDER BY position"
        for position, prev, ballot_hash, kind, ballot in self._db.execute(query):
            yield ChainEntry(position, prev, ballot_hash, kind), ballot

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close (the files are then quiescent)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
