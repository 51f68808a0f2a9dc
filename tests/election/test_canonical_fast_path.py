"""Issue 18: the canonical parse's fast path (one pass of the C parser and encoder, a walk over
the containers only) decides exactly as the full path does, and a sealed ballot's bytes kept
from its parse are the bytes its fields encode to. Hostile documents first: lone surrogates,
duplicate keys, deep nesting, huge integers, booleans, other spellings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from election.ballot import SealedBallot
from election.encoding import MAX_DEPTH, canonical_bytes, parse_json
from election.errors import FormatError
from election.manifest import Manifest

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECORD = Path(__file__).resolve().parents[2] / "docs" / "test-vectors" / "record"
MANIFEST = Manifest.from_json(parse_json((RECORD / "manifest.json").read_bytes(), canonical=True))
BALLOT = parse_json(sorted((RECORD / "ballots").glob("*.json"))[0].read_bytes(), canonical=True)


def full_path(data: bytes) -> Any:
    """The canonical parse as the full path decides it: a total parse (never the fast path,
    which only a canonical parse takes), then the document must be its value's encoding."""
    value = parse_json(data)
    if canonical_bytes(value) != data:
        raise FormatError("not in canonical form")
    return value


def tagged(value: Any) -> Any:
    """The value with every scalar's exact type (``True == 1`` in Python, not in JSON)."""
    if isinstance(value, dict):
        return {key: tagged(item) for key, item in value.items()}
    if isinstance(value, list):
        return [tagged(item) for item in value]
    return (type(value).__name__, value)


def same_decision(data: bytes) -> None:
    try:
        expected = tagged(full_path(data))
    except FormatError:
        with pytest.raises(FormatError):
            parse_json(data, canonical=True)
        return
    assert tagged(parse_json(data, canonical=True)) == expected


surrogates = st.sampled_from(["\ud800", "\udfff", "\udc00\ud800"])
texts = st.text(max_size=12) | st.builds(
    lambda a, s, b: a + s + b, st.text(max_size=4), surrogates, st.text(max_size=4)
)
scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63 - 2, max_value=2**70) | texts
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=25
)


def spellings(value: Any) -> list[bytes]:
    """The canonical spelling (when there is one) and others that mean the same value."""
    out = []
    for ascii_only in (False, True):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
        out += [text.encode("utf-8", "surrogatepass"), text.replace(",", ", ").encode("utf-8", "surrogatepass")]
    return out


@FUZZ
@given(values)
def test_the_fast_path_decides_like_the_full_path_on_hostile_values(value: Any) -> None:
    for data in spellings(value):
        same_decision(data)


@FUZZ
@given(st.dictionaries(st.text(max_size=3), st.integers(0, 3), min_size=1, max_size=4), st.integers(0, 3))
def test_a_duplicate_key_is_refused_whichever_copy_is_kept(value: dict[str, int], extra: int) -> None:
    key = sorted(value)[0]
    body = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    duplicated = "{" + json.dumps(key, ensure_ascii=False) + f":{extra}," + body[1:]
    with pytest.raises(FormatError, match="duplicate key"):
        parse_json(duplicated.encode("utf-8", "surrogatepass"), canonical=True)


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5000])
def test_nesting_is_bounded_on_the_fast_path_too(depth: int) -> None:
    for open_, close in (("[", "]"), ('{"a":', "}")):
        data = (open_ * depth + "0" + close * depth).encode()
        same_decision(data)
        if depth > MAX_DEPTH:
            with pytest.raises(FormatError, match="nesting"):
                parse_json(data, canonical=True)
        else:
            parse_json(data, canonical=True)


def test_escaped_and_raw_forms_of_the_same_text_are_told_apart() -> None:
    assert parse_json('{"a":"é"}'.encode(), canonical=True) == {"a": "é"}
    with pytest.raises(FormatError, match="canonical"):
        parse_json(b'{"a":"\\u00e9"}', canonical=True)
    assert parse_json(b'{"a":"\\u0001"}', canonical=True) == {"a": "\x01"}  # control characters stay escaped
    with pytest.raises(FormatError, match="surrogate"):
        parse_json(b'{"a":"\\ud800"}', canonical=True)
    with pytest.raises(FormatError, match="not an integer"):
        parse_json(b'{"a":1.0}', canonical=True)


# --- a sealed ballot keeps the bytes of its parse ----------------------------------------


def hex_leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in hex_leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in hex_leaves(item, (*path, index))]
    return [path] if isinstance(value, str) else []


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@FUZZ
@given(data=st.data())
def test_an_accepted_ballot_encodes_to_the_bytes_it_was_parsed_from(data: st.DataObject) -> None:
    """Whatever field an attacker respells (case, a bigger scalar, another point, another
    length), either the ballot is refused or the bytes kept from the parse (its hash, what the
    ledger stores) are exactly the encoding of what was decoded."""
    path = data.draw(st.sampled_from(hex_leaves(BALLOT)))
    old = BALLOT
    for step in path:
        old = old[step]
    new = data.draw(st.sampled_from([old, old.upper(), "ff" * (len(old) // 2), old[:-2], old + "00", "ed" + old[2:]]))
    document = replaced(BALLOT, path, new)
    try:
        ballot = SealedBallot.from_json(document, MANIFEST)
    except FormatError:
        return
    assert ballot.encoded() == canonical_bytes(ballot.to_json())
    unsigned_body = {name: value for name, value in ballot.to_json().items() if name != "signature"}
    assert ballot.encoded() == canonical_bytes(document)
    assert canonical_bytes(unsigned_body) == canonical_bytes(ballot.body_json())
