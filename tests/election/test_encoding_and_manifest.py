from __future__ import annotations

import pytest

from election.encoding import canonical_bytes, parse_json
from election.errors import FormatError, ManifestError
from election.manifest import Manifest, sample_manifest


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode()


def test_floats_cannot_be_encoded_or_parsed() -> None:
    with pytest.raises(FormatError):
        canonical_bytes({"x": 1.5})
    with pytest.raises(FormatError, match="integer"):
        parse_json(b'{"x": 1.5}')
    with pytest.raises(FormatError):
        parse_json(b'{"x": NaN}')


def test_parse_refuses_duplicates_oversize_and_garbage() -> None:
    with pytest.raises(FormatError, match="duplicate"):
        parse_json(b'{"a": 1, "a": 2}')
    with pytest.raises(FormatError, match="limit"):
        parse_json(b"[" + b"1," * 100 + b"1]", max_size=50)
    with pytest.raises(FormatError, match="not valid JSON"):
        parse_json(b"\xff\xfe{")


def test_manifest_round_trip_and_base_hash_is_stable() -> None:
    manifest = sample_manifest(3, 4, 2)
    again = Manifest.from_json(parse_json(canonical_bytes(manifest.to_json())))
    assert again == manifest and again.base_hash == manifest.base_hash
    assert sample_manifest(3, 4, 1).base_hash != manifest.base_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["contests"][0].update(limit=0), "limit"),
        (lambda m: m["contests"][0].update(limit=9), "limit"),
        (lambda m: m["contests"][0]["selections"].append(dict(m["contests"][0]["selections"][0])), "unique"),
        (lambda m: m["contests"].append(dict(m["contests"][0])), "unique"),
        (lambda m: m["contests"][0].update(id="Bad Id"), "identifier"),
        (lambda m: m["contests"][0]["name"].pop("ja"), "languages"),
        (lambda m: m.update(contests=[]), "at least one contest"),
        (lambda m: m.update(extra=1), "unknown fields"),
        (lambda m: m.update(version=1), "version"),
        (lambda m: m["contests"][0].update(limit=True), "limit"),
    ],
)
def test_invalid_manifests_are_refused_with_the_place(change, message: str) -> None:
    data = sample_manifest(2, 3, 1).to_json()
    change(data)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(data)
