"""The forwarding protocol between station hubs and the central office (version 1), free of I/O.

Topics on the central broker (each hub's certificate CN is its station id, and the broker's
ACL lets it write only its own ``up`` topic and read only its own ``down`` topic)::

    central/station/<S>/up      hub S → centre: ``hello`` and ``batch`` messages (QoS 1)
    central/station/<S>/down    centre → hub S: ``confirm`` and ``refused`` messages (QoS 1)

The hub is stop-and-wait per station: it sends one message with a fresh ``request`` number
and waits for the confirm that echoes it; a confirm says how far the centre holds the
station's chain, and the hub continues from there. A lost message, a dead worker or a centre
that is offline only delays the confirm; the hub then asks again (``hello``). Every message
is canonical JSON; ``docs/gateway.md`` describes each field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from election.chain import ChainEntry, ChainHead
from election.encoding import HASH_SIZE, canonical_bytes, hex_bytes, parse_json
from election.errors import FormatError
from election.stations import check_station_id

PROTOCOL_VERSION = 1
TOPIC_ROOT = "central/station"
SHARE_GROUP = "gateway"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_BATCH_ENTRIES = 1000
STATEMENT_TYPES = ("checkpoint", "zero_report", "closing_report")


def up_topic(station_id: str) -> str:
    return f"{TOPIC_ROOT}/{station_id}/up"


def down_topic(station_id: str) -> str:
    return f"{TOPIC_ROOT}/{station_id}/down"


def shared_up_subscription(group: str = SHARE_GROUP) -> str:
    """What every gateway worker subscribes to: the broker hands each message to one of them."""
    return f"$share/{group}/{TOPIC_ROOT}/+/up"


def station_of_up_topic(topic: str) -> str | None:
    prefix, suffix = f"{TOPIC_ROOT}/", "/up"
    if not (topic.startswith(prefix) and topic.endswith(suffix)):
        return None
    station_id = topic[len(prefix) : -len(suffix)]
    return station_id if station_id and "/" not in station_id else None


@dataclass(frozen=True, slots=True)
class ForwardedEntry:
    """One chain entry with the sealed ballot it names (and the opening, if it was spoiled)."""

    entry: ChainEntry
    ballot: dict[str, Any]
    opening: dict[str, Any] | None

    @property
    def ballot_bytes(self) -> bytes:
        return canonical_bytes(self.ballot)

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry.to_json(), "ballot": self.ballot, "opening": self.opening}


@dataclass(frozen=True, slots=True)
class Hello:
    station_id: str
    request: int


@dataclass(frozen=True, slots=True)
class Batch:
    station_id: str
    request: int
    entries: tuple[ForwardedEntry, ...]
    statements: tuple[dict[str, Any], ...]


UpMessage = Hello | Batch


@dataclass(frozen=True, slots=True)
class ClosingSeen:
    position: int
    check_ins: int | None


@dataclass(frozen=True, slots=True)
class Confirm:
    """How far the centre holds a station's chain, and which signed statements it has."""

    station_id: str
    request: int
    head: ChainHead
    checkpoint: int | None
    closing: ClosingSeen | None
    state: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "type": "confirm",
            "station_id": self.station_id,
            "request": self.request,
            "position": self.head.position,
            "head_hash": self.head.entry_hash.hex(),
            "checkpoint": self.checkpoint,
            "closing": None
            if self.closing is None
            else {"position": self.closing.position, "check_ins": self.closing.check_ins},
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    station_id: str
    request: int
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "type": "refused",
            "station_id": self.station_id,
            "request": self.request,
            "reason": self.reason,
            "detail": self.detail,
        }


DownMessage = Confirm | Refusal


