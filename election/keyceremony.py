"""Key ceremony for ``n`` trustees with threshold ``k`` (Feldman verifiable secret sharing).

Each trustee ``i`` (index 1..n) picks a random polynomial ``P_i`` of degree ``k − 1`` and
publishes commitments ``K_i,j = a_i,j · G`` to its coefficients, each with a Schnorr proof
of knowledge. It sends ``P_i(ℓ)`` to every other trustee ``ℓ``, encrypted to ``ℓ``'s X25519
exchange key (X25519 + HKDF-SHA256 + ChaCha20-Poly1305, bound to the election, sender and
recipient); the recipient checks the share against the public commitments.

The joint election key is ``K = Σ_i K_i,0``. Trustee ``ℓ``'s secret share is
``s_ℓ = Σ_i P_i(ℓ)``, and anyone can compute its public share ``S_ℓ = s_ℓ · G`` from the
commitments alone, so every partial decryption can be checked. Any ``k`` shares recover
``K``'s secret by Lagrange interpolation at 0 (applied to decryptions, never assembled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from election.encoding import canonical_bytes, check_version, hex_bytes, strict_int
from election.errors import DecryptionError, ElectionError, FormatError
from election.group import (
    IDENTITY,
    ORDER,
    G,
    Point,
    point_from_hex,
    random_scalar,
    scalar_from_hex,
    scalar_to_hex,
)
from election.ids import check_trustee_id
from election.proofs import ChaumPedersenProof, SchnorrProof

TRUSTEE_VERSION = 1
MAX_TRUSTEE_INDEX = 2**16 - 1


class CeremonyError(ElectionError):
    """A trustee's published data or a received share does not check out."""


def commitment_statement(base_hash: bytes, trustee_id: str, degree: int) -> dict[str, Any]:
    return {"base_hash": base_hash.hex(), "trustee": trustee_id, "coefficient": degree}


@dataclass(frozen=True, slots=True)
class TrusteePublic:
    """What a trustee publishes: commitments with proofs, and its share-exchange key."""

    trustee_id: str
    index: int
    commitments: tuple[Point, ...]
    proofs: tuple[SchnorrProof, ...]
    exchange_key: bytes

    def problems(self, base_hash: bytes, quorum: int) -> list[str]:
        found = []
        if len(self.commitments) != quorum or len(self.proofs) != quorum:
            found.append(f"{self.trustee_id}: expected {quorum} commitments and proofs")
        for degree, (commitment, proof) in enumerate(zip(self.commitments, self.proofs, strict=False)):
            statement = commitment_statement(base_hash, self.trustee_id, degree)
            if not proof.verify(commitment, statement):
                found.append(f"{self.trustee_id}: proof of coefficient {degree} does not verify")
        return found

    def evaluate_commitments(self, at: int) -> Point:
        """``P_i(at) · G`` computed from the public commitments (Horner's rule)."""
        result = IDENTITY
        for commitment in reversed(self.commitments):
            result = at * result + commitment
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "version": TRUSTEE_VERSION,
            "trustee_id": self.trustee_id,
            "index": self.index,
            "commitments": [c.hex() for c in self.commitments],
            "proofs": [p.to_json() for p in self.proofs],
            "exchange_key": self.exchange_key.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> TrusteePublic:
        fields = {"version", "trustee_id", "index", "commitments", "proofs", "exchange_key"}
        if not isinstance(data, dict) or set(data) != fields:
            raise FormatError(f"trustee: expected exactly the fields {sorted(fields)}")
        check_version(data, TRUSTEE_VERSION, "trustee")
        trustee_id = check_trustee_id(data["trustee_id"])
        index = strict_int(data["index"], f"{trustee_id}.index", minimum=1, maximum=MAX_TRUSTEE_INDEX)
        commitments, proofs = data["commitments"], data["proofs"]
        if not isinstance(commitments, list) or not isinstance(proofs, list):
            raise FormatError(f"{trustee_id}: commitments and proofs must be lists")
        if not 1 <= len(commitments) <= MAX_TRUSTEE_INDEX or len(proofs) != len(commitments):
            raise FormatError(f"{trustee_id}: 1 to {MAX_TRUSTEE_INDEX} commitments, each with one proof")
        return cls(
            trustee_id,
            index,
            tuple(point_from_hex(c, f"{trustee_id}.commitments[{j}]") for j, c in enumerate(commitments)),
            tuple(SchnorrProof.from_json(p, f"{trustee_id}.proofs[{j}]") for j, p in enumerate(proofs)),
            hex_bytes(data["exchange_key"], 32, f"{trustee_id}.exchange_key"),
        )


