"""The forwarding protocol between station hubs and the central office (version 2), free of I/O.

Topics on the central broker (each hub's certificate CN is its station id, and the broker's
ACL lets it write only its own ``up`` topic and read only its own ``down`` topic)::

    central/station/<S>/up      hub S → centre: ``hello`` and ``batch`` messages (QoS 1)
    central/station/<S>/down    centre → hub S: ``confirm`` and ``refused`` messages (QoS 1)

The hub is stop-and-wait per station: it sends one message with a fresh ``request`` number
and waits for the confirm that echoes it; a confirm says how far the centre holds the
station's chain, and the hub continues from there. A lost message, a dead worker or a centre
that is offline only delays the confirm; the hub then asks again (``hello``). Every message
is canonical JSON; ``docs/gateway.md`` describes each field.

:func:`parse_up` and :func:`parse_down` are total like every decoder of :mod:`protocol.messages`:
any byte string gives a message or a :class:`protocol.errors.Refusal` (reason ``malformed`` or
``too_large``), never another exception. Input must be canonical; ``version`` is the integer 2
(``true`` is refused); integers are bounded and never booleans; ids match their pattern in full;
enums (``type``, ``state``, ``reason``) are closed and texts bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from election.chain import ChainEntry, ChainHead
from election.devices import DeviceStatement
from election.encoding import HASH_SIZE, canonical_bytes, check_version, hex_bytes, parse_json, strict_int
from election.errors import FormatError
from election.ids import check_device_id, check_station_id
from protocol import errors

PROTOCOL_VERSION = 2
"""Version 2 goes with record format 2: entries of hash-sorted batches, device statements."""
TOPIC_ROOT = "central/station"
SHARE_GROUP = "gateway"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_BATCH_ENTRIES = 1000
STATEMENT_TYPES = ("checkpoint", "zero_report", "closing_report")
MAX_DEVICE_STATEMENTS = 1000
"""Most device statements in one batch message (a station has far fewer terminals)."""
STATION_STATES = ("ok", "forked")
"""A station's state at the centre, as a confirm reports it."""
MAX_TERMINALS = 1000
MAX_DOWN_BYTES = 64 * 1024
MAX_DETAIL = 2000
"""Most characters of a refusal's ``detail`` (longer text is cut when encoding)."""
MAX_REQUEST = 2**63 - 1
MAX_POSITION = 2**63 - 1
REFUSAL_REASONS = ("unknown_station", "malformed")
SEALED_BALLOT_FIELDS = frozenset({"version", "ballot_id", "base_hash", "device_id", "token", "contests", "signature"})
"""The top-level fields of a sealed ballot (formats.md §6); the centre parses the rest against
the manifest, entry by entry, so that a bad entry becomes evidence at its position."""
OPENING_FIELDS = frozenset({"contests"})
_ENVELOPE = frozenset({"version", "type", "station_id", "request"})
_CHECKPOINT_FIELDS = frozenset({"version", "type", "station_id", "base_hash", "position", "head_hash", "signature"})
STATEMENT_FIELDS: dict[str, frozenset[str]] = {
    "checkpoint": _CHECKPOINT_FIELDS,
    "zero_report": _CHECKPOINT_FIELDS | {"terminals"},
    "closing_report": _CHECKPOINT_FIELDS
    | {"terminals", "ballots", "spoiled", "check_ins", "late", "closed_position", "unreachable"},
}
"""Exactly the fields of each signed ledger statement (ledger.md, "Chain" and "Reports"); a zero
or closing report also carries ``authorized_by`` (the officials' signatures) from a ledger that
requires officials' cards, which every current one does."""


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
    try:
        return check_station_id(station_id)
    except FormatError:
        return None


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
    """Chain entries with their ballots, the ledger's latest signed statements, and the latest
    device statement of each terminal (sent only once the polls are finally closed: a device's
    intermediate statements, compared, would name the ballot sealed between them)."""

    station_id: str
    request: int
    entries: tuple[ForwardedEntry, ...]
    statements: tuple[dict[str, Any], ...]
    devices: tuple[DeviceStatement, ...] = ()


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
            "detail": self.detail[:MAX_DETAIL],
        }


