"""The central store: SQLite by default, PostgreSQL (psycopg) for real deployments, one interface.

Every batch is one transaction: read the station's snapshot, let the pure
:class:`~gateway.checker.StationJudge` decide, write the accepted entries, device statements,
ledger statements and incidents, audit a closed station's devices and batches, commit — and
only then may the worker confirm to the hub. The
stateful phase is serialised across all workers and stations (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a transaction-scoped advisory lock), so a token spent at two stations at the same
moment is still seen twice; the expensive checks (proofs, signatures) run before it, in
parallel. Schema and meaning of each column: ``docs/gateway.md``.

Nothing here keeps the order in which ballots were cast (docs/design-record-v2.md §1): a ballot's
only place is its chain position, which within a batch follows ballot-hash order; entries carry
no time; each device keeps one statement, overwritten in place. What does follow arrival is
batch-grained and already in the chain: rows (SQLite rowids, PostgreSQL's heap) are inserted
one forwarded message at a time in position order, and an incident's ``noted_at`` is when the
centre judged a message, which carries whole batches, after the station mixed them.
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

from election.chain import ChainEntry, ChainHead, genesis_hash, normalise_tracking_code
from election.devices import DeviceStatement
from election.encoding import canonical_bytes, parse_json
from election.manifest import Manifest
from election.stations import StationKeys
from gateway.checker import (
    RESOLVABLE_DEVICE_KIND,
    Applied,
    Incident,
    Place,
    Prevalidated,
    Statement,
    StationJudge,
    StationProfile,
    StationSnapshot,
    batch_rule_problem,
    device_problems,
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
    statement BLOB
);
CREATE TABLE IF NOT EXISTS entries (
    station_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    batch BIGINT NOT NULL,
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
    closed_position BIGINT,
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


def _chain_entry(position: int, batch: int, prev_hash: bytes, ballot_hash: bytes, kind: str) -> ChainEntry:
    """A chain entry from its stored columns (BYTEA may come back as a memoryview)."""
    return ChainEntry(position, batch, bytes(prev_hash), bytes(ballot_hash), kind)


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

    def __init__(self, url_or_path: str | Path, manifest: Manifest) -> None:
        self.base_hash = manifest.base_hash
        self.batch_min = manifest.batch_min
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
            self._db.execute("PRAGMA secure_delete=ON")  # an overwritten device statement leaves no copy
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
                    self._run("INSERT INTO devices VALUES (?, ?, ?, NULL)", (device_id, keys.station_id, raw))
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
        """Phase 2, the after-close audit and the commit. When this returns, everything decided
        is durable."""
        genesis = genesis_hash(self.base_hash, station_id)
        with self._transaction():
            rows = self._rows("SELECT head_position, state FROM stations WHERE station_id = ?", (station_id,))
            if not rows:
                raise GatewayError(f"station {station_id} is not registered")
            position, state = rows[0]
            head, last_ballot = self._head(station_id, genesis, position)
            pending = self._statements(station_id, "pending")
            positions = sorted(snapshot_positions(head, checked, pending))
            known = self._where_in(
                "SELECT position, entry_hash FROM entries WHERE station_id = ? AND position", positions, (station_id,)
            )
            tokens = [e.ballot.token.message for e in checked.entries if e.ballot.token is not None]
            ballots = [e.entry.ballot_hash for e in checked.entries]
            ballot_ids = sorted({e.ballot.ballot_id.hex() for e in checked.entries})
            snapshot = StationSnapshot(
                head,
                state,
                {p: bytes(h) for p, h in known},
                self._owners("token", tokens),
                self._owners("ballot_hash", ballots),
                {bytes.fromhex(i): where for i, where in self._owners("ballot_id", ballot_ids).items()},
                pending,
                last_ballot,
                self._device_statements("device_id", sorted({d.device_id for d in checked.devices})),
            )
            applied = StationJudge(station_id, genesis).apply(snapshot, checked)
            self._write(station_id, applied, checked)
            if applied.entries or applied.devices or applied.verified:
                applied.audit = self._audit_close(station_id, genesis)
        return applied

    def _head(self, station_id: str, genesis: bytes, position: int) -> tuple[ChainHead, bytes | None]:
        """The stored head with its batch, and its entry's ballot hash (a batch may continue)."""
        if position == 0:
            return ChainHead(0, genesis, 0), None
        rows = self._rows(
            "SELECT entry_hash, batch, ballot_hash FROM entries WHERE station_id = ? AND position = ?",
            (station_id, position),
        )
        entry_hash, batch, ballot_hash = rows[0]
        return ChainHead(position, bytes(entry_hash), batch), bytes(ballot_hash)

    def _device_statements(self, column: str, values: Sequence[str]) -> dict[str, DeviceStatement]:
        """The statement kept of each device whose ``column`` is one of ``values`` (devices
        without one are left out)."""
        rows = self._where_in(
            f"SELECT device_id, statement FROM devices WHERE statement IS NOT NULL AND {column}", values
        )
        return {device: DeviceStatement.from_json(parse_json(bytes(document))) for device, document in rows}

    def _audit_close(self, station_id: str, genesis: bytes) -> list[Incident]:
        """Once the final close is verified: every device's ballots against its statement, and
        the batch rule up to the close. Device problems are judged afresh each time (resolved
        when they no longer hold); a broken batch rule is for good (the ledger signed it)."""
        closed = self._rows(
            "SELECT MAX(closed_position) FROM statements WHERE station_id = ? AND kind = 'closing_report' "
            "AND status = 'verified'",
            (station_id,),
        )[0][0]
        if closed is None:
            return []
        held: dict[str, list[bytes]] = {}
        for device, ballot_hash in self._rows(
            "SELECT device_id, ballot_hash FROM entries WHERE station_id = ?", (station_id,)
        ):
            held.setdefault(device, []).append(bytes(ballot_hash))
        statements = self._device_statements("station_id", [station_id])
        found = device_problems(station_id, held, statements)
        self._many(
            "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (digest) DO UPDATE SET resolved = 0",
            self._incident_rows(found),
        )
        current = [incident.digest for incident in found]
        still_open = f" AND digest NOT IN ({','.join('?' * len(current))})" if current else ""
        self._run(
            "UPDATE incidents SET resolved = 1 WHERE station_id = ? AND kind = ? AND resolved = 0" + still_open,
            (station_id, RESOLVABLE_DEVICE_KIND, *current),
        )
        chain = self._chain(station_id, up_to=closed + 1)
        broken = batch_rule_problem(station_id, genesis, chain, self.batch_min, closed)
        if broken is not None:
            self._add_incidents([broken])
            found.append(broken)
        return found

    def _chain(self, station_id: str, *, up_to: int) -> list[ChainEntry]:
        """The station's chain entries from position 1 to ``up_to`` (without the ballots)."""
        rows = self._rows(
            "SELECT position, batch, prev_hash, ballot_hash, kind FROM entries WHERE station_id = ? AND position <= ? "
            "ORDER BY position",
            (station_id, up_to),
        )
        return [_chain_entry(*row) for row in rows]

    def _owners(self, column: str, values: Sequence[Any]) -> dict[Any, Place]:
        """Where each value of ``column`` is already chained (at any station)."""
        rows = self._where_in(f"SELECT {column}, station_id, position FROM entries WHERE {column}", values)
        return {value if isinstance(value, str) else bytes(value): (station, p) for value, station, p in rows}

    def _write(self, station_id: str, applied: Applied, checked: Prevalidated) -> None:
        self._many(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    station_id,
                    e.entry.position,
                    e.entry.batch,
                    e.entry.prev_hash,
                    e.entry.ballot_hash,
                    e.entry.kind,
                    e.entry_hash,
                    e.entry.tracking_code,
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
            "UPDATE devices SET statement = ? WHERE device_id = ? AND station_id = ?",
            [(canonical_bytes(d.to_json()), d.device_id, station_id) for d in applied.devices],
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
            "INSERT INTO statements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET status = "
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
                    s.closed_position,
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

    @staticmethod
    def _incident_rows(incidents: Sequence[Incident]) -> list[tuple[Any, ...]]:
        now = time.time_ns() // 1000
        return [(i.digest, i.station_id, i.position, i.kind, i.detail, i.evidence, now) for i in incidents]

    def _add_incidents(self, incidents: Sequence[Incident]) -> None:
        self._many(
            "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (digest) DO NOTHING",
            self._incident_rows(incidents),
        )

    def add_incidents(self, incidents: Sequence[Incident]) -> None:
        """Record problems found outside a batch (unknown station, malformed message)."""
        with self._transaction():
            self._add_incidents(incidents)

    def _statements(self, station_id: str, status: str) -> list[Statement]:
        rows = self._rows(
            "SELECT kind, position, head_hash, document, check_ins, ballots, closed_position FROM statements "
            "WHERE station_id = ? AND status = ? ORDER BY position",
            (station_id, status),
        )
        return [Statement(k, ChainHead(p, bytes(h)), bytes(d), c, b, cp) for k, p, h, d, c, b, cp in rows]

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
        devices_open = self._rows(
            "SELECT COUNT(*) FROM incidents WHERE station_id = ? AND kind = ? AND resolved = 0",
            (station_id, RESOLVABLE_DEVICE_KIND),
        )[0][0]
        complete = (
            closing is not None
            and closings[0][2] == "verified"
            and closing.position == head.position
            and {"checkpoint", "closing_report"} <= kinds
            and rows[0][2] == "ok"
            and devices_open == 0
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
                "SELECT position, batch, prev_hash, ballot_hash, kind, ballot_id, ballot, opening FROM entries "
                "WHERE station_id = ? AND position > ? ORDER BY position LIMIT ?",
                (station_id, last, page),
            )
            for *chained, ballot_id, ballot, opening in rows:
                opening = None if opening is None else bytes(opening)
                yield StoredEntry(station_id, ballot_id, _chain_entry(*chained), bytes(ballot), opening)
            if len(rows) < page:
                return
            last = rows[-1][0]

    def device_statements(self) -> dict[str, bytes]:
        """Each device's kept statement, exactly as stored (canonical JSON), for the record."""
        rows = self._rows("SELECT device_id, statement FROM devices WHERE statement IS NOT NULL ORDER BY device_id")
        return {device: bytes(document) for device, document in rows}

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
        """The station and chain entry of the ballot a voter's tracking code names (derived from
        the ballot's hash, so found from the moment its batch reaches the centre). Raises
        :class:`~election.chain.TrackingCodeTypo` for a code holding I, O, 0 or 1."""
        rows = self._rows(
            "SELECT station_id, position, batch, prev_hash, ballot_hash, kind FROM entries WHERE tracking_code = ?",
            (normalise_tracking_code(code),),
        )
        if not rows:
            return None
        station, *chained = rows[0]
        return station, _chain_entry(*chained)

    def close(self) -> None:
        self._db.close()
