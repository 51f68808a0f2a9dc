"""The ristretto255 group (RFC 9496), through libsodium (the ``rbcl`` binding).

Record format 2's group: prime order, one canonical encoding per element, so decoding an
element from outside is the whole check (no cofactor, no subgroup test). ``rbcl`` was measured
against ``pysodium`` and format 1's edwards25519 in ``benchmarks/bench_group.py`` and kept as
the faster maintained binding.

Points are immutable values wrapping their 32-byte canonical encoding; scalars are Python
integers modulo ``ORDER``. Every point that comes from outside goes through
:func:`point_from_hex` / :meth:`Point.from_bytes`, which refuse anything that is not the
canonical encoding of a group element.

The identity encodes as 32 zero bytes. libsodium refuses to return it from a scalar
multiplication (and vote 0 encodes to it), and its validity check accepts it, so the identity
is handled here explicitly and accepted only where the caller allows it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

import rbcl as _sodium

from election.encoding import hex_bytes
from election.errors import FormatError, InvalidPoint

ORDER: Final = 2**252 + 27742317777372353535851937790883648493
"""The prime order L of ristretto255 (and the modulus of every scalar)."""

_IDENTITY_BYTES: Final = bytes(32)
_SCALAR_SIZE: Final = 32


class Point:
    """An element of ristretto255."""

    __slots__ = ("raw",)
    raw: bytes

    def __init__(self, raw: bytes) -> None:
        # Internal constructor: callers outside this module use from_bytes / from_hex.
        object.__setattr__(self, "raw", raw)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Point is immutable")

    def __reduce__(self) -> tuple[type[Point], tuple[bytes]]:
        # Points cross process boundaries (the verifier's worker pool) as their encoding; the
        # encoding was validated when the point was first made, so no re-check is needed.
        return (Point, (self.raw,))

    @classmethod
    def from_bytes(cls, raw: bytes, *, allow_identity: bool = False) -> Point:
        if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
            raise InvalidPoint("a group element is exactly 32 bytes")
        raw = bytes(raw)
        if raw == _IDENTITY_BYTES:
            if allow_identity:
                return IDENTITY
            raise InvalidPoint("the identity element is not allowed here")
        if not _sodium.crypto_core_ristretto255_is_valid_point(raw):
            raise InvalidPoint("not the canonical encoding of a ristretto255 element")
        return cls(raw)

    def hex(self) -> str:
        return self.raw.hex()

    @property
    def is_identity(self) -> bool:
        return self.raw == _IDENTITY_BYTES

    def __add__(self, other: Point) -> Point:
        if self.raw == _IDENTITY_BYTES:
            return other
        if other.raw == _IDENTITY_BYTES:
            return self
        return Point(_sodium.crypto_core_ristretto255_add(self.raw, other.raw))

    def __sub__(self, other: Point) -> Point:
        if other.raw == _IDENTITY_BYTES:
            return self
        return Point(_sodium.crypto_core_ristretto255_sub(self.raw, other.raw))

    def __neg__(self) -> Point:
        return IDENTITY - self

    def __rmul__(self, scalar: int) -> Point:
        scalar %= ORDER
        if scalar == 0 or self.raw == _IDENTITY_BYTES:
            return IDENTITY
        if self.raw == _BASE_BYTES:
            return Point(_sodium.crypto_scalarmult_ristretto255_base(_scalar_bytes(scalar)))
        return Point(_sodium.crypto_scalarmult_ristretto255(_scalar_bytes(scalar), self.raw))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Point({self.raw.hex()[:16]}…)"


def _scalar_bytes(scalar: int) -> bytes:
    return scalar.to_bytes(_SCALAR_SIZE, "little")


IDENTITY: Final = Point(_IDENTITY_BYTES)
_BASE_BYTES: Final = _sodium.crypto_scalarmult_ristretto255_base(_scalar_bytes(1))
G: Final = Point(_BASE_BYTES)
"""The ristretto255 generator (RFC 9496 §4.4): the encoding of edwards25519's base point."""


def point_from_hex(text: object, what: str, *, allow_identity: bool = False) -> Point:
    try:
        return Point.from_bytes(hex_bytes(text, 32, what), allow_identity=allow_identity)
    except InvalidPoint as exc:
        raise InvalidPoint(f"{what}: {exc}") from None


def scalar_to_hex(scalar: int) -> str:
    return _scalar_bytes(scalar % ORDER).hex()


def scalar_from_hex(text: object, what: str) -> int:
    """Decode a scalar: 32 bytes little-endian, strictly below ``ORDER``."""
    value = int.from_bytes(hex_bytes(text, _SCALAR_SIZE, what), "little")
    if value >= ORDER:
        raise FormatError(f"{what}: scalar is not reduced modulo the group order")
    return value


def random_scalar() -> int:
    """A uniformly random non-zero scalar."""
    return secrets.randbelow(ORDER - 1) + 1


def hash_to_scalar(data: bytes) -> int:
    """Map bytes to a scalar with negligible bias: 512 bits of SHA-256 output, reduced mod L.

    ``SHA-256(0x00 ‖ data) ‖ SHA-256(0x01 ‖ data)``, read as a little-endian integer.
    """
    wide = hashlib.sha256(b"\x00" + data).digest() + hashlib.sha256(b"\x01" + data).digest()
    return int.from_bytes(wide, "little") % ORDER


def small_multiple(value: int) -> Point:
    """``value · G`` for a small non-negative integer (an encoded vote or a total)."""
    return value * G
