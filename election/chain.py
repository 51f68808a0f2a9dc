"""The station hash chain: entries, tracking codes and signed checkpoints, free of I/O.

Every sealed ballot a station accepts becomes one chain entry. The entry's hash covers its
position, the previous entry's hash and the ballot's hash, so dropping, inserting, reordering
or altering an accepted ballot changes every later hash. The chain starts from a genesis hash
bound to the election and the station, so two stations' chains can never be spliced.

Entries carry no timestamp: the only order the chain keeps is the order ballots were cast,
and nothing in it can be matched against the order voters checked in at the roll.

The hub, the central gateway and the independent verifier share this module; the byte-level
format is in ``docs/ledger.md``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election.encoding import HASH_SIZE, canonical_bytes, check_version, hash_value, hex_bytes, strict_int
from election.errors import ElectionError, FormatError, SignatureError
from election.ids import check_station_id

CHAIN_VERSION = 1
GENESIS_DOMAIN = "polling-station/chain-genesis/v1"
ENTRY_KINDS = ("cast", "spoiled", "late")
"""``cast`` ballots are counted; ``spoiled`` ones were challenged by the voter and are not;
``late`` ones are cast ballots whose token the roll issued before the polls closed but which
reached the ledger only after the final close (a booth that was offline): they are counted like
``cast`` and reported apart (docs/ledger.md, "Closing the polls")."""
COUNTED_KINDS = ("cast", "late")
TRACKING_CODE_BYTES = 10
"""80 bits of the entry hash: 16 base32 characters, shown to the voter in four groups."""


class ChainError(ElectionError):
    """An entry does not extend the chain, or a whole chain does not verify."""


def genesis_hash(base_hash: bytes, station_id: str) -> bytes:
    """The ``prev_hash`` of a station's first entry: binds the chain to election and station."""
    return hash_value({"domain": GENESIS_DOMAIN, "base_hash": base_hash.hex(), "station_id": station_id})


