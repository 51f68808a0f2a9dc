"""The central store: SQLite by default, PostgreSQL (psycopg) for real deployments, one interface.

Every batch is one transaction: read the station's snapshot, let the pure
:class:`~gateway.checker.StationJudge` decide, write the accepted entries, device heads,
statements and incidents, commit — and only then may the worker confirm to the hub. The
stateful phase is serialised across all workers and stations (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a transaction-scoped advisory lock), so a token spent at two stations at the same
moment is still seen twice; the expensive checks (proofs, signatures) run before it, in
parallel. Schema and meaning of each column: ``docs/gateway.md``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.chain import ChainEntry, ChainHead, genesis_hash
from election.encoding import canonical_bytes, parse_json
from election.stations import StationKeys, normalise_tracking_code
from gateway.checker import (
    Applied,
    Incident,
    Prevalidated,
    Statement,
    StationJudge,
    StationProfile,
    StationSnapshot,
    snapshot_positions,
)
from gateway.errors import GatewayError
from protocol.forwarding import ClosingSeen

SCHEMA = """
CREATE TABLE IF NOT EXISTS stations (
    station_id TEXT PRIMARY KEY,
    keys TEXT NOT NULL,
    head_position BIGINT NOT NULL,
    head_hash BLOB NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    public_key BLOB NOT NULL,
    last_seq BIGINT NOT NULL,
    last_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    station_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    prev_hash BLOB NOT NULL,
    ballot_hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    entry_hash BLOB NOT NULL,
    tracking_code TEXT NOT NULL,
    ballot_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    token BLOB,
    ballot BLOB NOT NULL,
    opening BLOB,
    PRIMARY KEY (station_id, position)
);
CREATE INDEX IF NOT EXISTS entries_ballot ON entries (ballot_hash);
CREATE INDEX IF NOT EXISTS entries_token ON entries (token);
CREATE INDEX IF NOT EXISTS entries_ballot_id ON entries (ballot_id);
CREATE INDEX IF NOT EXISTS entries_tracking ON entries (tracking_code);
CREATE TABLE IF NOT EXISTS statements (
    digest BLOB PRIMARY KEY,
    station_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    position BIGINT NOT NULL,
    head_hash BLOB NOT NULL,
    check_ins BIGINT,
    ballots BIGINT,
    status TEXT NOT NULL,
    document BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    digest BLOB PRIMARY KEY,
    station_id TEXT NOT NULL,
    position BIGINT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    evidence BLOB NOT NULL,
    resolved INTEGER NOT NULL,
    noted_at BIGINT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StationState:
    station_id: str
    head: ChainHead
    state: str
    checkpoint: int | None
    closing: ClosingSeen | None
    complete: bool
    """The centre holds the chain up to the closing report, and a verified checkpoint at that head."""


@dataclass(frozen=True, slots=True)
class StoredIncident:
    station_id: str
    position: int | None
    kind: str
    detail: str
    resolved: bool

    def describe(self) -> str:
        return Incident(self.station_id, self.position, self.kind, self.detail).describe() + (
            " (resolved)" if self.resolved else ""
        )


@dataclass(frozen=True, slots=True)
class StoredEntry:
    station_id: str
    ballot_id: str
    entry: ChainEntry
    ballot: bytes
    opening: bytes | None


class Store:
    """One connection to the central database; one per worker process (not shared by threads)."""

    def __init__(self, url_or_path: str | Path, base_hash: bytes) -> None:
        self.base_hash = base_hash
        target = str(url_or_path)
        self.postgres = target.startswith(("postgresql://", "postgres://"))
        if self.postgres:
            import psycopg

            self._db: Any = psycopg.connect(target, autocommit=True)
            self._script(SCHEMA.replace("BLOB", "BYTEA"))
        else:
            path = Path(target.removeprefix("sqlite:///") if target.startswith("sqlite:") else target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._script(SCHEMA)

    # --- SQL plumbing --------------------------------------------------------------------

    def _script(self, script: str) -> None:
        for statement in filter(str.strip, script.split(";")):
            self._db.execute(statement)

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s") if self.postgres else query

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._db.execute(self._sql(query), params).fetchall()]

    def _run(self, query: str, params: Sequence[Any] = ()) -> None:
        self._db.execute(self._sql(query), params)

    def _many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.postgres:
            with self._db.cursor() as cursor:
                cursor.executemany(self._sql(query), rows)
        else:
            self._db.executemany(query, rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One serialised, durable transaction (see the module docstring)."""
        if self.postgres:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(5150)")
                yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _where_in(self, query: str, values: Sequence[Any], before: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``query`` ends with a column; rows where it is one of ``values`` (none if empty)."""
        if not values:
            return []
        return self._rows(f"{query} IN ({','.join('?' * len(values))})", (*before, *values))

    # --- stations ------------------------------------------------------------------------

    def register_station(self, keys: StationKeys, devices: dict[str, Ed25519PublicKey]) -> list[str]:
        """Add a station (or new terminals of it); returns the device ids added.

        A station's keys never change once registered, and a device id belongs to one
        station only (the record's device list is election-wide).
        """
        document = canonical_bytes(keys.to_json()).decode()
        added = []
        with self._transaction():
            rows = self._rows("SELECT keys FROM stations WHERE station_id = ?", (keys.station_id,))
            if rows and rows[0][0] != document:
                raise GatewayError(f"station {keys.station_id} is registered with other keys")
            if not rows:
                genesis = genesis_hash(self.base_hash, keys.station_id)
                self._run("INSERT INTO stations VALUES (?, ?, 0, ?, 'ok')", (keys.station_id, document, genesis))
            for device_id, key in sorted(devices.items()):
                raw = key.public_bytes_raw()
                known = self._rows("SELECT station_id, public_key FROM devices WHERE device_id = ?", (device_id,))
                if known and (known[0][0] != keys.station_id or bytes(known[0][1]) != raw):
                    raise GatewayError(f"device {device_id} is already registered for station {known[0][0]}")
                if not known:
                    self._run(
                        "INSERT INTO devices VALUES (?, ?, ?, 0, ?)", (device_id, keys.station_id, raw, bytes(32))
                    )
                    added.append(device_id)
        return added

    def profiles(self) -> dict[str, StationProfile]:
        devices: dict[str, dict[str, Ed25519PublicKey]] = {}
        for device_id, station_id, raw in self._rows("SELECT device_id, station_id, public_key FROM devices"):
            devices.setdefault(station_id, {})[device_id] = Ed25519PublicKey.from_public_bytes(bytes(raw))
        return {
            station_id: StationProfile(StationKeys.from_json(parse_json(keys)), devices.get(station_id, {}))
            for station_id, keys in self._rows("SELECT station_id, keys FROM stations ORDER BY station_id")
        }

    def device_keys(self) -> dict[str, bytes]:
        return {d: bytes(k) for d, k in self._rows("SELECT device_id, public_key FROM devices ORDER BY device_id")}

    # --- ingest --------------------------------------------------------------------------

    def ingest(self, station_id: str, checked: Prevalidated) -> Applied:
        """Phase 2 and the commit. When this returns, everything decided is durable."""
        judge = StationJudge(station_id, genesis_hash(self.base_hash, station_id))
        with self._transaction():
            rows = self._rows(
                "SELECT head_position, head_hash, state FROM stations WHERE station_id = ?", (station_id,)
            )
            if not rows:
                raise GatewayError(f"station {station_id} is not registered")
            head = ChainHead(rows[0][0], bytes(rows[0][1]))
            pending = self._statements(station_id, "pending")
            positions = sorted(snapshot_positions(head, checked, pending))
            known = self._where_in(
                "SELECT position, entry_hash FROM entries WHERE station_id = ? AND position", positions, (station_id,)
            )
            devices = sorted({e.ballot.device_id for e in checked.entries})
            tokens = [e.ballot.token.message for e in checked.entries if e.ballot.token is not None]
            ballots = [e.entry.ballot_hash for e in checked.entries]
            snapshot = StationSnapshot(
                head,
                rows[0][2],
                {p: bytes(h) for p, h in known},
                {
                    d: (seq, bytes(h))
                    for d, seq, h in self._where_in(
                        "SELECT device_id, last_seq, last_hash FROM devices WHERE device_id", devices
                    )
                },
                self._owners("token", tokens),
                self._owners("ballot_hash", ballots),
                pending,
                {
                    bytes.fromhex(ballot_id): where
                    for ballot_id, where in self._text_owners(
                        "ballot_id", sorted({e.ballot.ballot_id.hex() for e in checked.entries})
                    ).items()
                },
            )
            applied = judge.apply(snapshot, checked)
            self._write(station_id, applied, checked)
        return applied

    def _owners(self, column: str, values: list[bytes]) -> dict[bytes, str]:
        rows = self._where_in(f"SELECT {column}, station_id, position FROM entries WHERE {column}", values)
        return {bytes(value): f"station {station} position {position}" for value, station, position in rows}

    def _text_owners(self, column: str, values: list[str]) -> dict[str, str]:
        rows = self._where_in(f"SELECT {column}, station_id, position FROM entries WHERE {column}", values)
        return {value: f"station {station} position {position}" for value, station, position in rows}

    def _write(self, station_id: str, applied: Applied, checked: Prevalidated) -> None:
        self._many(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    station_id,
                    e.entry.position,
                    e.entry.prev_hash,
                    e.entry.ballot_hash,
                    e.entry.kind,
                    e.entry_hash,
                    e.tracking_code,
                    e.ballot.ballot_id.hex(),
                    e.ballot.device_id,
                    e.ballot.token.message if e.ballot.token else None,
                    e.ballot_bytes,
                    e.opening_bytes,
                )
                for e in applied.entries
            ],
        )
        self._many(
            "UPDATE devices SET last_seq = ?, last_hash = ? WHERE device_id = ?",
            [(seq, last, device) for device, (seq, last) in applied.device_heads.items()],
        )
        self._run(
            "UPDATE stations SET head_position = ?, head_hash = ?, state = ? WHERE station_id = ?",
            (applied.head.position, applied.head.entry_hash, applied.state, station_id),
        )
        statement_rows = [
            *((s, "verified") for s in applied.verified),
            *((s, "pending") for s in applied.pending),
            *((s, "mismatch") for s in applied.mismatched),
        ]
        self._many(
            "INSERT INTO statements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET status = "
            "CASE WHEN statements.status = 'pending' THEN excluded.status ELSE statements.status END",
            [
                (
                    s.digest,
                    station_id,
                    s.kind,
                    s.head.position,
                    s.head.entry_hash,
                    s.check_ins,
                    s.ballots,
                    status,
                    s.document,
                )
                for s, status in statement_rows
            ],
        )
        self._add_incidents([*checked.incidents, *applied.incidents])
        self._run(
            "UPDATE incidents SET resolved = 1 WHERE station_id = ? AND kind = 'gap' AND position < ?",
            (station_id, applied.resolved_gaps_below),
        )
        self._run(
            "UPDATE incidents SET resolved = 1 WHERE station_id = ? AND kind = 'count_mismatch' AND position < ?",
            (station_id, applied.resolved_mismatches_below),
        )

    def _add_incidents(self, incidents: Sequence[Incident]) -> None:
        now = time.time_ns() // 1000
        self._many(
            "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (digest) DO NOTHING",
            [(i.digest, i.station_id, i.position, i.kind, i.detail, i.evidence, now) for i in incidents],
        )

    def add_incidents(self, incidents: Sequence[Incident]) -> None:
        """Record problems found outside a batch (unknown station, malformed message)."""
        with self._transaction():
            self._add_incidents(incidents)

    def _statements(self, station_id: str, status: str) -> list[Statement]:
        rows = self._rows(
            "SELECT kind, position, head_hash, document, check_ins, ballots FROM statements "
            "WHERE station_id = ? AND status = ? ORDER BY position",
            (station_id, status),
        )
        return [Statement(k, ChainHead(p, bytes(h)), bytes(d), c, b) for k, p, h, d, c, b in rows]

    # --- queries -------------------------------------------------------------------------

    def station_state(self, station_id: str) -> StationState | None:
        rows = self._rows("SELECT head_position, head_hash, state FROM stations WHERE station_id = ?", (station_id,))
        if not rows:
            return None
        head = ChainHead(rows[0][0], bytes(rows[0][1]))
        checkpoints = self._rows(
            "SELECT MAX(position) FROM statements WHERE station_id = ? AND kind = 'checkpoint'", (station_id,)
        )
        closings = self._rows(
            "SELECT position, check_ins, status FROM statements WHERE station_id = ? AND kind = 'closing_report' "
            "ORDER BY position DESC, check_ins IS NULL, status = 'verified' DESC",
            (station_id,),
        )
        closing = ClosingSeen(closings[0][0], closings[0][1]) if closings else None
        verified_at_head = self._rows(
            "SELECT kind FROM statements WHERE station_id = ? AND status = 'verified' AND position = ?",
            (station_id, head.position),
        )
        kinds = {k for (k,) in verified_at_head}
        complete = (
            closing is not None
            and closings[0][2] == "verified"
            and closing.position == head.position
            and {"checkpoint", "closing_report"} <= kinds
            and rows[0][2] == "ok"
        )
        return StationState(station_id, head, rows[0][2], checkpoints[0][0], closing, complete)

    def station_ids(self) -> list[str]:
        return [s for (s,) in self._rows("SELECT station_id FROM stations ORDER BY station_id")]

    def incidents(self, *, open_only: bool = False) -> list[StoredIncident]:
        query = "SELECT station_id, position, kind, detail, resolved FROM incidents"
        if open_only:
            query += " WHERE resolved = 0"
        rows = self._rows(query + " ORDER BY noted_at, station_id, position")
        return [StoredIncident(s, p, k, d, bool(r)) for s, p, k, d, r in rows]

    def entries(self, station_id: str) -> Iterator[StoredEntry]:
        """The station's chain in position order, with each ballot (streamed, not loaded at once)."""
        last, page = 0, 500
        while True:
            rows = self._rows(
                "SELECT position, prev_hash, ballot_hash, kind, ballot_id, ballot, opening FROM entries "
                "WHERE station_id = ? AND position > ? ORDER BY position LIMIT ?",
                (station_id, last, page),
            )
            for position, prev, ballot_hash, kind, ballot_id, ballot, opening in rows:
                entry = ChainEntry(position, bytes(prev), bytes(ballot_hash), kind)
                opening = None if opening is None else bytes(opening)
                yield StoredEntry(station_id, ballot_id, entry, bytes(ballot), opening)
            if len(rows) < page:
                return
            last = rows[-1][0]

    def verified_checkpoint(self, station_id: str, position: int) -> bytes | None:
        rows = self._rows(
            "SELECT document FROM statements WHERE station_id = ? AND kind = 'checkpoint' AND status = 'verified' "
            "AND position = ?",
            (station_id, position),
        )
        return bytes(rows[0][0]) if rows else None

    def verified_closing_report(self, station_id: str) -> bytes | None:
        """The latest verified closing report (the one re-signed after the last late ballot)."""
        rows = self._rows(
            "SELECT document FROM statements WHERE station_id = ? AND kind = 'closing_report' AND status = 'verified' "
            "ORDER BY position DESC, check_ins IS NOT NULL DESC LIMIT 1",
            (station_id,),
        )
        return bytes(rows[0][0]) if rows else None

    def find_tracking_code(self, code: str) -> tuple[str, ChainEntry] | None:
        rows = self._rows(
            "SELECT station_id, position, prev_hash, ballot_hash, kind FROM entries WHERE tracking_code = ?",
            (normalise_tracking_code(code),),
        )
        if not rows:
            return None
        station, position, prev, ballot_hash, kind = rows[0]
        return station, ChainEntry(position, bytes(prev), bytes(ballot_hash), kind)

    def close(self) -> None:
        self._db.close()