@dataclass(frozen=True, slots=True)
class EncryptedShare:
    """``P_sender(recipient)``, encrypted so only the recipient can read it."""

    sender: str
    recipient: str
    ephemeral_key: bytes
    ciphertext: bytes


def _share_key(shared_secret: bytes, base_hash: bytes, sender: str, recipient: str) -> bytes:
    info = canonical_bytes({"domain": "share", "base_hash": base_hash.hex(), "from": sender, "to": recipient})
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


class Trustee:
    """One trustee's secrets during and after the ceremony. Never serialised to the record."""

    def __init__(
        self,
        trustee_id: str,
        index: int,
        quorum: int,
        base_hash: bytes,
        *,
        coefficients: Sequence[int] | None = None,
        exchange_private: X25519PrivateKey | None = None,
    ) -> None:
        self.trustee_id = trustee_id
        self.index = index
        self.quorum = quorum
        self.base_hash = base_hash
        self._coefficients = list(coefficients or [random_scalar() for _ in range(quorum)])
        self._exchange = exchange_private or X25519PrivateKey.generate()
        self._received: dict[str, int] = {}
        self.secret_share: int | None = None

    def public(self) -> TrusteePublic:
        commitments = tuple(a * G for a in self._coefficients)
        proofs = tuple(
            SchnorrProof.prove(a, c, commitment_statement(self.base_hash, self.trustee_id, j))
            for j, (a, c) in enumerate(zip(self._coefficients, commitments, strict=True))
        )
        return TrusteePublic(
            self.trustee_id, self.index, commitments, proofs, self._exchange.public_key().public_bytes_raw()
        )

    def _evaluate(self, at: int) -> int:
        result = 0
        for coefficient in reversed(self._coefficients):
            result = (result * at + coefficient) % ORDER
        return result

    def share_for(self, recipient: TrusteePublic) -> EncryptedShare:
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.exchange_key))
        key = _share_key(shared, self.base_hash, self.trustee_id, recipient.trustee_id)
        plaintext = scalar_to_hex(self._evaluate(recipient.index)).encode()
        return EncryptedShare(
            self.trustee_id,
            recipient.trustee_id,
            ephemeral.public_key().public_bytes_raw(),
            ChaCha20Poly1305(key).encrypt(bytes(12), plaintext, None),
        )

    def receive(self, share: EncryptedShare, sender: TrusteePublic) -> None:
        """Decrypt and check a share against the sender's commitments; raise if it is bad."""
        if share.recipient != self.trustee_id or share.sender != sender.trustee_id:
            raise CeremonyError(f"share from {share.sender} is not addressed to {self.trustee_id}")
        shared = self._exchange.exchange(X25519PublicKey.from_public_bytes(share.ephemeral_key))
        key = _share_key(shared, self.base_hash, sender.trustee_id, self.trustee_id)
        try:
            value = scalar_from_hex(ChaCha20Poly1305(key).decrypt(bytes(12), share.ciphertext, None).decode(), "share")
        except Exception as exc:
            raise CeremonyError(f"share from {sender.trustee_id} cannot be decrypted: {exc}") from None
        if value * G != sender.evaluate_commitments(self.index):
            raise CeremonyError(f"share from {sender.trustee_id} does not match its commitments")
        self._received[sender.trustee_id] = value

    def finish(self, everyone: Sequence[TrusteePublic]) -> None:
        """Combine the shares once every other trustee's share has been received."""
        missing = {t.trustee_id for t in everyone} - set(self._received) - {self.trustee_id}
        if missing:
            raise CeremonyError(f"{self.trustee_id} has no share yet from {sorted(missing)}")
        own = self._evaluate(self.index)
        self.secret_share = (own + sum(self._received.values())) % ORDER

    def partial_decrypt(self, alpha: Point, statement: dict[str, Any]) -> tuple[Point, ChaumPedersenProof]:
        """``M = s·α`` with a proof that ``s`` is this trustee's share."""
        if self.secret_share is None:
            raise DecryptionError(f"{self.trustee_id} has not finished the ceremony")
        share = self.secret_share * alpha
        proof = ChaumPedersenProof.prove(self.secret_share, alpha, self.secret_share * G, share, statement)
        return share, proof

    def secret_json(self) -> dict[str, Any]:
        """The trustee's private key file (kept by the trustee, never published)."""
        if self.secret_share is None:
            raise CeremonyError(f"{self.trustee_id} has not finished the ceremony")
        return {
            "version": TRUSTEE_VERSION,
            "trustee_id": self.trustee_id,
            "index": self.index,
            "quorum": self.quorum,
            "base_hash": self.base_hash.hex(),
            "secret_share": scalar_to_hex(self.secret_share),
        }

    @classmethod
    def from_secret_json(cls, data: Any) -> Trustee:
        fields = {"version", "trustee_id", "index", "quorum", "base_hash", "secret_share"}
        if not isinstance(data, dict) or set(data) != fields:
            raise FormatError(f"trustee key file: expected exactly the fields {sorted(fields)}")
        check_version(data, TRUSTEE_VERSION, "trustee key file")
        trustee = cls(
            check_trustee_id(data["trustee_id"]),
            strict_int(data["index"], "trustee key file.index", minimum=1, maximum=MAX_TRUSTEE_INDEX),
            strict_int(data["quorum"], "trustee key file.quorum", minimum=1, maximum=MAX_TRUSTEE_INDEX),
            hex_bytes(data["base_hash"], 32, "trustee key file.base_hash"),
        )
        trustee.secret_share = scalar_from_hex(data["secret_share"], "trustee key file.secret_share")
        return trustee


