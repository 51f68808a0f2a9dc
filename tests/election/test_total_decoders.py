"""Issue 11: every decoder is total. The attacker's payloads, each as a test first."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from election.ballot import BallotOpening, SealedBallot
from election.chain import ChainEntry
from election.context import ElectionContext
from election.devices import DeviceStatement
from election.encoding import (
    MAX_DEPTH,
    canonical_bytes,
    check_version,
    hash_value,
    parse_canonical,
    parse_json,
    strict_int,
)
from election.errors import FormatError, ManifestError
from election.ids import check_device_id, check_name_id, check_station_id, check_trustee_id
from election.keyceremony import TrusteePublic
from election.manifest import Manifest
from election.stations import StationKeys, parse_chain_lines
from election.tally import DecryptionShare, EncryptedTally, Results

RECORD = Path(__file__).resolve().parents[2] / "docs" / "test-vectors" / "record"


def load(name: str) -> Any:
    path = RECORD / name
    if path.is_dir():
        path = sorted(path.glob("*.json"))[0]
    return parse_json(path.read_bytes(), canonical=True)


MANIFEST = Manifest.from_json(load("manifest.json"))


# --- parse_json ------------------------------------------------------------------------


def test_a_lone_surrogate_is_a_format_error_in_parse_and_in_canonical_bytes() -> None:
    payload = b'{"a":"\\ud800"}'
    assert len(payload) == 14  # the 14 bytes that crash-looped the ledger
    with pytest.raises(FormatError, match="surrogate"):
        parse_json(payload)
    with pytest.raises(FormatError, match="surrogate"):
        parse_json(b'{"\\udfff":1}')
    with pytest.raises(FormatError, match="surrogate"):
        canonical_bytes({"a": "\ud800"})
    with pytest.raises(FormatError, match="surrogate"):
        canonical_bytes({"\udc00": 1})
    with pytest.raises(FormatError):
        parse_json('{"a":"\ud800"}')  # a raw surrogate in text given as str
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"  # a valid pair is one character


def test_a_5000_digit_integer_is_a_format_error_and_fast() -> None:
    started = time.monotonic()
    with pytest.raises(FormatError, match="digits"):
        parse_json(b'{"device_seq":' + b"9" * 5000 + b"}")
    with pytest.raises(FormatError, match="digits"):
        parse_json(b"-" + b"1" * 100_000)
    assert time.monotonic() - started < 1
    assert parse_json(b"9223372036854775807") == 2**63 - 1
    for refused in (b"9223372036854775808", b"-9223372036854775808", b"12345678901234567890"):
        with pytest.raises(FormatError):
            parse_json(refused)
    with pytest.raises(FormatError, match="range"):
        canonical_bytes({"n": 2**63})


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-sig"])
def test_only_strict_utf8_without_bom_is_json(codec: str) -> None:
    with pytest.raises(FormatError):
        parse_json('{"version":1}'.encode(codec))


def test_nesting_is_bounded_without_recursion_errors() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    for depth in (MAX_DEPTH + 1, 999, 100_000):
        with pytest.raises(FormatError, match="nesting"):
            parse_json(b"[" * depth + b"]" * depth)
    with pytest.raises(FormatError, match="nesting"):
        parse_json(b'{"a":' * 5000 + b"1" + b"}" * 5000)
    deep: Any = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(FormatError, match="nesting"):
        canonical_bytes(deep)


def test_canonical_option_refuses_every_other_spelling() -> None:
    document = canonical_bytes({"b": [1, True, None], "a": "é"})
    assert parse_json(document, canonical=True) == parse_canonical(document)
    for other in (
        b'{"b":[1,true,null],"a":"\xc3\xa9"}',
        b'{"a":"\\u00e9","b":[1,true,null]}',
        b'{"a":"\xc3\xa9", "b":[1,true,null]}',
        document + b"\n",
        b" " + document,
    ):
        assert parse_json(other) == parse_json(document)
        with pytest.raises(FormatError, match="canonical"):
            parse_json(other, canonical=True)


def test_booleans_and_integers_stay_distinct() -> None:
    assert canonical_bytes(True) == b"true" and canonical_bytes(1) == b"1"
    assert hash_value([True]) != hash_value([1])
    assert type(parse_json(b"true")) is bool and type(parse_json(b"1")) is int
    with pytest.raises(FormatError, match="boolean"):
        strict_int(True, "version")
    with pytest.raises(FormatError):
        check_version({"version": True}, 1, "doc")
    with pytest.raises(FormatError):
        check_version({"version": 1.0}, 1, "doc")
    check_version({"version": 1}, 1, "doc")


def test_other_python_types_are_refused_not_crashed() -> None:
    import enum

    class Small(enum.IntEnum):
        ONE = 1

    for value in (1.5, float("nan"), b"bytes", {1: "x"}, Small.ONE, {"a": {1, 2}}, object()):
        with pytest.raises(FormatError):
            canonical_bytes(value)
    for data in (None, 12, ["x"]):
        with pytest.raises(FormatError):
            parse_json(data)  # type: ignore[arg-type]


# --- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "check", [check_name_id, check_trustee_id, check_device_id, check_station_id], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("value", ["x1\n", "x1\r", "\nx1", "x1 ", "", "x" * 65, "x/1", ".x", "ｘ1", 1, None, True])
def test_ids_match_their_pattern_in_full(check, value) -> None:
    with pytest.raises(FormatError):
        check(value, "id")


def test_a_manifest_with_candidate_1_newline_is_refused() -> None:
    data = MANIFEST.to_json()
    data["contests"][0]["selections"][1]["id"] = data["contests"][0]["selections"][0]["id"] + "\n"
    with pytest.raises(ManifestError, match="identifier"):
        Manifest.from_json(data)
    data["election_id"] = "sample\n"
    with pytest.raises(ManifestError):
        Manifest.from_json(data)


def test_a_station_with_a_trailing_newline_in_its_id_is_refused() -> None:
    data = load("stations/station-1/station.json")
    data["station_id"] += "\n"
    with pytest.raises(FormatError, match="station id"):
        StationKeys.from_json(data)


# --- "version": true and booleans for integers, in every decoder --------------------------


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(data: Any) -> Any:
        target = data
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return data

    return change


SEL = ("contests", 0, "selections", 0)
DECODERS: list[tuple[str, str, Any]] = [
    ("manifest", "manifest.json", Manifest.from_json),
    ("context", "context.json", ElectionContext.from_json),
    ("trustee", "trustees", TrusteePublic.from_json),
    ("ballot", "ballots", lambda d: SealedBallot.from_json(d, MANIFEST)),
    ("spoiled opening", "spoiled", lambda d: BallotOpening.from_json(d["opening"], MANIFEST)),
    ("tally", "tally.json", lambda d: EncryptedTally.from_json(d, MANIFEST)),
    ("share", "decryption", lambda d: DecryptionShare.from_json(d, MANIFEST)),
    ("results", "results.json", lambda d: Results.from_json(d, MANIFEST)),
    ("station", "stations/station-1/station.json", StationKeys.from_json),
    ("device statement", "device_statements", DeviceStatement.from_json),
]
BOOLEAN_FOR_INTEGER = [
    ("manifest", ("version",)),
    ("manifest", ("contests", 0, "limit")),
    ("manifest", ("batch_min",)),
    ("context", ("version",)),
    ("context", ("quorum",)),
    ("trustee", ("version",)),
    ("trustee", ("index",)),
    ("ballot", ("version",)),
    ("device statement", ("version",)),
    ("device statement", ("sealed",)),
    ("spoiled opening", ("opening", *SEL, "vote")),
    ("tally", ("version",)),
    ("tally", ("ballot_count",)),
    ("share", ("version",)),
    ("share", ("ballot_count",)),
    ("results", ("version",)),
    ("results", ("ballot_count",)),
    ("results", (*SEL, "total")),
    ("station", ("version",)),
]


@pytest.mark.parametrize(("decoder", "path"), BOOLEAN_FOR_INTEGER, ids=lambda x: x if isinstance(x, str) else None)
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_never_an_integer(decoder: str, path: tuple[Any, ...], value: bool) -> None:
    _name, source, decode = next(d for d in DECODERS if d[0] == decoder)
    data = load(source)
    decode(data)  # the untouched document is valid
    with pytest.raises(FormatError):
        decode(_set(path, value)(json.loads(json.dumps(data))))


def test_chain_entries_and_checkpoints_refuse_booleans() -> None:
    line = (RECORD / "stations/station-1/chain.jsonl").read_bytes().split(b"\n")[0]
    ChainEntry.from_json(parse_json(line))
    for field in (b'"version":2', b'"position":1', b'"batch":1'):
        changed = line.replace(field, field[:-1] + b"true") + b"\n"
        with pytest.raises(FormatError):
            list(parse_chain_lines(changed))


def test_a_trustee_key_file_is_checked_field_by_field() -> None:
    from election.keyceremony import Trustee

    good = {"version": 1, "trustee_id": "t-1", "index": 1, "quorum": 1, "base_hash": "00" * 32,
            "secret_share": "01" + "00" * 31}  # fmt: skip
    assert Trustee.from_secret_json(good).secret_share == 1
    for field, value in [("index", True), ("quorum", 0), ("trustee_id", ["t"]), ("version", True), ("index", 2**70)]:
        with pytest.raises(FormatError):
            Trustee.from_secret_json({**good, field: value})


def test_a_decryption_share_names_a_valid_trustee() -> None:
    data = load("decryption")
    for bad in (["trustee-1"], "Trustee 1", "trustee-1\n", None):
        with pytest.raises(FormatError):
            DecryptionShare.from_json({**data, "trustee_id": bad}, MANIFEST)


def test_a_roll_key_that_is_not_rsa_or_is_out_of_bounds_is_a_format_error() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = load("stations/station-1/station.json")
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = ec_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for roll_key in (der.hex(), data["roll_key"] + "00", data["roll_key"][:-2], "", "00" * 5000):
        with pytest.raises(FormatError):
            StationKeys.from_json({**data, "roll_key": roll_key})
