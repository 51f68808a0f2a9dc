"""The station hash chain of sorted batches: entries, tracking codes and checkpoints, free of I/O.

Record format 2 (docs/design-record-v2.md §2): the ledger holds arriving ballots in an
unordered pool and commits them in **batches**: the whole pool at once, sorted by ballot hash,
at least the manifest's ``batch_min`` ballots while the polls are open. Each ballot becomes one
chain entry whose hash covers its position, its batch number, the previous entry's hash and the
ballot's hash, so dropping, inserting, reordering or altering a chained ballot changes every
later hash. Within a batch the positions follow ascending ballot hash, so a position says which
batch a ballot fell in and nothing about when it was cast. The chain starts from a genesis hash
bound to the election and the station, so two stations' chains can never be spliced.

Tracking codes derive from the ballot itself (not its position), so the booth shows one at once.

The hub, the central gateway and the independent verifier share this module; the byte-level
format is in ``docs/ledger.md`` and ``docs/formats.md``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election.encoding import HASH_SIZE, canonical_bytes, check_version, hash_value, hex_bytes, strict_int
from election.errors import ElectionError, FormatError, SignatureError
from election.ids import check_station_id
from election.signatures import ed25519_valid

CHAIN_VERSION = 2
GENESIS_DOMAIN = "polling-station/chain-genesis/v2"
ENTRY_KINDS = ("cast", "spoiled", "late")
"""``cast`` ballots are counted; ``spoiled`` ones were challenged by the voter and are not;
``late`` ones are cast ballots whose token the roll issued before the polls closed but which
reached the ledger only after the final close (a booth that was offline): they are counted like
``cast`` and reported apart (docs/ledger.md, "Closing the polls")."""
COUNTED_KINDS = ("cast", "late")

TRACKING_DOMAIN = b"ps-tracking-v2"
TRACKING_CODE_BYTES = 10
"""80 bits of SHA-256(domain ‖ ballot hash): 16 characters, shown to the voter in four groups."""
TRACKING_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""32 symbols without I, O, 0 and 1, which people confuse with each other."""
NEVER_IN_A_CODE = frozenset("IO01")


class ChainError(ElectionError):
    """An entry does not extend the chain, or a whole chain does not verify."""


def genesis_hash(base_hash: bytes, station_id: str) -> bytes:
    """The ``prev_hash`` of a station's first entry: binds the chain to election and station."""
    return hash_value({"domain": GENESIS_DOMAIN, "base_hash": base_hash.hex(), "station_id": station_id})


def tracking_code(ballot_hash: bytes) -> str:
    """The voter's handle on a ballot: ``XXXX-XXXX-XXXX-XXXX`` from the ballot's own hash."""
    digest = hashlib.sha256(TRACKING_DOMAIN + ballot_hash).digest()[:TRACKING_CODE_BYTES]
    number = int.from_bytes(digest, "big")
    symbols = TRACKING_CODE_BYTES * 8 // 5
    text = "".join(TRACKING_ALPHABET[(number >> (5 * (symbols - 1 - i))) & 31] for i in range(symbols))
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


class TrackingCodeTypo(ValueError):
    """What a voter typed holds characters a tracking code never has; ``characters`` names them."""

    def __init__(self, characters: str) -> None:
        super().__init__(f"a tracking code never contains {', '.join(characters)}")
        self.characters = characters


def normalise_tracking_code(code: str) -> str:
    """Accept what a voter types: any case, spaces, hyphens, dashes (the IME's ー too) and
    full-width forms (NFKC folds them to ASCII); raise :class:`TrackingCodeTypo` naming any of
    I, O, 0, 1 rather than answering "not in this record".

    The same rule as the published site's tracker (``election/site``), so a code found there is
    found by ``election lookup`` and ``gateway lookup`` too.
    """
    folded = unicodedata.normalize("NFKC", code).upper()
    letters = "".join(ch for ch in folded if ch.isascii() and ch.isalnum())
    wrong = "".join(sorted({ch for ch in letters if ch in NEVER_IN_A_CODE}))
    if wrong:
        raise TrackingCodeTypo(wrong)
    return "-".join(letters[i : i + 4] for i in range(0, len(letters), 4))


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
    batch: int
    prev_hash: bytes
    ballot_hash: bytes
    kind: str = "cast"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CHAIN_VERSION,
            "position": self.position,
            "batch": self.batch,
            "prev_hash": self.prev_hash.hex(),
            "ballot_hash": self.ballot_hash.hex(),
            "kind": self.kind,
        }

    @property
    def entry_hash(self) -> bytes:
        return hash_value(self.to_json())

    @property
    def tracking_code(self) -> str:
        return tracking_code(self.ballot_hash)

    @classmethod
    def from_json(cls, data: Any) -> ChainEntry:
        fields = {"version", "position", "batch", "prev_hash", "ballot_hash", "kind"}
        data = _fields(data, "chain entry", fields)
        if type(data["kind"]) is not str or data["kind"] not in ENTRY_KINDS:
            raise FormatError(f"chain entry: kind must be one of {list(ENTRY_KINDS)}")
        return cls(
            _position(data["position"], "chain entry.position", 1),
            _position(data["batch"], "chain entry.batch", 1),
            hex_bytes(data["prev_hash"], HASH_SIZE, "chain entry.prev_hash"),
            hex_bytes(data["ballot_hash"], HASH_SIZE, "chain entry.ballot_hash"),
            data["kind"],
        )


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain stands: the last position (0 when empty), its entry hash, and the last
    batch (0 when empty), which ends at ``position``: a chain grows by whole batches."""

    position: int
    entry_hash: bytes
    batch: int = 0


@dataclass(frozen=True, slots=True)
class PoolBallot:
    """A ballot waiting in the ledger's pool: its hash and entry kind, nothing else."""

    ballot_hash: bytes
    kind: str