def tracking_code(entry_hash: bytes) -> str:
    """A voter-friendly handle on an entry: ``ABCD-EFGH-IJKL-MNOP`` (RFC 4648 base32)."""
    text = base64.b32encode(entry_hash[:TRACKING_CODE_BYTES]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def ballot_reference(ballot_hash: bytes) -> str:
    """What the booth shows before the ledger confirms a ballot, in the form of a tracking code
    but from the ballot's own hash (known at sealing); ``election lookup`` finds either."""
    return tracking_code(ballot_hash)


def _position(value: Any, what: str, minimum: int) -> int:
    return strict_int(value, what, minimum=minimum)


def _fields(data: Any, what: str, fields: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != fields:
        raise FormatError(f"{what}: expected exactly the fields {sorted(fields)}")
    check_version(data, CHAIN_VERSION, what)
    return data


@dataclass(frozen=True, slots=True)
class ChainEntry:
    position: int
    prev_hash: bytes
    ballot_hash: bytes
    kind: str = "cast"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CHAIN_VERSION,
            "position": self.position,
            "prev_hash": self.prev_hash.hex(),
            "ballot_hash": self.ballot_hash.hex(),
            "kind": self.kind,
        }

    @property
    def entry_hash(self) -> bytes:
        return hash_value(self.to_json())

    @property
    def tracking_code(self) -> str:
        return tracking_code(self.entry_hash)

    @classmethod
    def from_json(cls, data: Any) -> ChainEntry:
        fields = {"version", "position", "prev_hash", "ballot_hash", "kind"}
        data = _fields(data, "chain entry", fields)
        if type(data["kind"]) is not str or data["kind"] not in ENTRY_KINDS:
            raise FormatError(f"chain entry: kind must be one of {list(ENTRY_KINDS)}")
        return cls(
            _position(data["position"], "chain entry.position", 1),
            hex_bytes(data["prev_hash"], HASH_SIZE, "chain entry.prev_hash"),
            hex_bytes(data["ballot_hash"], HASH_SIZE, "chain entry.ballot_hash"),
            data["kind"],
        )


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain stands: the last position (0 when empty) and its entry hash."""

    position: int
    entry_hash: bytes


class ChainState:
    """The head of a chain, which accepts exactly the entry that extends it."""

    def __init__(self, genesis: bytes, head: ChainHead | None = None) -> None:
        self.genesis = genesis
        self.head = head or ChainHead(0, genesis)

    def next_entry(self, ballot_hash: bytes, kind: str = "cast") -> ChainEntry:
        """The entry that would record ``ballot_hash`` next (the state does not change)."""
        return ChainEntry(self.head.position + 1, self.head.entry_hash, ballot_hash, kind)

    def append(self, entry: ChainEntry) -> bytes:
        """Extend the chain by ``entry``; returns its hash, raises ChainError if it does not fit."""
        if entry.position != self.head.position + 1:
            raise ChainError(f"entry at position {entry.position} does not follow position {self.head.position}")
        if entry.prev_hash != self.head.entry_hash:
            raise ChainError(f"entry {entry.position} does not link to the previous entry's hash")
        if entry.kind not in ENTRY_KINDS:
            raise ChainError(f"entry {entry.position} has unknown kind {entry.kind!r}")
        entry_hash = entry.entry_hash
        self.head = ChainHead(entry.position, entry_hash)
        return entry_hash


def verify_chain(genesis: bytes, entries: Iterable[ChainEntry]) -> list[bytes]:
    """Check a whole chain from its genesis; returns every entry hash (index 0 = position 1).

    Raises ChainError naming the first gap, fork or repeated ballot.
    """
    state = ChainState(genesis)
    hashes: list[bytes] = []
    seen: set[bytes] = set()
    for entry in entries:
        hashes.append(state.append(entry))
        if entry.ballot_hash in seen:
            raise ChainError(f"entry {entry.position} repeats an earlier ballot")
        seen.add(entry.ballot_hash)
    return hashes


def sign_document(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A signed statement: the body plus an Ed25519 signature over its canonical JSON."""
    if "signature" in body:
        raise FormatError("a document to sign must not already carry a signature")
    return {**body, "signature": key.sign(canonical_bytes(body)).hex()}


def verify_document(document: Any, key: Ed25519PublicKey) -> dict[str, Any]:
    """Return a signed statement's body after checking its signature (SignatureError if bad)."""
    if not isinstance(document, dict) or "signature" not in document:
        raise FormatError("signed document: expected an object with a signature")
    body = {name: value for name, value in document.items() if name != "signature"}
    signature = hex_bytes(document["signature"], 64, "signed document.signature")
    try:
        key.verify(signature, canonical_bytes(body))
    except InvalidSignature:
        raise SignatureError("the document's signature does not verify") from None
    return body


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The ledger's signed statement that its chain had this head."""

    station_id: str
    base_hash: bytes
    head: ChainHead

    def body_json(self) -> dict[str, Any]:
        return {
            "version": CHAIN_VERSION,
            "type": "checkpoint",
            "station_id": self.station_id,
            "base_hash": self.base_hash.hex(),
            "position": self.head.position,
            "head_hash": self.head.entry_hash.hex(),
        }

    def sign(self, key: Ed25519PrivateKey) -> dict[str, Any]:
        return sign_document(self.body_json(), key)

    @classmethod
    def from_signed(cls, document: Any, key: Ed25519PublicKey) -> Checkpoint:
        """Parse a signed checkpoint: its shape first (a clear reason), then its signature."""
        fields = {"version", "type", "station_id", "base_hash", "position", "head_hash", "signature"}
        _fields(document, "checkpoint", fields)
        body = verify_document(document, key)
        if body["type"] != "checkpoint":
            raise FormatError('checkpoint: type must be "checkpoint"')
        head = ChainHead(
            _position(body["position"], "checkpoint.position", 0),
            hex_bytes(body["head_hash"], HASH_SIZE, "checkpoint.head_hash"),
        )
        station_id = check_station_id(body["station_id"], "checkpoint.station_id")
        return cls(station_id, hex_bytes(body["base_hash"], 32, "checkpoint.base_hash"), head)

    def matches(self, genesis: bytes, entry_hashes: list[bytes]) -> bool:
        """Whether a verified chain (its entry hashes from position 1) had this head."""
        position = self.head.position
        if position > len(entry_hashes):
            return False
        expected = genesis if position == 0 else entry_hashes[position - 1]
        return expected == self.head.entry_hash
