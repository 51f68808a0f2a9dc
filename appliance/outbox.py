"""The terminal's durable outbox: sealed ballots stay here until the hub's ledger acknowledges them.

One SQLite file (WAL, ``synchronous=FULL``) holds three things that must change together:

- ``outbox``: every sealed ballot (cast or spoiled) not yet acknowledged, in device order;
- ``device_chain``: the device's last sequence number and ballot hash — advanced in the same
  transaction that inserts the ballot, so a crash can never leave a gap or a fork in the
  device chain;
- ``checkins``: a check-in request (blinded token) written *before* it is sent, so a voter whose
  session was interrupted gets the identical request — and the roll's identical grant — on the
  next try; deleted in the transaction that casts the ballot (``secure_delete`` overwrites it).

A ballot is removed only when the ledger's acknowledgement names it (``ballot_hash`` of the
sealed ballot, position, entry hash); the broker's PUBACK means nothing here.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from election.ballot import GENESIS_HASH, SealedBallot
from election.encoding import sha256

SCHEMA = """
CREATE TABLE IF NOT EXISTS device_chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    device_seq INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,
    ballots_cast INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    device_seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('cast', 'spoiled')),
    ballot_hash BLOB NOT NULL UNIQUE,
    payload_hash BLOB NOT NULL,
    payload BLOB NOT NULL,
    refused TEXT
);
CREATE TABLE IF NOT EXISTS checkins (
    voter_key TEXT PRIMARY KEY,
    message BLOB NOT NULL,
    blinded BLOB NOT NULL,
    inverse BLOB NOT NULL
) WITHOUT ROWID;
"""


class OutboxError(Exception):
    """The outbox cannot take this ballot (it does not continue the device chain)."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    device_seq: int
    kind: str
    ballot_hash: bytes
    payload_hash: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckin:
    message: bytes
    blinded: bytes
    inverse: bytes


class Outbox:
    """Thread-safe: the booth's worker adds, the MQTT thread acknowledges."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO device_chain VALUES (1, 0, ?, 0)", (GENESIS_HASH,))

    # --- device chain -------------------------------------------------------------------

    def chain_head(self) -> tuple[int, bytes]:
        """(last device_seq, its ballot hash): the next ballot seals at seq + 1 after this hash."""
        with self._lock:
            seq, prev = self._db.execute("SELECT device_seq, prev_hash FROM device_chain").fetchone()
        return seq, prev

    def ballots_cast(self) -> int:
        with self._lock:
            return self._db.execute("SELECT ballots_cast FROM device_chain").fetchone()[0]

    # --- ballots --------------------------------------------------------------------------

    def add(self, kind: str, ballot: SealedBallot, payload: bytes, *, voter_key: str | None = None) -> OutboxItem:
        """Commit one sealed ballot and advance the device chain (one durable transaction).

        ``voter_key``: the cast ballot's voter, whose stored check-in is deleted with it.
        """
        item = OutboxItem(ballot.device_seq, kind, ballot.ballot_hash, sha256(payload), payload)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq, prev = self._db.execute("SELECT device_seq, prev_hash FROM device_chain").fetchone()
            if ballot.device_seq != seq + 1 or ballot.prev_hash != prev:
                raise OutboxError(f"ballot {ballot.device_seq} does not follow the device chain head {seq}")
            self._db.execute(
                "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, NULL)",
                (item.device_seq, kind, item.ballot_hash, item.payload_hash, payload),
            )
            self._db.execute(
                "UPDATE device_chain SET device_seq = ?, prev_hash = ?, ballots_cast = ballots_cast + ?",
                (ballot.device_seq, item.ballot_hash, int(kind == "cast")),
            )
            if voter_key is not None:
                self._db.execute("DELETE FROM checkins WHERE voter_key = ?", (voter_key,))
        return item

    def unacknowledged(self) -> list[OutboxItem]:
        """Everything still owed to the hub, in device order (the ledger needs that order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_seq, kind, ballot_hash, payload_hash, payload FROM outbox ORDER BY device_seq"
            ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def acknowledge(self, ballot_hash: bytes) -> bool:
        """The ledger holds this ballot: drop it. False if it was not (or no longer) here."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("DELETE FROM outbox WHERE ballot_hash = ?", (ballot_hash,))
        return cursor.rowcount == 1

    def mark_refused(self, payload_hash: bytes, reason: str) -> bool:
        """Record the ledger's refusal; the ballot stays (an operator must look at it)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("UPDATE outbox SET refused = ? WHERE payload_hash = ?", (reason, payload_hash))
        return cursor.rowcount == 1

    def refusals(self) -> dict[int, str]:
        with self._lock:
            rows = self._db.execute("SELECT device_seq, refused FROM outbox WHERE refused IS NOT NULL").fetchall()
        return dict(rows)

    # --- check-in requests ----------------------------------------------------------------

    def stored_checkin(self, voter_key: str) -> StoredCheckin | None:
        with self._lock:
            row = self._db.execute(
                "SELECT message, blinded, inverse FROM checkins WHERE voter_key = ?", (voter_key,)
            ).fetchone()
        return StoredCheckin(*row) if row else None

    def store_checkin(self, voter_key: str, checkin: StoredCheckin) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO checkins VALUES (?, ?, ?, ?)",
                (voter_key, checkin.message, checkin.blinded, checkin.inverse),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