def _counter(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise FormatError(f"{what}: expected a non-negative integer")
    return value


def _message(data: Any, fields: set[str], kinds: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("version") != PROTOCOL_VERSION:
        raise FormatError(f"expected a version {PROTOCOL_VERSION} message object")
    if data.get("type") not in kinds:
        raise FormatError(f"unknown message type {data.get('type')!r}")
    if set(data) != fields | {"version", "type", "station_id", "request"}:
        raise FormatError(f"{data['type']}: unexpected or missing fields")
    check_station_id(data["station_id"])
    _counter(data["request"], "request")
    return data


def parse_up(payload: bytes, station_id: str) -> UpMessage:
    """A hub's message; ``station_id`` is the one the broker vouches for (topic = CN)."""
    data = parse_json(payload, max_size=MAX_MESSAGE_BYTES)
    kind = data.get("type") if isinstance(data, dict) else None
    fields = {"entries", "statements"} if kind == "batch" else set()
    data = _message(data, fields, ("hello", "batch"))
    if data["station_id"] != station_id:
        raise FormatError(f"message names station {data['station_id']} on station {station_id}'s topic")
    if kind == "hello":
        return Hello(station_id, data["request"])
    entries, statements = data["entries"], data["statements"]
    if not isinstance(entries, list) or len(entries) > MAX_BATCH_ENTRIES:
        raise FormatError(f"batch.entries: a list of at most {MAX_BATCH_ENTRIES}")
    if not isinstance(statements, list) or len(statements) > len(STATEMENT_TYPES):
        raise FormatError("batch.statements: a list of the station's latest signed statements")
    parsed = []
    for index, item in enumerate(entries):
        if not isinstance(item, dict) or set(item) != {"entry", "ballot", "opening"}:
            raise FormatError(f"batch.entries[{index}]: expected entry, ballot and opening")
        if not isinstance(item["ballot"], dict) or not (item["opening"] is None or isinstance(item["opening"], dict)):
            raise FormatError(f"batch.entries[{index}]: ballot must be an object, opening an object or null")
        parsed.append(ForwardedEntry(ChainEntry.from_json(item["entry"]), item["ballot"], item["opening"]))
    for index, statement in enumerate(statements):
        if not isinstance(statement, dict) or statement.get("type") not in STATEMENT_TYPES:
            raise FormatError(f"batch.statements[{index}]: not a signed ledger statement")
    return Batch(station_id, data["request"], tuple(parsed), tuple(statements))


def hello_payload(station_id: str, request: int) -> bytes:
    return canonical_bytes({"version": PROTOCOL_VERSION, "type": "hello", "station_id": station_id, "request": request})


def batch_payload(station_id: str, request: int, entries: list[ForwardedEntry], statements: list[dict]) -> bytes:
    return canonical_bytes(
        {
            "version": PROTOCOL_VERSION,
            "type": "batch",
            "station_id": station_id,
            "request": request,
            "entries": [entry.to_json() for entry in entries],
            "statements": statements,
        }
    )


def parse_down(payload: bytes, station_id: str) -> DownMessage:
    """The centre's answer, as the hub reads it."""
    data = parse_json(payload, max_size=65536)
    if isinstance(data, dict) and data.get("type") == "refused":
        data = _message(data, {"reason", "detail"}, ("refused",))
        if not isinstance(data["reason"], str) or not isinstance(data["detail"], str):
            raise FormatError("refused: reason and detail must be text")
        return Refusal(data["station_id"], data["request"], data["reason"], data["detail"])
    data = _message(data, {"position", "head_hash", "checkpoint", "closing", "state"}, ("confirm",))
    if data["station_id"] != station_id:
        raise FormatError(f"confirm for station {data['station_id']}, expected {station_id}")
    closing = data["closing"]
    if closing is not None:
        if not isinstance(closing, dict) or set(closing) != {"position", "check_ins"}:
            raise FormatError("confirm.closing: expected position and check_ins")
        check_ins = closing["check_ins"]
        closing = ClosingSeen(
            _counter(closing["position"], "closing.position"),
            None if check_ins is None else _counter(check_ins, "closing.check_ins"),
        )
    checkpoint = data["checkpoint"]
    if not isinstance(data["state"], str):
        raise FormatError("confirm.state must be text")
    return Confirm(
        station_id,
        data["request"],
        ChainHead(_counter(data["position"], "position"), hex_bytes(data["head_hash"], HASH_SIZE, "head_hash")),
        None if checkpoint is None else _counter(checkpoint, "checkpoint"),
        closing,
        data["state"],
    )
