"""The ledger's durable store: SQLite with a rollback journal, ``secure_delete`` and
``synchronous=EXTRA`` (infra/store.py), and nothing in it that keeps the order ballots came in.

- ``pool``: the ballots held and not yet chained, keyed by ballot hash (``WITHOUT ROWID``: no
  row number counts arrivals), with no position and no time, in a file of its own
  (``ledger-pool.db``, attached, so one transaction spans both files; it also holds
  ``device_statements``, so holding a ballot writes that file alone). The booth is acknowledged
  once a ballot is in it (:meth:`LedgerStore.hold` returned: it survives a power cut).
- ``entries``: the chain. A batch is written in one transaction that also empties the pool
  (:meth:`LedgerStore.commit_batch`); its rows go in position order, which within a batch is
  ballot-hash order.
- ``device_statements`` (in the pool's file): each terminal's statement with the largest
  ``sealed``, keyed by device id, one row per terminal, replaced when a larger one arrives
  (the table, a page, is rewritten in device order: see
  :meth:`LedgerStore._rewrite_statements`); intermediate statements are never kept.
- ``meta``: the polls state (``pending``, ``open``, ``closing``, ``closed``) and, written in the
  same transaction as the batch of the final close, the chain position then
  (``closed_position``) and the terminals declared unreachable with their latest statements'
  counts and commitments (``unreachable``, JSON).

Why not WAL: WAL frames are appended in commit order and keep old page images until a
checkpoint, i.e. the order of arrivals on the medium; a rollback journal is deleted at every
commit, and ``secure_delete`` zeroes what a batch removes from the pool. Zeroing is not enough:
the pages a pool row took were allocated as ballots arrived, and once freed they would sit on
the free list in the order the batch deleted them, pairing arrival order with hash order, and
later rows would reuse them. Hence the pool's own file, rebuilt empty after every batch
(``VACUUM intake``: a few pages, so cheap), while the chain's file only ever grows by whole
batches in position order: the bytes of both depend on what they hold, never on the order it
came in. Between two batches the pool's fewer than ``batch_min`` rows keep their arrival
layout; that is the whole exposure of the files (docs/design-record-v2.md §9). The store keeps
no wall-clock time and nothing about check-ins. Refused ballots are never written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from election.chain import ChainEntry, ChainHead
from election.devices import DeviceStatement
from infra.errors import SiteError
from infra.store import open_store
from station_hub.ledger import BatchEntry, DeviceHead, Held, LedgerState

SCHEMA_VERSION = 3
FORMAT_1_SCHEMA_VERSION = 2
"""The store of record format 1 (a chain of single ballots in arrival order): refused."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    position INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,
    ballot_hash BLOB NOT NULL UNIQUE,
    ballot_id BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    entry_hash BLOB NOT NULL,
    device_id TEXT NOT NULL,
    token_message BLOB UNIQUE,  -- NULL for a spoiled ballot
    ballot BLOB NOT NULL
);
"""
POOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS intake.pool (
    ballot_hash BLOB PRIMARY KEY,
    ballot_id BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    device_id TEXT NOT NULL,
    token_message BLOB UNIQUE,  -- NULL for a spoiled ballot
    ballot BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS intake.device_statements (
    device_id TEXT PRIMARY KEY,
    sealed INTEGER NOT NULL,
    commitment BLOB NOT NULL,
    signature BLOB NOT NULL
) WITHOUT ROWID
"""
ENTRY_COLUMNS = "position, batch, prev_hash, ballot_hash, kind"
_MOVE = (
    "INSERT INTO entries SELECT ?, ?, ?, ballot_hash, ballot_id, kind, ?, device_id, token_message, ballot"
    " FROM intake.pool WHERE ballot_hash = ?"
)


def pool_file(ledger: Path) -> Path:
    """The pool's file beside the ledger's: ``ledger/ledger-pool.db``."""
    return ledger.with_name(f"{ledger.stem}-pool{ledger.suffix}")


