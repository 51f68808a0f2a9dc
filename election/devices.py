"""Device statements: each terminal's signed count of the ballots it sealed and a commitment
to their set — completeness of a device's ballots without any order among them.

Record format 2 (docs/design-record-v2.md §3) removes a device's sequence number and previous
hash from its ballots, because they kept the casting order. Instead a terminal signs, with
every ballot it sends, how many ballots it has sealed and sent so far (cast and spoiled) and
``SHA-256("ps-device-set-v2" ‖ h_1 ‖ … ‖ h_m)`` over their ballot hashes sorted ascending. The
ledger keeps only the latest statement per device; the final one is published as
``device_statements/<device_id>.json``. Whoever holds the record checks that the device's
ballots in it are exactly ``sealed`` many and hash to ``commitment``: a dropped, added or
replaced ballot fails, whatever order the ballots were chained in.

A flat hash over the sorted set, not a Merkle tree: nobody needs a membership proof for one
ballot, and the flat form is easy to check by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.ballot import DeviceSigner
from election.chain import verify_document
from election.encoding import HASH_SIZE, canonical_bytes, check_version, hex_bytes, strict_int
from election.errors import FormatError
from election.ids import check_device_id

STATEMENT_VERSION = 2
STATEMENT_TYPE = "device_statement"
SET_DOMAIN = b"ps-device-set-v2"
MAX_SEALED = 2**40
_FIELDS = frozenset({"version", "type", "device_id", "base_hash", "sealed", "commitment", "signature"})


def set_commitment(ballot_hashes: Iterable[bytes]) -> bytes:
    """The commitment to a set of ballot hashes: SHA-256 over the domain and the sorted hashes.

    Raises FormatError for a repeated hash (a set has none) or a hash of the wrong size.
    """
    ordered = sorted(ballot_hashes)
    digest = hashlib.sha256(SET_DOMAIN)
    previous = b""
    for ballot_hash in ordered:
        if len(ballot_hash) != HASH_SIZE:
            raise FormatError("a ballot hash is 32 bytes")
        if ballot_hash == previous:
            raise FormatError("a device's ballot set holds each ballot once")
        digest.update(ballot_hash)
        previous = ballot_hash
    return digest.digest()


@dataclass(frozen=True, slots=True)
class DeviceStatement:
    """A terminal's signed statement: ``sealed`` ballots so far, with this set commitment."""

    device_id: str
    base_hash: bytes
    sealed: int
    commitment: bytes
    signature: bytes

    @staticmethod
    def body(device_id: str, base_hash: bytes, sealed: int, commitment: bytes) -> dict[str, Any]:
        return {
            "version": STATEMENT_VERSION,
            "type": STATEMENT_TYPE,
            "device_id": device_id,
            "base_hash": base_hash.hex(),
            "sealed": sealed,
            "commitment": commitment.hex(),
        }

    @classmethod
    def make(cls, signer: DeviceSigner, base_hash: bytes, ballot_hashes: Iterable[bytes]) -> DeviceStatement:
        """Sign the statement for the set of every ballot the device has sealed and sent."""
        hashes = list(ballot_hashes)
        commitment = set_commitment(hashes)
        body = cls.body(signer.device_id, base_hash, len(hashes), commitment)
        return cls(signer.device_id, base_hash, len(hashes), commitment, signer.sign(canonical_bytes(body)))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.body(self.device_id, self.base_hash, self.sealed, self.commitment),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> DeviceStatement:
        """Parse a statement's shape strictly (its signature is checked by :meth:`verify`)."""
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise FormatError(f"device statement: expected exactly the fields {sorted(_FIELDS)}")
        check_version(data, STATEMENT_VERSION, "device statement")
        if data["type"] != STATEMENT_TYPE:
            raise FormatError(f'device statement: type must be "{STATEMENT_TYPE}"')
        return cls(
            check_device_id(data["device_id"]),
            hex_bytes(data["base_hash"], HASH_SIZE, "device statement.base_hash"),
            strict_int(data["sealed"], "device statement.sealed", minimum=1, maximum=MAX_SEALED),
            hex_bytes(data["commitment"], HASH_SIZE, "device statement.commitment"),
            hex_bytes(data["signature"], 64, "device statement.signature"),
        )

    def verify(self, device_key: Ed25519PublicKey) -> None:
        """Raise SignatureError unless the device's key signed this statement."""
        verify_document(self.to_json(), device_key)

    def matches(self, ballot_hashes: Iterable[bytes]) -> bool:
        """Whether a device's ballots found in a record are exactly the stated set."""
        hashes = list(ballot_hashes)
        try:
            return len(hashes) == self.sealed and set_commitment(hashes) == self.commitment
        except FormatError:
            return False
