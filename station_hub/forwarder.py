"""The forwarder: sends the station's chain, in order, to the central office and resumes where
the centre says it stands.

Protocol (``docs/gateway.md``, code in ``protocol/forwarding.py``): stop-and-wait per station.
The hub sends one message (``hello`` or a ``batch`` of entries with the ledger's latest signed
statements) with a fresh request number and waits for the ``confirm`` echoing it. Once the
centre holds the closing report and every entry, a batch carries the terminals' latest device
statements (docs/design-record-v2.md §3), and again whenever a late ballot changed one: never
before the final close, since two consecutive statements of a terminal would name the ballot
sealed between them. The confirm
says how far the centre holds the chain (committed before it was sent), and the next batch
starts right after that. No confirm within ``timeout`` → ``hello`` again; so a lost message,
a dead gateway worker or an offline centre only delays, and the two never need to be online
at the same time. What the centre last confirmed is kept durably (``forward/forward.db``) for
the operator's forward lag, and so are the ledger's signed statements as the forwarder saw them.

:class:`ForwarderCore` decides (no I/O); :class:`Forwarder` reads the ledger's database
read-only, talks MQTT to both brokers and persists.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.chain import ChainEntry, ChainHead, verify_document
from election.devices import DeviceStatement
from election.encoding import canonical_bytes, parse_json, sha256
from election.errors import ElectionError
from infra.link import CentralLink
from infra.mqtt import connect, make_client
from infra.service import BrokerWatch, Vitals, run_service
from infra.store import open_store
from protocol.forwarding import (
    Confirm,
    ForwardedEntry,
    Refusal,
    batch_payload,
    down_topic,
    hello_payload,
    parse_down,
    parse_statement,
    up_topic,
)
from protocol.topics import FORWARDER_NAME
from station_hub.forward_progress import FORWARD_DB, confirmed_position
from station_hub.ledger_store import ENTRY_COLUMNS, attach_pool, entry_of, pool_file
from station_hub.station import Station

log = logging.getLogger("station_hub.forwarder")
BATCH_ENTRIES = 200
BATCH_BYTES = 2 * 1024 * 1024
STATEMENT_KINDS = ("zero_report", "checkpoint", "closing_report")
NO_GATEWAY_RETRY = 1.0
NO_MATCHING_SUBSCRIBERS = 16


@dataclass(frozen=True, slots=True)
class SendHello:
    request: int


@dataclass(frozen=True, slots=True)
class SendBatch:
    request: int
    first_position: int
    devices: bytes | None = None
    """The digest of the device statements to send with it (:func:`devices_digest`), if any."""


Action = SendHello | SendBatch | None


def _statement_rank(body: dict[str, Any]) -> tuple[int, int]:
    """Newer statements win: a later head, then a closing report that carries the check-ins."""
    return body["position"], 0 if body.get("check_ins") is None else 1


def _progress(confirm: Confirm) -> tuple[Any, ...]:
    return confirm.head, confirm.checkpoint, confirm.closing


def devices_digest(statements: list[DeviceStatement]) -> bytes | None:
    """What identifies a set of device statements (None for none): sent again when it changes."""
    return sha256(canonical_bytes([s.to_json() for s in statements])) if statements else None


class ForwarderCore:
    """The hub's side of the protocol as a state machine (times are monotonic seconds)."""

    def __init__(self, station_id: str, timeout: float, first_request: int) -> None:
        self.station_id = station_id
        self.timeout = timeout
        self._next_request = first_request
        self.in_flight: tuple[SendHello | SendBatch, float] | None = None
        """The request awaiting its confirm, and when it was sent."""
        self.centre: Confirm | None = None
        self.resume_at = 0.0
        self.devices_confirmed: bytes | None = None
        """The digest of the device statements the centre last confirmed (none since start: a
        restart sends them once more, which the centre takes as it takes any newer statement)."""

    def _send(self, action: SendHello | SendBatch, now: float) -> Action:
        self.in_flight = (action, now)
        return action

    def _hello(self, now: float) -> Action:
        self._next_request += 1
        return self._send(SendHello(self._next_request), now)

    def connected(self, now: float) -> Action:
        self.centre = None
        return self._hello(now)

    def received(self, answer: Confirm | Refusal, now: float) -> bool:
        """Take the centre's answer; True if it was the one awaited."""
        if self.in_flight is None or answer.request != self.in_flight[0].request:
            return False
        action = self.in_flight[0]
        self.in_flight = None
        if isinstance(answer, Refusal):
            log.error("the centre refused station %s: %s (%s)", self.station_id, answer.reason, answer.detail)
            self.resume_at = now + self.timeout
            return True
        previous, self.centre = self.centre, answer
        if isinstance(action, SendBatch) and action.devices is not None:
            self.devices_confirmed = action.devices  # a batch of statements only: no progress to see
        elif isinstance(action, SendBatch) and previous is not None and _progress(previous) == _progress(answer):
            # The centre took nothing of the batch (an entry or statement failed its checks):
            # try again later, never in a tight loop.
            log.error("the centre stays at position %d of station %s", answer.head.position, self.station_id)
            self.resume_at = now + self.timeout
        return True

    def undelivered(self, request: int, now: float) -> None:
        """The broker had no gateway subscribed (PUBACK 16): the centre is down, retry soon."""
        if self.in_flight is not None and self.in_flight[0].request == request:
            self.in_flight = None
            self.centre = None
            self.resume_at = now + min(self.timeout, NO_GATEWAY_RETRY)

    def tick(
        self, now: float, ledger_head: int, statements: dict[str, dict[str, Any]], devices: bytes | None = None
    ) -> Action:
        """What to send now, given the ledger's head, the signed statements seen locally and the
        digest of the ledger's device statements (:func:`devices_digest`)."""
        if self.in_flight is not None:
            if now - self.in_flight[1] < self.timeout:
                return None
            log.warning("no confirm from the centre in %.1f s; asking again", self.timeout)
            return self._hello(now)
        if now < self.resume_at:
            return None
        if self.centre is None:
            return self._hello(now)
        if self.centre.head.position < ledger_head or self._statements_missing(statements):
            self._next_request += 1
            return self._send(SendBatch(self._next_request, self.centre.head.position + 1), now)
        if devices is not None and devices != self.devices_confirmed and self.centre.closing is not None:
            self._next_request += 1
            return self._send(SendBatch(self._next_request, self.centre.head.position + 1, devices), now)
        return None

    def _statements_missing(self, statements: dict[str, dict[str, Any]]) -> bool:
        assert self.centre is not None
        checkpoint, closing = statements.get("checkpoint"), statements.get("closing_report")
        held = -1 if self.centre.checkpoint is None else self.centre.checkpoint  # 0 is a checkpoint too
        if checkpoint is not None and held < checkpoint["position"]:
            return True
        if closing is None:
            return False
        seen = self.centre.closing
        return seen is None or (seen.position, 0 if seen.check_ins is None else 1) < _statement_rank(closing)