DownMessage = Confirm | Refusal


def _refuse(detail: str) -> NoReturn:
    raise errors.Refusal(errors.Reason.MALFORMED, detail)


def _checked(check: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """Run an election-core check; its FormatError becomes the protocol's refusal."""
    try:
        return check(*args, **options)
    except errors.Refusal:
        raise
    except FormatError as error:
        _refuse(str(error))


def _counter(value: Any, what: str) -> int:
    return _checked(strict_int, value, what, minimum=0, maximum=MAX_POSITION)


def _document(payload: bytes, max_size: int, what: str) -> Any:
    """Canonical JSON only: the bytes a hub hashes and signs are the bytes that travel."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        _refuse(f"{what}: expected bytes")
    if len(payload) > max_size:
        raise errors.Refusal(errors.Reason.TOO_LARGE, f"{what}: {len(payload)} bytes, the limit is {max_size}")
    return _checked(parse_json, payload, max_size=max_size, canonical=True)


def _message(data: Any, fields: set[str] | frozenset[str], kinds: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        _refuse(f"expected a version {PROTOCOL_VERSION} message object")
    _checked(check_version, data, PROTOCOL_VERSION, "message")
    kind = data.get("type")
    if type(kind) is not str or kind not in kinds:
        _refuse(f"expected a message of type {' or '.join(kinds)}")
    expected = set(fields) | _ENVELOPE
    if set(data) != expected:
        missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
        _refuse(f"{kind}: missing fields {missing}, unknown fields {[name[:40] for name in extra[:5]]}")
    _checked(check_station_id, data["station_id"])
    _checked(strict_int, data["request"], "request", minimum=0, maximum=MAX_REQUEST)
    return data


def _fields(value: Any, fields: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != fields:
        _refuse(f"{what}: expected an object with exactly the fields {sorted(fields)}")
    return value


def check_statement(document: Any, what: str = "statement") -> dict[str, Any]:
    """The shape of a signed ledger statement as it travels: exactly its type's fields, version
    2, a full-match station id, bounded positions and counts. Its signature, station and
    election are checked by the reader, which holds the keys."""
    if not isinstance(document, dict) or type(document.get("type")) is not str:
        _refuse(f"{what}: not a signed ledger statement")
    kind = document["type"]
    if kind not in STATEMENT_FIELDS:
        _refuse(f"{what}: type must be one of {', '.join(STATEMENT_TYPES)}")
    authorized = kind != "checkpoint" and "authorized_by" in document
    _fields(document, STATEMENT_FIELDS[kind] | ({"authorized_by"} if authorized else set()), f"{what} ({kind})")
    _checked(check_version, document, PROTOCOL_VERSION, what)
    _checked(check_station_id, document["station_id"], f"{what}.station_id")
    _checked(hex_bytes, document["base_hash"], HASH_SIZE, f"{what}.base_hash")
    _checked(hex_bytes, document["head_hash"], HASH_SIZE, f"{what}.head_hash")
    _checked(hex_bytes, document["signature"], 64, f"{what}.signature")
    _counter(document["position"], f"{what}.position")
    if kind != "checkpoint":
        _per_terminal(document["terminals"], f"{what}.terminals", _counter)
        if authorized:
            _authorization(document["authorized_by"], f"{what}.authorized_by")
    if kind == "closing_report":
        _counter(document["ballots"], f"{what}.ballots")
        _counter(document["spoiled"], f"{what}.spoiled")
        _counter(document["closed_position"], f"{what}.closed_position")
        if document["check_ins"] is not None:
            _counter(document["check_ins"], f"{what}.check_ins")
        _per_terminal(document["late"], f"{what}.late", _counter)
        _per_terminal(document["unreachable"], f"{what}.unreachable", _device_head)
    return document


def _per_terminal(value: Any, what: str, check: Callable[[Any, str], Any]) -> None:
    if not isinstance(value, dict) or len(value) > MAX_TERMINALS:
        _refuse(f"{what}: expected an object of at most {MAX_TERMINALS} terminals")
    for terminal, item in value.items():
        _checked(check_device_id, terminal, what)
        check(item, f"{what}.{terminal}")


def _authorization(value: Any, what: str) -> None:
    """The officials' authorization a zero or closing report carries (ledger.md, "Polls command")."""
    _fields(value, frozenset({"command", "nonce", "issued_at", "officials"}), what)
    if value["command"] not in ("open", "final"):
        _refuse(f"{what}.command: expected open or final")
    _checked(hex_bytes, value["nonce"], HASH_SIZE, f"{what}.nonce")
    _counter(value["issued_at"], f"{what}.issued_at")
    officials = value["officials"]
    if not isinstance(officials, list) or len(officials) != 2:
        _refuse(f"{what}.officials: expected the station manager's and a witness's signatures")
    for official in officials:
        _fields(official, frozenset({"function", "certificate_sha256", "signature"}), f"{what}.officials[]")
        if official["function"] not in ("station_manager", "witness"):
            _refuse(f"{what}.officials[].function: expected station_manager or witness")
        _checked(hex_bytes, official["certificate_sha256"], HASH_SIZE, f"{what}.officials[].certificate_sha256")
        signature = official["signature"]
        if not isinstance(signature, str) or not 2 <= len(signature) <= 1024:
            _refuse(f"{what}.officials[].signature: expected at most 512 bytes of hex")
        _checked(hex_bytes, signature, None, f"{what}.officials[].signature")


def _device_head(value: Any, what: str) -> None:
    """What the ledger held of an unreachable terminal at the final close: the ``sealed`` count
    and set ``commitment`` of its latest device statement (0 and the empty set's commitment when
    none arrived)."""
    _fields(value, frozenset({"sealed", "commitment"}), what)
    _counter(value["sealed"], f"{what}.sealed")
    _checked(hex_bytes, value["commitment"], HASH_SIZE, f"{what}.commitment")


def parse_statement(payload: bytes) -> dict[str, Any]:
    """A signed ledger statement as the ledger publishes it (canonical JSON, at most 64 KiB),
    checked by :func:`check_statement`; its signature is the reader's to check."""
    return check_statement(_document(payload, MAX_DOWN_BYTES, "statement"))


def parse_up(payload: bytes, station_id: str) -> UpMessage:
    """A hub's message; ``station_id`` is the one the broker vouches for (topic = CN).

    Total: any bytes give a message or :class:`protocol.errors.Refusal`. A batch must be
    canonical JSON; each entry's chain entry is parsed, its ballot must have exactly the
    sealed ballot's fields and its opening be null or an opening object (the checker parses
    both against the manifest), and each statement must have its documented shape.
    """
    data = _document(payload, MAX_MESSAGE_BYTES, "up message")
    kind = data.get("type") if isinstance(data, dict) else None
    fields = {"entries", "statements", "devices"} if kind == "batch" else set()
    data = _message(data, fields, ("hello", "batch"))
    if data["station_id"] != station_id:
        _refuse(f"message names station {data['station_id']} on station {station_id}'s topic")
    if kind == "hello":
        return Hello(station_id, data["request"])
    entries, statements = data["entries"], data["statements"]
    if not isinstance(entries, list) or len(entries) > MAX_BATCH_ENTRIES:
        _refuse(f"batch.entries: a list of at most {MAX_BATCH_ENTRIES}")
    if not isinstance(statements, list) or len(statements) > len(STATEMENT_TYPES):
        _refuse("batch.statements: a list of the station's latest signed statements")
    parsed = []
    for index, item in enumerate(entries):
        where = f"batch.entries[{index}]"
        _fields(item, frozenset({"entry", "ballot", "opening"}), where)
        entry = _checked(ChainEntry.from_json, item["entry"])
        _fields(item["ballot"], SEALED_BALLOT_FIELDS, f"{where}.ballot (a sealed ballot)")
        if item["opening"] is not None:
            _fields(item["opening"], OPENING_FIELDS, f"{where}.opening (null or an opening)")
        parsed.append(ForwardedEntry(entry, item["ballot"], item["opening"]))
    kinds = [check_statement(statement, f"batch.statements[{i}]")["type"] for i, statement in enumerate(statements)]
    if len(set(kinds)) != len(kinds):
        _refuse("batch.statements: at most one statement of each type")
    devices = data["devices"]
    if not isinstance(devices, list) or len(devices) > MAX_DEVICE_STATEMENTS:
        _refuse(f"batch.devices: a list of at most {MAX_DEVICE_STATEMENTS} device statements")
    device_statements = tuple(_checked(DeviceStatement.from_json, item) for item in devices)
    if len({statement.device_id for statement in device_statements}) != len(device_statements):
        _refuse("batch.devices: at most one statement per device")
    return Batch(station_id, data["request"], tuple(parsed), tuple(statements), device_statements)


def hello_payload(station_id: str, request: int) -> bytes:
    return canonical_bytes({"version": PROTOCOL_VERSION, "type": "hello", "station_id": station_id, "request": request})


def batch_payload(
    station_id: str,
    request: int,
    entries: list[ForwardedEntry],
    statements: list[dict],
    devices: list[DeviceStatement] | None = None,
) -> bytes:
    return canonical_bytes(
        {
            "version": PROTOCOL_VERSION,
            "type": "batch",
            "station_id": station_id,
            "request": request,
            "entries": [entry.to_json() for entry in entries],
            "statements": statements,
            "devices": [statement.to_json() for statement in devices or ()],
        }
    )


def parse_down(payload: bytes, station_id: str) -> DownMessage:
    """The centre's answer, as the hub reads it (total, like :func:`parse_up`)."""
    data = _document(payload, MAX_DOWN_BYTES, "down message")
    if isinstance(data, dict) and data.get("type") == "refused":
        data = _message(data, {"reason", "detail"}, ("refused",))
        if data["station_id"] != station_id:
            _refuse(f"refusal for station {data['station_id']}, expected {station_id}")
        reason, detail = data["reason"], data["detail"]
        if type(reason) is not str or reason not in REFUSAL_REASONS:
            _refuse(f"refused.reason: expected one of {', '.join(REFUSAL_REASONS)}")
        if type(detail) is not str or len(detail) > MAX_DETAIL:
            _refuse(f"refused.detail: expected a text of at most {MAX_DETAIL} characters")
        return Refusal(station_id, data["request"], reason, detail)
    data = _message(data, {"position", "head_hash", "checkpoint", "closing", "state"}, ("confirm",))
    if data["station_id"] != station_id:
        _refuse(f"confirm for station {data['station_id']}, expected {station_id}")
    closing = data["closing"]
    if closing is not None:
        _fields(closing, frozenset({"position", "check_ins"}), "confirm.closing")
        check_ins = closing["check_ins"]
        closing = ClosingSeen(
            _counter(closing["position"], "confirm.closing.position"),
            None if check_ins is None else _counter(check_ins, "confirm.closing.check_ins"),
        )
    checkpoint, state = data["checkpoint"], data["state"]
    if type(state) is not str or state not in STATION_STATES:
        _refuse(f"confirm.state: expected one of {', '.join(STATION_STATES)}")
    return Confirm(
        station_id,
        data["request"],
        ChainHead(
            _counter(data["position"], "confirm.position"),
            _checked(hex_bytes, data["head_hash"], HASH_SIZE, "confirm.head_hash"),
        ),
        None if checkpoint is None else _counter(checkpoint, "confirm.checkpoint"),
        closing,
        state,
    )
