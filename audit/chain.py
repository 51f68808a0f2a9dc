"""Sans-I/O core of the audit log: building signed, hash-chained entries and verifying them.

An entry is one line of canonical JSON (`election.encoding.canonical_bytes`) ending in
``\\n``. Every entry is signed on its own with the device's Ed25519 key, so a log cut at any
point (a power cut, an export taken while the service runs) is still fully verifiable and
an attacker cannot forge or alter a single entry without the key. Each entry names the hash
of the previous one and carries a sequence number, so removing, reordering or inserting an
entry breaks the chain at a position the verifier reports. The wall-clock time is kept only
to the minute: precise enough for an incident report, too coarse to pair a voter seen at a
booth with a ballot. Format: docs/audit-log.md.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import AuditError, ForbiddenEvent
from audit.events import IDENTIFIER, check_event
from election.encoding import canonical_bytes, parse_json, sha256
from election.errors import FormatError

FORMAT_VERSION = 1
SIGNATURE_DOMAIN = b"polling-station/audit-entry/v1\n"
GENESIS_HASH = bytes(32)
MAX_LINE_BYTES = 4096
ENTRY_KEYS = frozenset({"v", "log", "seq", "prev", "time", "kind", "data", "sig"})
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$")
_HEX32 = re.compile(r"^[0-9a-f]{64}$")
_HEX64 = re.compile(r"^[0-9a-f]{128}$")


class EntryFormatError(AuditError):
    """A line that is not a well-formed audit entry."""


def minute_of(now: dt.datetime) -> str:
    """The entry time: UTC, to the minute (see the module docstring for why no finer)."""
    if now.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def public_key_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@dataclass(frozen=True)
class AuditEntry:
    log: str
    seq: int
    prev: bytes
    time: str
    kind: str
    data: Mapping[str, Any]
    signature: bytes

    def body(self) -> dict[str, Any]:
        """Everything the signature covers: the entry without its signature."""
        return {
            "v": FORMAT_VERSION,
            "log": self.log,
            "seq": self.seq,
            "prev": self.prev.hex(),
            "time": self.time,
            "kind": self.kind,
            "data": dict(self.data),
        }

    def encoded(self) -> bytes:
        return canonical_bytes({**self.body(), "sig": self.signature.hex()})

    def line(self) -> bytes:
        return self.encoded() + b"\n"

    @property
    def hash(self) -> bytes:
        """What the next entry's ``prev`` names: SHA-256 of the canonical entry, signature included."""
        return sha256(self.encoded())

    def signs_with(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, SIGNATURE_DOMAIN + canonical_bytes(self.body()))
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, line: bytes) -> AuditEntry:
        """Parse one line (without its newline); refuse anything not byte-for-byte canonical."""
        try:
            value = parse_json(line, max_size=MAX_LINE_BYTES)
        except FormatError as error:
            raise EntryFormatError(str(error)) from None
        if not isinstance(value, dict) or set(value) != ENTRY_KEYS:
            raise EntryFormatError(f"an entry is an object with exactly the keys {sorted(ENTRY_KEYS)}")
        if value["v"] != FORMAT_VERSION:
            raise EntryFormatError(f"format version {value['v']!r} is not {FORMAT_VERSION}")
        seq = value["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise EntryFormatError("seq must be a non-negative integer")
        for key, pattern in (("prev", _HEX32), ("sig", _HEX64), ("time", _TIME)):
            if not isinstance(value[key], str) or not pattern.match(value[key]):
                raise EntryFormatError(f"{key} is malformed")
        try:
            IDENTIFIER.check(value["log"], "log")
            if not isinstance(value["kind"], str):
                raise ForbiddenEvent("kind must be a string")
            check_event(value["kind"], value["data"])
        except ForbiddenEvent as error:
            raise EntryFormatError(str(error)) from None
        entry = cls(
            value["log"], seq, bytes.fromhex(value["prev"]), value["time"], value["kind"],
            value["data"], bytes.fromhex(value["sig"]),
        )  # fmt: skip
        if entry.encoded() != line:
            raise EntryFormatError("the line is not in canonical form")
        return entry


@dataclass(frozen=True)
class ChainHead:
    """Where the chain stands: the next sequence number and the hash the next entry must name."""

    next_seq: int = 0
    last_hash: bytes = GENESIS_HASH


class AuditChain:
    """The writer's side: builds the next signed entry; the shell stores it, then `accept`s it."""

    def __init__(self, log_id: str, key: Ed25519PrivateKey, head: ChainHead = ChainHead()) -> None:
        IDENTIFIER.check(log_id, "log id")
        self.log_id = log_id
        self._key = key
        self.head = head

    def build(self, kind: str, data: Mapping[str, Any], now: dt.datetime) -> AuditEntry:
        """The next entry; raises `ForbiddenEvent` for anything off the allow-list."""
        check_event(kind, data)
        unsigned = AuditEntry(self.log_id, self.head.next_seq, self.head.last_hash, minute_of(now), kind, data, b"")
        signature = self._key.sign(SIGNATURE_DOMAIN + canonical_bytes(unsigned.body()))
        return replace(unsigned, signature=signature)

    def genesis(self, now: dt.datetime) -> AuditEntry:
        public_key = public_key_hex(self._key.public_key())
        return self.build("log_created", {"log": self.log_id, "public_key": public_key}, now)

    def accept(self, entry: AuditEntry) -> None:
        """Advance past an entry once it is durably stored."""
        if entry.seq != self.head.next_seq or entry.prev != self.head.last_hash:
            raise AuditError(f"entry {entry.seq} does not follow the chain head")
        self.head = ChainHead(entry.seq + 1, entry.hash)


@dataclass(frozen=True)
class Problem:
    """One place where the log does not verify. ``line`` counts from 1 in the file."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Verification:
    entries: int
    head: ChainHead
    log_id: str | None
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_lines(lines: Iterable[bytes], key: Ed25519PublicKey, expected_head: bytes | None = None) -> Verification:
    """Check every entry: format, signature, sequence, link to the previous entry, one log id.

    Each line is checked against its predecessor only, so one removed, altered, reordered or
    inserted entry is reported where it happened and the rest of the log still verifies. A log
    cut short at the end cannot be told from a shorter log; pass ``expected_head`` (an entry
    hash written down earlier, e.g. in the closing report) to prove nothing was cut.
    """
    problems: list[Problem] = []
    expected_seq: int | None = 0
    expected_prev: bytes | None = GENESIS_HASH
    log_id: str | None = None
    head = ChainHead()
    count = 0
    seen_expected_head = False
    for number, line in enumerate(lines, start=1):
        count += 1
        try:
            entry = AuditEntry.parse(line)
        except EntryFormatError as error:
            problems.append(Problem(number, f"not a valid entry: {error}"))
            expected_seq = expected_prev = None
            continue
        where = f"entry seq {entry.seq}"
        if not entry.signs_with(key):
            problems.append(Problem(number, f"{where}: signature does not verify (altered or forged entry)"))
        if expected_seq is not None and entry.seq != expected_seq:
            gap = entry.seq - expected_seq
            if gap > 0:
                what = f"{gap} entr{'y' if gap == 1 else 'ies'} missing before it"
            else:
                what = "out of order or duplicated"
            problems.append(Problem(number, f"{where}: expected seq {expected_seq}, {what}"))
        if expected_prev is not None and entry.prev != expected_prev:
            problems.append(Problem(number, f"{where}: does not link to the previous line's hash"))
        if number == 1 and (entry.kind != "log_created" or entry.data.get("public_key") != public_key_hex(key)):
            problems.append(Problem(number, "the log does not start with log_created for this key"))
        if log_id is None:
            log_id = entry.log
        elif entry.log != log_id:
            problems.append(Problem(number, f"{where}: belongs to log {entry.log!r}, not {log_id!r}"))
        expected_seq, expected_prev = entry.seq + 1, entry.hash
        head = ChainHead(entry.seq + 1, entry.hash)
        seen_expected_head = seen_expected_head or entry.hash == expected_head
    if count == 0:
        problems.append(Problem(1, "the log is empty"))
    if expected_head is not None and not seen_expected_head:
        problems.append(Problem(count + 1, f"entry {expected_head.hex()} is not in the log: entries cut from the end"))
    return Verification(count, head, log_id, tuple(problems))
