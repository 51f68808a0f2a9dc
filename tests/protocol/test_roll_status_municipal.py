"""The roll status with and without ``municipal_roll`` (issue 17): a station roll's bytes are
unchanged, the relay's carry the field, and the decoder is strict and total — any input is
either one of these documents or a Refusal, never another exception or a silent default."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from election.encoding import canonical_bytes
from protocol.errors import Refusal
from protocol.messages import MUNICIPAL_ROLL, POLLS_STATES, RollStatus

BASE = {"version": 1, "type": "roll_status", "online": True, "polls": "open", "eligible": 0}


def test_a_station_roll_status_is_byte_for_byte_what_it_was() -> None:
    assert RollStatus(True, "open", 0).encode() == canonical_bytes(BASE)
    assert RollStatus.decode(canonical_bytes(BASE)).municipal_roll is None


@given(st.sampled_from(POLLS_STATES), st.integers(0, 10**6), st.sampled_from((None, *MUNICIPAL_ROLL)))
def test_round_trip(polls: str, eligible: int, municipal: str | None) -> None:
    status = RollStatus(True, polls, eligible, municipal)
    assert RollStatus.decode(status.encode()) == status


@pytest.mark.parametrize("value", ["Reachable", "", "unknown", None, True, 1, ["reachable"]])
def test_any_other_municipal_roll_value_is_refused(value: object) -> None:
    with pytest.raises(Refusal):
        RollStatus.decode(canonical_bytes({**BASE, "municipal_roll": value}))


def test_other_extra_fields_and_offline_with_the_field_are_refused() -> None:
    with pytest.raises(Refusal):
        RollStatus.decode(canonical_bytes({**BASE, "municipal_roll": "reachable", "extra": 1}))
    with pytest.raises(Refusal):
        RollStatus.decode(canonical_bytes({"version": 1, "type": "roll_status", "online": False,
                                           "municipal_roll": "unreachable"}))  # fmt: skip
    with pytest.raises(Refusal):
        RollStatus(True, "open", 0, "maybe").encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from([*BASE, "municipal_roll", "x"]), json_values, max_size=7))
def test_decoder_is_total_over_documents(document: dict) -> None:
    try:
        status = RollStatus.decode(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    except Refusal:
        return
    assert status.municipal_roll in (None, *MUNICIPAL_ROLL)
    assert RollStatus.decode(status.encode()) == status


@given(st.binary(max_size=300))
def test_decoder_is_total_over_bytes(payload: bytes) -> None:
    with contextlib.suppress(Refusal):  # any other exception fails the test
        RollStatus.decode(payload)