class ChainState:
    """The head of a chain, which grows by whole sorted batches.

    :meth:`next_batch` says what a pool becomes; :meth:`append` accepts exactly the entries that
    extend the chain, one at a time (the centre and the verifier replay a chain this way), and
    refuses an entry out of hash order within its batch.
    """

    def __init__(self, genesis: bytes, head: ChainHead | None = None, last_ballot: bytes | None = None) -> None:
        self.genesis = genesis
        self.head = head or ChainHead(0, genesis, 0)
        self._batch_last = last_ballot
        """The head entry's ballot hash, which the next entry of the same batch must exceed
        (give it when resuming a chain whose last batch may continue, as the centre does)."""

    def next_batch(self, pool: Iterable[PoolBallot]) -> list[ChainEntry]:
        """The entries that commit a whole pool as the next batch, sorted by ballot hash (the
        state does not change). The caller appends them in one transaction."""
        ordered = sorted(pool, key=lambda ballot: ballot.ballot_hash)
        batch = self.head.batch + 1
        entries: list[ChainEntry] = []
        prev_hash, position = self.head.entry_hash, self.head.position
        for ballot in ordered:
            position += 1
            entry = ChainEntry(position, batch, prev_hash, ballot.ballot_hash, ballot.kind)
            entries.append(entry)
            prev_hash = entry.entry_hash
        return entries

    def append(self, entry: ChainEntry) -> bytes:
        """Extend the chain by ``entry``; returns its hash, raises ChainError if it does not fit."""
        if entry.position != self.head.position + 1:
            raise ChainError(f"entry at position {entry.position} does not follow position {self.head.position}")
        if entry.prev_hash != self.head.entry_hash:
            raise ChainError(f"entry {entry.position} does not link to the previous entry's hash")
        if entry.kind not in ENTRY_KINDS:
            raise ChainError(f"entry {entry.position} has unknown kind {entry.kind!r}")
        if entry.batch == self.head.batch and self.head.position > 0:
            if self._batch_last is not None and entry.ballot_hash <= self._batch_last:
                raise ChainError(f"entry {entry.position} is out of ballot-hash order within batch {entry.batch}")
        elif entry.batch != self.head.batch + 1:
            raise ChainError(f"entry {entry.position} is in batch {entry.batch}, after batch {self.head.batch}")
        entry_hash = entry.entry_hash
        self.head = ChainHead(entry.position, entry_hash, entry.batch)
        self._batch_last = entry.ballot_hash
        return entry_hash


def batch_sizes(entries: Sequence[ChainEntry]) -> list[tuple[int, int]]:
    """``(batch, last position)`` of each batch of a chain, in chain order."""
    ends: list[tuple[int, int]] = []
    for entry in entries:
        if ends and ends[-1][0] == entry.batch:
            ends[-1] = (entry.batch, entry.position)
        else:
            ends.append((entry.batch, entry.position))
    return ends


def verify_chain(
    genesis: bytes,
    entries: Iterable[ChainEntry],
    *,
    batch_min: int,
    closed_position: int | None = None,
) -> list[bytes]:
    """Check a whole chain from its genesis; returns every entry hash (index 0 = position 1).

    Beyond the links: within each batch the ballot hashes ascend strictly; no ballot repeats;
    every batch holds at least ``batch_min`` entries unless it ends at or after
    ``closed_position`` (the batch committed at the final close and late ballots after it);
    ``closed_position``, when given, is the end of a batch. With ``closed_position`` None (the
    polls not yet closed) every batch must hold ``batch_min`` entries. Raises ChainError naming
    the first fault.
    """
    state = ChainState(genesis)
    hashes: list[bytes] = []
    seen: set[bytes] = set()
    listed: list[ChainEntry] = []
    for entry in entries:
        hashes.append(state.append(entry))
        if entry.ballot_hash in seen:
            raise ChainError(f"entry {entry.position} repeats an earlier ballot")
        seen.add(entry.ballot_hash)
        listed.append(entry)
    start = 0
    ends = batch_sizes(listed)
    if closed_position is not None and closed_position not in {0, *(end for _, end in ends)}:
        raise ChainError(f"the polls closed at position {closed_position}, which is not the end of a batch")
    for batch, end in ends:
        size = end - start
        small_allowed = closed_position is not None and end >= closed_position
        if size < batch_min and not small_allowed:
            raise ChainError(f"batch {batch} holds {size} ballots, fewer than the election's {batch_min}")
        start = end
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
    if not ed25519_valid(key, signature, canonical_bytes(body)):
        raise SignatureError("the document's signature does not verify")
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
