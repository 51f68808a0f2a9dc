"""Group elements from outside: only canonical points of the prime-order subgroup pass."""

from __future__ import annotations

import pytest
from nacl import bindings

from election.errors import InvalidPoint
from election.group import IDENTITY, ORDER, G, Point, point_from_hex, random_scalar

FIELD_PRIME = 2**255 - 19


def encode_y(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


SMALL_ORDER = {
    "identity (order 1)": encode_y(1),
    "order 2 (y = -1)": encode_y(FIELD_PRIME - 1),
    "order 4 (y = 0)": encode_y(0),
    "order 8": bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    "order 8 (other)": bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
}


@pytest.mark.parametrize("name", sorted(SMALL_ORDER))
def test_small_order_points_are_refused(name: str) -> None:
    with pytest.raises(InvalidPoint):
        Point.from_bytes(SMALL_ORDER[name])


def test_non_canonical_encodings_are_refused() -> None:
    # y = p + 1 encodes the identity non-canonically; y = p + 2 would be y = 2 reduced.
    for y in (FIELD_PRIME + 1, FIELD_PRIME + 2, 2**255 - 1):
        with pytest.raises(InvalidPoint):
            Point.from_bytes(encode_y(y))
    # The same valid point with its x sign bit flipped is another (valid) point, but the
    # negative-zero x of the identity is not canonical.
    with pytest.raises(InvalidPoint):
        Point.from_bytes(encode_y(1, sign=1))


def test_point_outside_the_prime_order_subgroup_is_refused() -> None:
    valid = random_scalar() * G
    mixed = bindings.crypto_core_ed25519_add(valid.raw, SMALL_ORDER["order 8"])
    assert bindings.crypto_core_ed25519_is_valid_point(valid.raw)
    with pytest.raises(InvalidPoint, match="subgroup"):
        Point.from_bytes(mixed)


def test_bytes_of_wrong_length_or_hex_are_refused() -> None:
    with pytest.raises(InvalidPoint):
        Point.from_bytes(b"\x05" * 31)
    with pytest.raises(Exception, match="hex"):
        point_from_hex("zz" * 32, "alpha")
    with pytest.raises(Exception, match="lowercase"):
        point_from_hex((11 * G).hex().upper(), "alpha")


def test_identity_only_where_allowed_and_arithmetic_around_it() -> None:
    assert Point.from_bytes(IDENTITY.raw, allow_identity=True) is IDENTITY
    with pytest.raises(InvalidPoint, match="identity"):
        Point.from_bytes(IDENTITY.raw)
    point = random_scalar() * G
    assert 0 * point == IDENTITY
    assert ORDER * point == IDENTITY
    assert 5 * IDENTITY == IDENTITY
    assert point - point == IDENTITY
    assert IDENTITY + point == point
    assert (3 * G) + (4 * G) == 7 * G
    assert -point + point == IDENTITY
