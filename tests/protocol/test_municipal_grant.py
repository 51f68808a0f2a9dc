"""The municipal link grant (centre → an early/common station, carried as a file): a real grant
decodes and re-encodes byte for byte; any bytes — random, JSON-like, mutated grants, valid
JSON with hostile field values — give the grant or a :class:`Refusal`, never another
exception; and what the decoder accepts is exactly what the encoder writes. The grant and the
signed roll marks match their JSON Schemas (docs/schemas/municipal-*.schema.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from mutations import FUZZ, hostile_bytes

from election.encoding import canonical_bytes
from election.errors import FormatError
from infra.pki import Role, StationCA, certificate_pem
from protocol.errors import Reason, Refusal
from protocol.municipal import MunicipalGrant, RollMarks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "schemas"))
from schema_tools import assert_invalid, assert_valid


def _public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def grant(tmp_path_factory: pytest.TempPathFactory) -> MunicipalGrant:
    ca = StationCA.create(tmp_path_factory.mktemp("central") / "ca", "central")
    roll = ca.issue(ed25519.Ed25519PrivateKey.generate().public_key(), "st-a.roll", Role.ROLL)
    token = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return MunicipalGrant(
        "st-a",
        "kaga",
        "early",
        "127.0.0.1",
        8884,
        certificate_pem(ca.certificate),
        certificate_pem(roll),
        _public_pem(token),
    )


def decode_or_refuse(payload: bytes, valid: MunicipalGrant) -> None:
    try:
        found = MunicipalGrant.decode(payload)
    except Refusal as refusal:
        assert refusal.reason in (Reason.MALFORMED, Reason.TOO_LARGE) and isinstance(refusal.detail, str)
        return
    assert found.encode() == payload, "accepted bytes that are not the grant's own encoding"
    assert found.station_id and found.kind in ("early", "common")


def test_a_real_grant_round_trips(grant: MunicipalGrant):
    assert MunicipalGrant.decode(grant.encode()) == grant


def test_refusals_name_the_field(grant: MunicipalGrant):
    document = grant.to_json()
    cases = {
        "kind": ({**document, "kind": "election_day"}, "kind"),
        "station": ({**document, "station_id": "st-b"}, "not for st-b.roll"),
        "token": ({**document, "token_key": _public_pem(ec.generate_private_key(ec.SECP256R1())).decode()},
                  "RSA public key"),
        "small token": ({**document, "token_key": _public_pem(rsa.generate_private_key(65537, 1024)).decode()},
                        "at least 2048"),
        "port": ({**document, "port": 0}, "port"),
        "type": ({**document, "type": "link_grant"}, "type"),
        "version": ({**document, "version": True}, "version"),
        "municipality": ({**document, "municipality": "kaga\n"}, "municipality"),
    }  # fmt: skip
    for name, (changed, words) in cases.items():
        with pytest.raises(Refusal) as refused:
            MunicipalGrant.decode(canonical_bytes(changed))
        assert words in str(refused.value), (name, str(refused.value))
    not_canonical = json.dumps(document, indent=1).encode()
    with pytest.raises(Refusal):
        MunicipalGrant.decode(not_canonical)


@FUZZ
@given(data=st.data())
def test_hostile_bytes_give_the_grant_or_a_refusal(grant: MunicipalGrant, data: st.DataObject):
    decode_or_refuse(data.draw(hostile_bytes(grant.encode())), grant)


TEXT = st.one_of(st.text(max_size=80), st.sampled_from(["", "\ud800", "x" * 20_000, "-----BEGIN CERTIFICATE-----\n"]))
VALUES = st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3))


@FUZZ
@given(field=st.sampled_from(["station_id", "municipality", "kind", "host", "port", "ca", "certificate",
                              "token_key", "version", "type"]), value=VALUES)  # fmt: skip
def test_any_value_in_any_field_gives_the_grant_or_a_refusal(grant: MunicipalGrant, field: str, value):
    document = {**grant.to_json(), field: value}
    try:
        payload = canonical_bytes(document)
    except FormatError:  # a lone surrogate cannot even be written canonically: send it escaped
        payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    decode_or_refuse(payload, grant)


def test_the_grant_and_the_marks_match_their_schemas(grant: MunicipalGrant):
    assert_valid("municipal-link.schema.json", json.loads(grant.encode()), "a real grant")
    assert_invalid("municipal-link.schema.json", {**grant.to_json(), "kind": "election_day"}, "an election-day kind")
    assert_invalid("municipal-link.schema.json", {**grant.to_json(), "extra": 1}, "an extra field")
    key = ed25519.Ed25519PrivateKey.generate()
    marks = RollMarks("kaga", "municipal-roll", b"\x01" * 32, (b"\x02" * 32, b"\x03" * 32)).signed(key)
    document = json.loads(marks)
    assert_valid("municipal-marks.schema.json", document, "signed early marks")
    assert_invalid("municipal-marks.schema.json", {**document, "voter_keys": ["02" * 32, "02" * 32]}, "a duplicate")
    assert_invalid("municipal-marks.schema.json", {**document, "signature": "00"}, "a short signature")