def attach_pool(db: sqlite3.Connection, ledger: Path, *, read_only: bool = False) -> None:
    """Attach the pool's file as ``intake``, opened as the ledger's own (rollback journal,
    ``synchronous=EXTRA``, ``secure_delete``), creating its table if new."""
    if read_only:
        db.execute("ATTACH DATABASE ? AS intake", (f"file:{pool_file(ledger)}?mode=ro",))
        return
    db.execute("ATTACH DATABASE ? AS intake", (str(pool_file(ledger)),))
    for pragma in ("journal_mode=DELETE", "synchronous=EXTRA", "secure_delete=ON"):
        db.execute(f"PRAGMA intake.{pragma}")
    for statement in POOL_SCHEMA.split(";"):
        db.execute(statement)


def entry_of(position: int, batch: int, prev_hash: bytes, ballot_hash: bytes, kind: str) -> ChainEntry:
    """A chain entry from the columns :data:`ENTRY_COLUMNS` (the forwarder reads them too)."""
    return ChainEntry(position, batch, bytes(prev_hash), bytes(ballot_hash), kind)


def check_not_format_1(path: Path) -> None:
    """Refuse a ledger written by record format 1 with its reason, not a bare version number."""
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()
    if version == FORMAT_1_SCHEMA_VERSION:
        raise SiteError(
            f"{path}: a ledger of record format 1 (ballots chained in arrival order); this software keeps "
            "record format 2 and does not convert it: archive the file and start the election's ledger anew"
        )


class LedgerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        check_not_format_1(path)
        self._db = open_store(path, SCHEMA, SCHEMA_VERSION, journal="delete", secure_delete=True, synchronous="extra")
        attach_pool(self._db, path)

    def load(self, genesis: bytes, base_hash: bytes) -> LedgerState:
        """Read the whole state back, re-checking the chain's links on the way (``base_hash``:
        the election's, which every statement held was checked against)."""
        state = LedgerState(ChainHead(0, genesis), polls=self.polls())
        closed = self._meta("closed_position")
        state.closed_position = None if closed is None else int(closed)
        unreachable = json.loads(self._meta("unreachable") or "{}")
        state.unreachable = {
            name: DeviceHead(sealed, bytes.fromhex(commitment)) for name, (sealed, commitment) in unreachable.items()
        }
        query = f"SELECT {ENTRY_COLUMNS}, entry_hash, device_id, token_message, ballot_id FROM entries"
        for *columns, entry_hash, device, token, ballot_id in self._db.execute(query + " ORDER BY position"):
            entry = entry_of(*columns)
            if entry.prev_hash != state.head.entry_hash or entry.entry_hash != entry_hash:
                raise SiteError(f"{self.path}: the chain is broken at position {entry.position}")
            state.hold(entry.ballot_hash, entry.kind, device, token, ballot_id)
            state.chained(entry, entry_hash, device)
        for ballot_hash, kind, device, token, ballot_id in self._db.execute(
            "SELECT ballot_hash, kind, device_id, token_message, ballot_id FROM intake.pool"
        ):
            state.hold(ballot_hash, kind, device, token, ballot_id)
        for device, sealed, commitment, signature in self._db.execute("SELECT * FROM intake.device_statements"):
            state.statements[device] = DeviceStatement(device, base_hash, sealed, commitment, signature)
        return state

    def hold(self, held: Sequence[Held]) -> None:
        """Put ballots into the pool, and their devices' newer statements in place of the old
        ones, in one durable transaction (only then may the booths be acknowledged)."""
        self.commit(held)

    def commit(
        self, held: Sequence[Held], batch: Sequence[BatchEntry] = (), meta: dict[str, str] | None = None
    ) -> None:
        """One durable transaction for a round of the service: the ``held`` ballots, their
        devices' newer statements, and — when the round made the pool a batch — the ``batch``
        (and ``meta``). A held ballot that is in the batch goes straight into the chain, never
        through the pool; the pool's earlier ballots move into it. Only after this returns may
        the booths be acknowledged. The pool's file is rebuilt only when pool rows were deleted
        (module docstring)."""
        in_batch = {b.entry.ballot_hash for b in batch}
        fresh = {h.ballot.ballot_hash: h for h in held}
        pooled = [_pool_row(h) for h in held if h.ballot.ballot_hash not in in_batch]
        latest = {h.statement.device_id: h.statement for h in held if h.statement is not None}
        moved = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if pooled:
                self._db.executemany("INSERT INTO intake.pool VALUES (?, ?, ?, ?, ?, ?)", pooled)
            if latest:  # the core offers only ever larger counts
                self._rewrite_statements(latest)
            for b in batch:  # in position order: within a batch, ballot-hash order
                entry = b.entry
                new = fresh.get(entry.ballot_hash)
                if new is not None:
                    row = _pool_row(new)
                    self._db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                     (entry.position, entry.batch, entry.prev_hash, entry.ballot_hash, row[1],
                                      row[2], b.entry_hash, row[3], row[4], row[5]))  # fmt: skip
                    continue
                key = (entry.position, entry.batch, entry.prev_hash, b.entry_hash, entry.ballot_hash)
                if self._db.execute(_MOVE, key).rowcount != 1:
                    raise SiteError(f"{self.path}: ballot {entry.ballot_hash.hex()} of the batch is not in the pool")
                moved.append((entry.ballot_hash,))
            if moved:
                self._db.executemany("DELETE FROM intake.pool WHERE ballot_hash = ?", moved)
            if meta:
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(meta.items()))
        if moved:
            self._db.execute("VACUUM intake")  # see the module docstring: no page keeps the pool's arrival layout

    def _rewrite_statements(self, latest: dict[str, DeviceStatement]) -> None:
        """Replace the terminals' statements by ``latest`` where given, rewriting the small table
        whole in device order: updated row by row, its page would keep the order in which the
        terminals' first ballots arrived; emptied and refilled in order, it keeps none
        (``secure_delete`` zeroes what it frees)."""
        current = {row[0]: row for row in self._db.execute("SELECT * FROM intake.device_statements")}
        for s in latest.values():
            current[s.device_id] = (s.device_id, s.sealed, s.commitment, s.signature)
        self._db.execute("DELETE FROM intake.device_statements")
        self._db.executemany("INSERT INTO intake.device_statements VALUES (?, ?, ?, ?)", sorted(current.values()))

    def commit_batch(self, batch: Sequence[BatchEntry], meta: dict[str, str] | None = None) -> None:
        """Move a batch from the pool into the chain (and set ``meta``) in one transaction."""
        self.commit((), batch, meta)

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def polls(self) -> str:
        return self._meta("polls") or "pending"

    def close_final(self, batch: Sequence[BatchEntry], position: int, unreachable: dict[str, DeviceHead]) -> None:
        """The final close: the pool's last batch, state, position and declared-unreachable
        terminals in one transaction."""
        declared = {name: [head.sealed, head.commitment.hex()] for name, head in sorted(unreachable.items())}
        meta = {"polls": "closed", "closed_position": str(position), "unreachable": json.dumps(declared)}
        self.commit_batch(batch, meta)

    def set_polls(self, state: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('polls', ?)", (state,))

    def ballots(self) -> Iterator[tuple[ChainEntry, bytes]]:
        """Every chained entry with what the store kept of its ballot (the sealed ballot, or for a
        spoiled entry ``{"ballot", "opening"}``), in chain order (for export and sync)."""
        for *columns, ballot in self._db.execute(f"SELECT {ENTRY_COLUMNS}, ballot FROM entries ORDER BY position"):
            yield entry_of(*columns), ballot

    def close(self) -> None:
        self._db.close()


def _pool_row(held: Held) -> tuple[bytes, bytes, str, str, bytes | None, bytes]:
    """(ballot_hash, ballot_id, kind, device_id, token_message, ballot): a pool row's columns."""
    ballot = held.ballot
    return (ballot.ballot_hash, ballot.ballot_id, held.kind, ballot.device_id,
            ballot.token.message if ballot.token else None, held.stored)  # fmt: skip
