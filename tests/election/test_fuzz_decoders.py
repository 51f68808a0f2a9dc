"""Property-based fuzzing (hypothesis) of parse_json and every election decoder.

The property is the one the services rely on: random bytes, random JSON values and mutated
valid documents give a value or an ``ElectionError`` (``FormatError`` and its kin), never
another exception. The valid documents are the real record of ``docs/test-vectors``. The
budget is fixed (``max_examples``) so that CI time stays small.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from election.ballot import BallotOpening, SealedBallot, Token
from election.chain import ChainEntry, Checkpoint
from election.context import ElectionContext
from election.devices import DeviceStatement
from election.encoding import canonical_bytes, parse_json
from election.errors import ElectionError, FormatError
from election.keyceremony import Trustee, TrusteePublic
from election.manifest import Manifest
from election.reconciliation import Reconciliation
from election.record import FILE, FOLDER
from election.stations import StationKeys, parse_chain_lines
from election.tally import DecryptionShare, EncryptedTally, Results
from election.verify import verify_record

RECORD = Path(__file__).resolve().parents[2] / "docs" / "test-vectors" / "record"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIGHT = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _file(name: str) -> bytes:
    path = RECORD / name
    return (sorted(path.glob("*.json"))[0] if path.is_dir() else path).read_bytes()


MANIFEST = Manifest.from_json(parse_json(_file("manifest.json")))
STATION = parse_json(_file("stations/station-1/station.json"))
LEDGER_KEY = StationKeys.from_json(STATION).ledger_key
CHAIN_LINE = _file("stations/station-1/chain.jsonl").split(b"\n")[0]
SECRET_KEY_FILE = {
    "version": 1, "trustee_id": "trustee-1", "index": 1, "quorum": 2,
    "base_hash": MANIFEST.base_hash.hex(), "secret_share": "05" + "00" * 31,
}  # fmt: skip

Decoder = Callable[[Any], Any]
DECODERS: dict[str, tuple[Decoder, bytes]] = {
    "manifest": (Manifest.from_json, _file("manifest.json")),
    "context": (ElectionContext.from_json, _file("context.json")),
    "trustee": (TrusteePublic.from_json, _file("trustees")),
    "trustee key file": (Trustee.from_secret_json, canonical_bytes(SECRET_KEY_FILE)),
    "sealed ballot": (lambda d: SealedBallot.from_json(d, MANIFEST), _file("ballots")),
    "token": (Token.from_json, canonical_bytes(parse_json(_file("ballots"))["token"])),
    "opening": (
        lambda d: BallotOpening.from_json(d, MANIFEST),
        canonical_bytes(parse_json(_file("spoiled"))["opening"]),
    ),
    "tally": (lambda d: EncryptedTally.from_json(d, MANIFEST), _file("tally.json")),
    "decryption share": (lambda d: DecryptionShare.from_json(d, MANIFEST), _file("decryption")),
    "results": (lambda d: Results.from_json(d, MANIFEST), _file("results.json")),
    "chain entry": (ChainEntry.from_json, CHAIN_LINE),
    "checkpoint": (lambda d: Checkpoint.from_signed(d, LEDGER_KEY), _file("stations/station-1/checkpoint.json")),
    "station": (StationKeys.from_json, _file("stations/station-1/station.json")),
    "device statement": (DeviceStatement.from_json, _file("device_statements")),
    "reconciliation": (Reconciliation.from_json, _file("reconciliation.json")),
}


def decode_bytes(decoder: Decoder, data: bytes, canonical: bool = False) -> None:
    """The whole path a payload takes: bytes → parse_json → decoder. Only refusals may escape."""
    with contextlib.suppress(ElectionError):
        decoder(parse_json(data, max_size=1 << 20, canonical=canonical))


def decode_value(decoder: Decoder, value: Any) -> None:
    with contextlib.suppress(ElectionError):
        decoder(value)


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


# --- parse_json ---------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_parse_json_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_json(data)


@FUZZ
@given(st.text(max_size=200))
def test_parse_json_on_random_text(text: str) -> None:
    with contextlib.suppress(FormatError):
        parse_json(text, canonical=True)


JSONISH = st.lists(
    st.sampled_from(['{', '}', '[', ']', ',', ':', '"a"', '"\\ud800"', '"\\udc00\\ud800"', "1", "-0", "true",
                     "null", "1.5", "1e3", "NaN", "99999999999999999999", "9" * 400, " ", "\\", '"', "\ufeff"]),
    max_size=60,
).map("".join)  # fmt: skip


@FUZZ
@given(JSONISH, st.booleans())
def test_parse_json_on_json_like_token_soup(text: str, as_bytes: bool) -> None:
    try:
        value = parse_json(text.encode("utf-8", "surrogatepass") if as_bytes else text)
    except FormatError:
        return
    assert parse_json(canonical_bytes(value), canonical=True) == value


@FUZZ
@given(json_values)
def test_what_canonical_bytes_writes_parse_json_reads_back_exactly(value: Any) -> None:
    try:
        encoded = canonical_bytes(value)
    except FormatError:
        return  # e.g. an integer beyond 2^63
    decoded = parse_json(encoded, canonical=True)
    assert decoded == value and canonical_bytes(decoded) == encoded


# --- every decoder ------------------------------------------------------------------------


def test_every_valid_document_decodes() -> None:
    for name, (decoder, valid) in DECODERS.items():
        decoder(parse_json(valid, canonical=name != "trustee key file"))


@pytest.mark.parametrize("name", sorted(DECODERS))
@LIGHT
@given(data=st.binary(max_size=200))
def test_decoders_on_random_bytes(name: str, data: bytes) -> None:
    decode_bytes(DECODERS[name][0], data)


@pytest.mark.parametrize("name", sorted(DECODERS))
@LIGHT
@given(data=st.data())
def test_decoders_on_random_values_with_the_right_field_names(name: str, data: st.DataObject) -> None:
    decoder, valid = DECODERS[name]
    fields = sorted(parse_json(valid))
    value = data.draw(
        st.fixed_dictionaries({field: json_values for field in fields})
        | json_values
        | st.fixed_dictionaries({field: json_values for field in fields[:-1]})
    )
    decode_value(decoder, value)


def _paths(value: Any) -> list[tuple[Any, ...]]:
    """Every position in a JSON tree (iteratively), the root included."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        found.append(path)
        if isinstance(item, dict):
            stack.extend(((*path, key), child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend(((*path, i), child) for i, child in enumerate(item))
    return found


HUGE = "\u0000HUGE\u0000"
FLOAT = "\u0000FLOAT\u0000"
DUPLICATE = "\u0000DUP\u0000"
REPLACEMENTS = st.sampled_from(
    [True, False, None, 0, -1, 1, 2, 2**63 - 1, HUGE, FLOAT, "", "\ud800", "a\udfff", "x" * 5000, "00" * 32,
     "candidate-1\n", [], {}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], {"a": 1}]
).map(copy.deepcopy)  # fmt: skip
"""A fresh copy at every draw: the mutations change containers in place."""


def _encode(value: Any) -> bytes:
    """Like canonical_bytes, but able to write what no valid document holds (the mutations)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    text = text.replace(json.dumps(HUGE), "9" * 5000).replace(json.dumps(FLOAT), "1.5")
    return text.replace(json.dumps(DUPLICATE) + ":1,", "").encode()


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    document = parse_json(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        parent: Any = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate", "wrap"]))
        if not path:
            if action == "replace":
                document = draw(REPLACEMENTS)
            continue
        key = path[-1]
        if action == "replace":
            parent[key] = draw(REPLACEMENTS)
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "version", "signature", "\udc80"]))] = draw(REPLACEMENTS)
        elif action == "add" and isinstance(parent, list):
            parent.append(draw(REPLACEMENTS))
        elif action == "duplicate" and isinstance(parent, dict):
            parent[DUPLICATE] = 1
        elif action == "wrap":
            parent[key] = [parent[key]]
    raw = _encode(document)
    end = draw(st.sampled_from([None, None, None, draw(st.integers(0, max(len(raw) - 1, 0)))]))
    return raw if end is None else raw[:end]


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=st.data())
def test_decoders_on_mutated_valid_documents(name: str, data: st.DataObject) -> None:
    decoder, valid = DECODERS[name]
    raw = data.draw(mutated(valid))
    decode_bytes(decoder, raw)
    decode_bytes(decoder, raw, canonical=True)


# --- record format 2's new decoders: every field, any depth, a hostile value ---------------

V2_DECODERS = ("chain entry", "device statement", "manifest")
DEEP = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
HOSTILE = st.sampled_from(
    [True, False, None, -1, HUGE, FLOAT, "\ud800", "a\udfff", "", DEEP, [], {}, {"a": 1}, [1]]
).map(copy.deepcopy)
"""Values no field of these documents accepts: booleans for integers, negative or beyond 2^63
integers, fractions, lone surrogates, the empty string, nesting past 32 levels,
containers where scalars belong and scalars where containers belong."""


@pytest.mark.parametrize("name", V2_DECODERS)
@FUZZ
@given(data=st.data())
def test_v2_decoders_refuse_a_hostile_value_in_any_field(name: str, data: st.DataObject) -> None:
    decoder, valid = DECODERS[name]
    document = parse_json(valid)
    path = data.draw(st.sampled_from([p for p in _paths(document) if p]))
    parent: Any = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(HOSTILE)
    with pytest.raises(ElectionError):
        decoder(parse_json(_encode(document), max_size=1 << 20))


@pytest.mark.parametrize("name", V2_DECODERS)
def test_v2_decoders_refuse_every_duplicated_field(name: str) -> None:
    decoder, valid = DECODERS[name]
    document = parse_json(valid)
    for field in document:
        text = _encode(document).decode()
        entry = json.dumps(field) + ":" + json.dumps(document[field], sort_keys=True, separators=(",", ":"))
        doubled = text.replace(entry, entry + "," + entry, 1)
        assert doubled != text, field
        with pytest.raises(FormatError, match="duplicate"):
            decoder(parse_json(doubled.encode()))


@pytest.mark.parametrize(
    ("field", "value"),
    [("sealed", 0), ("sealed", 2**40 + 1), ("sealed", True), ("type", "device_statements"), ("version", 1),
     ("device_id", "Terminal 1"), ("commitment", "AB" * 32), ("signature", "00" * 63)],
)  # fmt: skip
def test_a_device_statement_refuses_each_out_of_bounds_field(field: str, value: Any) -> None:
    decoder, valid = DECODERS["device statement"]
    with pytest.raises(FormatError):
        decoder({**parse_json(valid), field: value})


@pytest.mark.parametrize(
    ("change", "value"),
    [("batch_min", 0), ("batch_min", True), ("mode", "Production"), ("mode", None), ("version", 1)],
)
def test_a_v2_manifest_refuses_each_out_of_bounds_field(change: str, value: Any) -> None:
    with pytest.raises(ElectionError):
        Manifest.from_json({**parse_json(DECODERS["manifest"][1]), change: value})


def test_a_production_manifest_needs_batches_of_at_least_ten() -> None:
    valid = parse_json(DECODERS["manifest"][1])
    assert Manifest.from_json({**valid, "mode": "production", "batch_min": 10}).batch_min == 10
    with pytest.raises(ElectionError, match="batch_min"):
        Manifest.from_json({**valid, "mode": "production", "batch_min": 9})


@LIGHT
@given(st.lists(st.sampled_from([CHAIN_LINE, b"", b"{}", CHAIN_LINE[:-5], b"\r", b'{"a":"\\ud800"}']), max_size=5),
       st.booleans())  # fmt: skip
def test_chain_lines_parse_or_refuse(lines: list[bytes], terminated: bool) -> None:
    data = b"\n".join(lines) + (b"\n" if terminated and lines else b"")
    with contextlib.suppress(FormatError):
        list(parse_chain_lines(data))


def test_a_checkpoint_signed_over_hostile_content_is_refused_not_crashed() -> None:
    key = Ed25519PrivateKey.generate()
    from election.chain import sign_document

    for body in (
        {"version": True, "type": "checkpoint", "station_id": "s", "base_hash": "00" * 32, "position": 0,
         "head_hash": "00" * 32},
        {"version": 1, "type": "checkpoint", "station_id": "s\n", "base_hash": "00" * 32, "position": 0,
         "head_hash": "00" * 32},
        {"version": 1, "type": "checkpoint", "station_id": "s", "base_hash": "00" * 32, "position": -1,
         "head_hash": "00" * 32},
    ):  # fmt: skip
        with pytest.raises(FormatError):
            Checkpoint.from_signed(sign_document(body, key), key.public_key())


# --- the verifier over a mutated record -----------------------------------------------------


class MemoryRecord:
    """A RecordSource over a dict of files: the verifier fed from memory, as a fuzz target."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read(self, name: str) -> Any:
        return self.read_document(name)[0]

    def read_document(self, name: str) -> tuple[Any, bytes]:
        data = self.read_bytes(name)
        return parse_json(data, canonical=True), data

    def read_bytes(self, name: str, *, max_size: int | None = None) -> bytes:
        if name not in self.files:
            raise FileNotFoundError(name)
        return self.files[name]

    def listing(self, folder: str) -> dict[str, str] | None:
        prefix = f"{folder}/" if folder else ""
        found: dict[str, str] = {}
        for name in self.files:
            if name.startswith(prefix):
                head, _, rest = name[len(prefix) :].partition("/")
                found[head] = FOLDER if rest else FILE
        return found or None

    def names(self, folder: str) -> list[str]:
        entries = self.listing(folder) or {}
        return sorted(n[: -len(".json")] for n, kind in entries.items() if kind == FILE and n.endswith(".json"))

    def count(self, folder: str) -> int:
        return len(self.names(folder))

    def folders(self, folder: str) -> list[str]:
        return sorted(n for n, kind in (self.listing(folder) or {}).items() if kind == FOLDER)


FILES = {p.relative_to(RECORD).as_posix(): p.read_bytes() for p in sorted(RECORD.rglob("*")) if p.is_file()}


def test_the_memory_record_verifies() -> None:
    assert verify_record(MemoryRecord(dict(FILES))).passed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_verifier_reports_a_mutated_record_and_never_crashes(data: st.DataObject) -> None:
    files = dict(FILES)
    name = data.draw(st.sampled_from(sorted(n for n in files if n.endswith(".json"))))
    files[name] = data.draw(mutated(files[name]))
    report = verify_record(MemoryRecord(files))
    if files[name] != FILES[name]:
        assert not report.passed or parse_json(files[name]) == parse_json(FILES[name])
