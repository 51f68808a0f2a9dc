"""Property-based fuzzing of every decoder in ``protocol/`` (messages, forwarding,
registration): random bytes, JSON-like soup and mutated valid messages give the message or
the project's own :class:`protocol.errors.Refusal` with a documented reason — never another
exception — and whatever a decoder accepts, its encoder writes back byte for byte (so only
canonical input is ever accepted)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from mutations import FUZZ, hostile_bytes
from protocol_samples import samples

from election.encoding import canonical_bytes
from election.errors import FormatError
from protocol.errors import CheckinReason, Reason, Refusal
from protocol.messages import BallotSubmission
from protocol.municipal import RollMarks

NAMES = sorted(samples())
KNOWN_LENIENT: dict[str, str] = {}
"""Decoders that accept a second spelling of a value: still total (checked), not yet strict."""


def decode_or_refuse(name: str, payload: bytes) -> None:
    sample = samples()[name]
    try:
        value = sample.decode(payload)
    except Refusal as refusal:
        assert isinstance(refusal.reason, Reason | CheckinReason)
        assert isinstance(refusal.detail, str)
        return
    if isinstance(value, BallotSubmission):  # the bytes kept from the parse (hash, signed body) are the fields'
        ballot = value.ballot
        assert ballot.encoded() == canonical_bytes(ballot.to_json())
        assert ballot._body_encoded == canonical_bytes(ballot.body_json())
    if payload == b"" and getattr(value, "online", None) is False:
        return  # an empty retained message clears a status: it reads as offline (ledger.md)
    if sample.encode is not None and name not in KNOWN_LENIENT:
        assert sample.encode(value) == payload, "accepted bytes that are not the value's own encoding"


def test_every_sample_decodes_and_re_encodes_exactly() -> None:
    for name in NAMES:
        sample = samples()[name]
        value = sample.decode(sample.valid)
        if sample.encode is not None:
            assert sample.encode(value) == sample.valid, name


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_hostile_bytes_give_a_message_or_a_refusal(name: str, data: st.DataObject) -> None:
    decode_or_refuse(name, data.draw(hostile_bytes(samples()[name].valid)))


@FUZZ
@given(st.one_of(st.binary(max_size=300), hostile_bytes(samples()["spoiled ballot"].valid)))
def test_ballot_id_of_never_raises(payload: bytes) -> None:
    found = BallotSubmission.ballot_id_of(payload)
    assert found is None or isinstance(found, str)


def test_ledger_status_refuses_an_empty_refusal_map() -> None:
    valid = samples()["ledger status"].valid
    lenient = valid.replace(b'"refusals":{"x1":{"bad_proof":1}}', b'"refusals":{"x1":{}}')
    assert lenient != valid
    with pytest.raises(Refusal):
        samples()["ledger status"].decode(lenient)


_MARKS_KEY = Ed25519PrivateKey.generate()
_MARKS = RollMarks("city-1", "st-1", b"\x01" * 32, (b"\x02" * 32, b"\x03" * 32))


@FUZZ
@given(st.one_of(st.binary(max_size=300), hostile_bytes(_MARKS.signed(_MARKS_KEY))))
def test_hostile_roll_marks_give_the_marks_or_a_format_error(payload: bytes) -> None:
    """The signed marks a municipal roll and a station exchange: whatever arrives is the marks
    the key signed, or refused; never another exception."""
    try:
        marks = RollMarks.verify(payload, _MARKS_KEY.public_key(), municipality="city-1", origin="st-1",
                                 base_hash=b"\x01" * 32)  # fmt: skip
    except FormatError:
        return
    assert marks == _MARKS
