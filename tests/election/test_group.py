"""Group elements from outside: only canonical ristretto255 encodings pass (RFC 9496).

RFC 9496's own vectors (small multiples, bad encodings) are checked in test_vectors.py; here,
the encodings format 1 dealt with — edwards25519 points — are no ristretto255 elements.
"""

from __future__ import annotations

import pytest

from election.errors import FormatError, InvalidPoint
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

FIELD_PRIME = 2**255 - 19

EDWARDS25519 = {
    "base point": "5866666666666666666666666666666666666666666666666666666666666666",
    "identity (y = 1)": "01" + "00" * 31,
    "order 2 (y = -1)": (FIELD_PRIME - 1).to_bytes(32, "little").hex(),
    "order 8": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 (other)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
}
"""Format 1's encodings of edwards25519 points (its base point, its small-order points)."""


@pytest.mark.parametrize("name", sorted(EDWARDS25519))
def test_edwards25519_encodings_are_not_ristretto255_elements(name: str) -> None:
    with pytest.raises(InvalidPoint, match="canonical encoding of a ristretto255 element"):
        Point.from_bytes(bytes.fromhex(EDWARDS25519[name]), allow_identity=True)


def test_a_field_element_at_or_above_p_is_refused() -> None:
    for value in (FIELD_PRIME, FIELD_PRIME + 1, 2**255 - 1, 2**256 - 1):
        with pytest.raises(InvalidPoint):
            Point.from_bytes(value.to_bytes(32, "little"), allow_identity=True)


def test_every_computed_element_round_trips_through_its_one_encoding() -> None:
    for _ in range(20):
        point = random_scalar() * G
        assert Point.from_bytes(point.raw) == point
        assert point_from_hex(point.hex(), "alpha") == point


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


def test_the_fast_decoders_take_exactly_what_the_strict_ones_take() -> None:
    """point_from_hex and scalar_from_hex decode the common case without the strict path; every
    other input still gets the strict path's answer and message."""
    point = random_scalar() * G
    assert point_from_hex(point.hex(), "alpha") == point
    assert point_from_hex(IDENTITY.hex(), "beta", allow_identity=True) is IDENTITY
    with pytest.raises(InvalidPoint, match="alpha: the identity element is not allowed here"):
        point_from_hex(IDENTITY.hex(), "alpha")
    with pytest.raises(InvalidPoint, match="alpha: not the canonical encoding"):
        point_from_hex(EDWARDS25519["base point"], "alpha")
    for text, message in [
        (point.hex()[:-2], "expected 32 bytes"),
        (point.hex() + "\n", "expected 32 bytes"),
        (" " + point.hex()[1:], "lowercase|hex"),
        (None, "expected a hex string"),
    ]:
        with pytest.raises(FormatError, match=message):
            point_from_hex(text, "alpha")
    scalar = random_scalar()
    assert scalar_from_hex(scalar_to_hex(scalar), "response") == scalar
    assert scalar_from_hex("00" * 32, "response") == 0
    with pytest.raises(FormatError, match="response: scalar is not reduced"):
        scalar_from_hex(ORDER.to_bytes(32, "little").hex(), "response")
    with pytest.raises(FormatError, match="response: hex must be lowercase"):
        scalar_from_hex("A" + scalar_to_hex(scalar)[1:], "response")
    with pytest.raises(FormatError, match="response: expected 32 bytes"):
        scalar_from_hex(scalar_to_hex(scalar) + "00", "response")
