"""Exponential ElGamal over ristretto255 (record format 2; format 1 used edwards25519's subgroup).

A vote ``m`` under the joint key ``K`` with nonce ``r`` is ``(α, β) = (r·G, m·G + r·K)``.
Ciphertexts add component-wise, which adds the votes: that is the whole tally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from election.errors import FormatError
from election.group import IDENTITY, G, Point, point_from_hex


@dataclass(frozen=True, slots=True)
class Ciphertext:
    alpha: Point
    beta: Point

    def __add__(self, other: Ciphertext) -> Ciphertext:
        return Ciphertext(self.alpha + other.alpha, self.beta + other.beta)

    def to_json(self) -> dict[str, str]:
        return {"alpha": self.alpha.hex(), "beta": self.beta.hex()}

    @classmethod
    def from_json(cls, data: Any, what: str, *, allow_identity: bool = False) -> Ciphertext:
        if not isinstance(data, dict) or set(data) != {"alpha", "beta"}:
            raise FormatError(f"{what}: a ciphertext is an object with exactly alpha and beta")
        return cls(
            point_from_hex(data["alpha"], f"{what}.alpha", allow_identity=allow_identity),
            point_from_hex(data["beta"], f"{what}.beta", allow_identity=True),
        )


ZERO_CIPHERTEXT = Ciphertext(IDENTITY, IDENTITY)
"""The neutral element of ciphertext addition: the start of every tally."""


def encrypt(vote: int, nonce: int, public_key: Point) -> Ciphertext:
    """Encrypt a small non-negative integer; the caller keeps ``nonce`` for the proof."""
    return Ciphertext(nonce * G, vote * G + nonce * public_key)


def is_encryption_of(ciphertext: Ciphertext, vote: int, nonce: int, public_key: Point) -> bool:
    """Whether ``ciphertext`` is exactly the encryption of ``vote`` with ``nonce`` (Benaloh check)."""
    return ciphertext == encrypt(vote, nonce, public_key)