class LedgerReader:
    """Read-only access to the ledger's database (the ledger service alone writes it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and self.path.exists() and pool_file(self.path).exists():
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            attach_pool(db, self.path, read_only=True)
            self._db = db
        return self._db

    def head(self) -> int:
        db = self._connection()
        if db is None:
            return 0
        try:
            return int(db.execute("SELECT COALESCE(MAX(position), 0) FROM entries").fetchone()[0])
        except sqlite3.OperationalError:  # the ledger has not created its tables yet
            return 0

    def entries_from(
        self, first: int, limit: int = BATCH_ENTRIES, max_bytes: int = BATCH_BYTES
    ) -> list[ForwardedEntry]:
        db = self._connection()
        if db is None:
            return []
        rows = db.execute(
            f"SELECT {ENTRY_COLUMNS}, ballot FROM entries WHERE position >= ? ORDER BY position LIMIT ?",
            (first, limit),
        ).fetchall()
        out, size = [], 0
        for *columns, stored in rows:
            entry = entry_of(*columns)
            ballot, opening = split_stored_ballot(entry, bytes(stored))
            size += len(stored)
            if out and size > max_bytes:
                break
            out.append(ForwardedEntry(entry, ballot, opening))
        return out

    def device_statements(self, base_hash: bytes) -> list[DeviceStatement]:
        """Each terminal's latest statement the ledger holds, by device id."""
        db = self._connection()
        if db is None:
            return []
        try:
            rows = db.execute("SELECT * FROM intake.device_statements ORDER BY device_id").fetchall()
        except sqlite3.OperationalError:  # the ledger has not created its tables yet
            return []
        return [DeviceStatement(device, base_hash, sealed, bytes(c), bytes(s)) for device, sealed, c, s in rows]

    def entry_hash(self, position: int) -> bytes | None:
        db = self._connection()
        row = (
            None
            if db is None
            else db.execute("SELECT entry_hash FROM entries WHERE position = ?", (position,)).fetchone()
        )
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def split_stored_ballot(entry: ChainEntry, stored: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The sealed ballot and (for a spoiled one) its opening from what the ledger stored.

    A cast ballot is stored as its exact bytes, a spoiled one as ``{"ballot": …, "opening": …}``;
    anything else is forwarded as it is and the centre will flag it.
    """
    try:
        data = parse_json(stored)
    except ElectionError:
        return {}, None
    if sha256(stored) == entry.ballot_hash or not isinstance(data, dict):
        return (data if isinstance(data, dict) else {}), None
    if "ballot" in data and "opening" in data and isinstance(data["ballot"], dict):
        opening = data["opening"] if isinstance(data["opening"], dict) else None
        return data["ballot"], opening
    return data, None


FORWARD_SCHEMA_VERSION = 1
FORWARD_SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmed (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL,
                                      head_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS statements (kind TEXT PRIMARY KEY, document BLOB NOT NULL);
"""


class ForwardState:
    """``forward/forward.db``: what the centre confirmed, and the ledger's latest statements."""

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, FORWARD_SCHEMA, FORWARD_SCHEMA_VERSION)
        self._lock = threading.Lock()

    def confirmed(self) -> ChainHead | None:
        row = self._db.execute("SELECT position, head_hash FROM confirmed").fetchone()
        return None if row is None else ChainHead(row[0], bytes(row[1]))

    def set_confirmed(self, head: ChainHead) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO confirmed VALUES (1, ?, ?)", (head.position, head.entry_hash))

    def statements(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT kind, document FROM statements").fetchall()
        return {kind: parse_json(document) for kind, document in rows}

    def offer_statement(self, kind: str, document: dict[str, Any], body: dict[str, Any]) -> bool:
        """Keep ``document`` if it is newer than the stored one of its kind; True if kept."""
        current = self.statements().get(kind)
        if current is not None and _statement_rank(current) >= _statement_rank(body):
            return False
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO statements VALUES (?, ?)", (kind, canonical_bytes(document)))
        return True

    def close(self) -> None:
        self._db.close()


def forward_lag(station: Station) -> int | None:
    """Chain entries the centre has not confirmed yet (None if the hub never forwarded)."""
    confirmed = confirmed_position(station.directory)
    if confirmed is None:
        return None
    reader = LedgerReader(station.ledger_db)
    try:
        return max(0, reader.head() - confirmed)
    finally:
        reader.close()


class Forwarder:
    """The I/O shell: ledger database in, both brokers, durable forward state."""

    def __init__(
        self, station: Station, *, timeout: float = 10.0, poll_interval: float = 0.2, batch_entries: int = BATCH_ENTRIES
    ) -> None:
        self.station = station
        self.batch_entries = batch_entries
        self.link = CentralLink.open(station.directory)
        self.poll_interval = poll_interval
        self.reader = LedgerReader(station.ledger_db)
        self.state = ForwardState(station.directory / FORWARD_DB)
        ledger_key = station.certificate("ledger").public_key()
        assert isinstance(ledger_key, Ed25519PublicKey)
        self.ledger_key = ledger_key
        self.base_hash = station.election().manifest.base_hash
        self.core = ForwarderCore(station.station_id, timeout, time.time_ns() // 1000)
        self._events: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stop = threading.Event()
        self.vitals = Vitals()
        self.central_watch = BrokerWatch(log, "forwarder", f"the central broker {self.link.host}:{self.link.port}")
        self.local_watch = BrokerWatch(log, "forwarder", "the station broker")
        self.central = make_client(self.link, station.station_id)  # type: ignore[arg-type]
        self.central.on_connect = self._on_central_connect
        self.central.on_disconnect = lambda c, u, f, reason, p: self.central_watch.down(reason, self._stop.is_set())
        self.central.on_message = self._on_central_message
        self.central.on_publish = self._on_central_publish
        self._published: dict[int, int] = {}
        """MQTT message id → request number, until the broker's PUBACK."""
        self.local = make_client(station, FORWARDER_NAME)
        self.local.on_connect = self._on_local_connect
        self.local.on_disconnect = lambda c, u, f, reason, p: self.local_watch.down(reason, self._stop.is_set())
        self.local.on_message = self._on_local_message

    # --- network threads -----------------------------------------------------------------

    def _on_central_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.central_watch.refused(f"{reason} (station {self.station.station_id})")
            return
        self.central_watch.up()
        client.subscribe(down_topic(self.station.station_id), qos=1)
        self._events.put(lambda: self._act(self.core.connected(time.monotonic())))

    def _on_central_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        client.ack(message.mid, message.qos)
        self._events.put(lambda: self._answer(payload))

    def _on_central_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        code = reason.value
        self._events.put(lambda: self._puback(mid, code))

    def _on_local_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.local_watch.refused(reason)
            return
        self.local_watch.up()
        topics = self.station.topics
        client.subscribe([(topics.checkpoint, 1), (topics.zero_report, 1), (topics.closing_report, 1)])
        self.vitals.mark_ready()

    def _on_local_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        client.ack(message.mid, message.qos)
        self._events.put(lambda: self._statement(payload))

    # --- worker thread -------------------------------------------------------------------

    def _statement(self, payload: bytes) -> None:
        try:
            # Exactly what the centre accepts (protocol.forwarding.check_statement), so an
            # honest hub never forwards a statement that gets its whole batch refused.
            document = parse_statement(payload)
            body = verify_document(document, self.ledger_key)
            if body["station_id"] != self.station.station_id:
                raise ElectionError(f"a statement of station {body['station_id']}")
        except ElectionError as error:
            log.warning("ignored a ledger statement: %s", error)
            return
        self.state.offer_statement(body["type"], document, body)

    def _puback(self, mid: int, code: int) -> None:
        request = self._published.pop(mid, None)
        if request is not None and code == NO_MATCHING_SUBSCRIBERS:
            self.core.undelivered(request, time.monotonic())

    def _answer(self, payload: bytes) -> None:
        try:
            answer = parse_down(payload, self.station.station_id)
        except ElectionError as error:
            log.warning("ignored a message from the centre: %s", error)
            return
        asked_where = self.core.in_flight is not None and isinstance(self.core.in_flight[0], SendHello)
        if not self.core.received(answer, time.monotonic()) or not isinstance(answer, Confirm):
            return
        if asked_where:  # after a (re)connect or a timeout: where the centre stands, where we resume
            head = self.reader.head()
            resume = f"; forwarding from {answer.head.position + 1}" if answer.head.position < head else ""
            log.info("the centre holds station %s up to position %d (ledger at %d)%s", self.station.station_id,
                     answer.head.position, head, resume)  # fmt: skip
        ours = self.reader.entry_hash(answer.head.position) if answer.head.position else None
        if ours is not None and ours != answer.head.entry_hash:
            log.error("the centre holds a different chain at position %d: FORK", answer.head.position)
        self.state.set_confirmed(answer.head)

    def _act(self, action: Action) -> None:
        if action is None:
            return
        station_id = self.station.station_id
        if isinstance(action, SendHello):
            payload = hello_payload(station_id, action.request)
        else:
            entries = self.reader.entries_from(action.first_position, self.batch_entries)
            known = self.state.statements()
            statements = [known[kind] for kind in STATEMENT_KINDS if kind in known]
            devices = self.reader.device_statements(self.base_hash) if action.devices is not None else []
            payload = batch_payload(station_id, action.request, entries, statements, devices)
        info = self.central.publish(up_topic(station_id), payload, qos=1)
        self._published[info.mid] = action.request

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        confirmed = self.state.confirmed()
        log.info("forwarder of station %s starting: ledger head %d, centre last confirmed %s", self.station.station_id,
                 self.reader.head(), "nothing" if confirmed is None else f"position {confirmed.position}")  # fmt: skip
        connect(self.central, self.link)  # type: ignore[arg-type]
        connect(self.local, self.station)
        try:
            while not self._stop.is_set():
                self.vitals.beat()
                try:
                    event = self._events.get(timeout=self.poll_interval)
                    while True:
                        event()
                        event = self._events.get_nowait()
                except queue.Empty:
                    pass
                if self.central.is_connected():
                    devices = devices_digest(self.reader.device_statements(self.base_hash))
                    self._act(self.core.tick(time.monotonic(), self.reader.head(), self.state.statements(), devices))
        finally:
            for client in (self.central, self.local):
                client.disconnect()
                client.loop_stop()
            self.reader.close()
            self.state.close()


def serve(station: Station, **options: Any) -> None:
    """Run until SIGTERM or SIGINT."""
    run_service(Forwarder(station, **options), "forwarder")