def joint_public_key(trustees: Sequence[TrusteePublic]) -> Point:
    total = IDENTITY
    for trustee in trustees:
        total = total + trustee.commitments[0]
    return total


def public_share(index: int, trustees: Sequence[TrusteePublic]) -> Point:
    """``S_ℓ = s_ℓ·G = Σ_i P_i(ℓ)·G``, from the commitments alone."""
    total = IDENTITY
    for trustee in trustees:
        total = total + trustee.evaluate_commitments(index)
    return total


def lagrange_coefficient(index: int, indices: Sequence[int]) -> int:
    """Weight of trustee ``index`` when interpolating at 0 from the trustees ``indices``."""
    numerator, denominator = 1, 1
    for other in indices:
        if other != index:
            numerator = numerator * other % ORDER
            denominator = denominator * (other - index) % ORDER
    return numerator * pow(denominator, -1, ORDER) % ORDER


def run_local_ceremony(
    trustee_ids: Sequence[str], quorum: int, base_hash: bytes
) -> tuple[list[Trustee], list[TrusteePublic]]:
    """Run the whole ceremony in one place (simulations, tests, a single-room ceremony)."""
    if not 1 <= quorum <= len(trustee_ids):
        raise CeremonyError(f"quorum {quorum} must be between 1 and {len(trustee_ids)}")
    trustees = [Trustee(tid, i + 1, quorum, base_hash) for i, tid in enumerate(trustee_ids)]
    publics = [t.public() for t in trustees]
    for public in publics:
        problems = public.problems(base_hash, quorum)
        if problems:
            raise CeremonyError("; ".join(problems))
    for sender, sender_public in zip(trustees, publics, strict=True):
        for recipient, recipient_public in zip(trustees, publics, strict=True):
            if recipient is not sender:
                recipient.receive(sender.share_for(recipient_public), sender_public)
    for trustee in trustees:
        trustee.finish(publics)
    return trustees, publics
