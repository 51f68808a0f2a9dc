"""The schemas themselves: valid draft 2020-12, strict everywhere, indexed, and tied to the code's enums."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from schema_tools import BASE, SCHEMAS, assert_invalid, assert_valid, documents, validator

from election.chain import ENTRY_KINDS
from election.encoding import parse_json
from election.errors import FormatError
from protocol.errors import CheckinReason, Reason
from protocol.messages import POLLS_STATES

NAMES = sorted(documents())
INT_MAX = 2**63 - 1


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def subschemas(name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object of a file (not the maps of property names, which are not schemas)."""
    for path, node in walk(documents()[name]):
        if not path.endswith(("/properties", "/$defs")):
            yield path, node


def test_folder_holds_schemas_and_an_index():
    assert len(NAMES) >= 30
    assert {p.name for p in SCHEMAS.iterdir()} == {*NAMES, "README.md"}, "only schemas and README.md"


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_draft_2020_12_with_its_own_id(name: str):
    schema = documents()[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == BASE + name
    if name != "common.schema.json":
        assert schema.get("title") and schema.get("description")


def test_readme_indexes_every_schema():
    readme = (SCHEMAS / "README.md").read_text("utf-8")
    listed = set(re.findall(r"\(([a-z0-9-]+\.schema\.json)\)", readme))
    assert listed == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_object_is_closed_and_every_value_bounded(name: str):
    for path, node in subschemas(name):
        kind = node.get("type")
        if kind == "object":
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{name} {path}: open object"
                assert set(node.get("required", ())) == set(node["properties"]), f"{name} {path}: optional field"
            else:
                assert isinstance(node.get("additionalProperties"), dict), f"{name} {path}: untyped map"
                assert "maxProperties" in node and "propertyNames" in node, f"{name} {path}: unbounded map"
        if kind == "integer" and "const" not in node:
            assert "minimum" in node and node.get("maximum", INT_MAX + 1) <= INT_MAX, f"{name} {path}: unbounded int"
        if kind == "array":
            assert "maxItems" in node, f"{name} {path}: unbounded array"
        if kind == "string" and "const" not in node and "enum" not in node and path != "#/$defs/text":
            assert "maxLength" in node, f"{name} {path}: unbounded string"
        if "pattern" in node:
            pattern = node["pattern"]
            assert pattern.startswith("^"), f"{name} {path}: pattern not anchored at the start"
            assert pattern.endswith("$") or pattern.endswith("$(?!\\n)"), f"{name} {path}: pattern not anchored"
            re.compile(pattern)
        if "$ref" in node and not node["$ref"].startswith(("#/", "common.schema.json#/")):
            assert node["$ref"] in documents(), f"{name} {path}: dangling $ref"


def test_patterns_refuse_a_trailing_newline_even_in_python():
    """ECMA-262 ``$`` never matches before a final newline, Python's ``re.search`` does: every
    id/hex pattern ends in ``$(?!\\n)`` so both dialects give the same answer."""
    defs = documents()["common.schema.json"]["$defs"]
    samples = {"nameId": "candidate-1", "deviceId": "T01", "hex16": "00" * 16, "hex32": "ab" * 32,
               "signature": "cd" * 64, "scalar": "01" * 32, "trackingCode": "X66L-MJWE-74KT-PRJQ"}  # fmt: skip
    for name, good in samples.items():
        pattern = defs[name]["pattern"]
        assert re.search(pattern, good), name
        assert not re.search(pattern, good + "\n"), f"{name}: {pattern} lets a trailing newline through"
        assert defs[name]["pattern"].endswith("$(?!\\n)")
    manifest = parse_json((SCHEMAS.parent / "test-vectors" / "record" / "manifest.json").read_bytes())
    assert_valid("manifest.schema.json", manifest)
    manifest["contests"][0]["selections"][0]["id"] += "\n"
    assert_invalid("manifest.schema.json", manifest, "a selection id with a trailing newline")


def test_enums_are_the_codes_enums():
    ack = documents()["ack.schema.json"]["oneOf"][1]["properties"]["reason"]["enum"]
    assert ack == [reason.value for reason in Reason]
    reply = documents()["checkin-reply.schema.json"]["oneOf"][1]["properties"]["reason"]["enum"]
    assert reply == [reason.value for reason in CheckinReason]
    assert documents()["common.schema.json"]["$defs"]["pollsState"]["enum"] == list(POLLS_STATES)
    assert documents()["chain-entry.schema.json"]["properties"]["kind"]["enum"] == list(ENTRY_KINDS)


def test_booleans_are_not_integers_but_a_float_one_is_so_bytes_are_checked_canonically():
    """JSON Schema's data model: ``true`` is not an integer (good), ``1.0`` is the integer 1.
    The schemas cannot see the difference between ``1`` and ``1.0``; the canonical-JSON rule
    (no floats, docs/formats.md §1) refuses the latter on the bytes, before any schema."""
    version = validator("common.schema.json").evolve(schema={"$ref": BASE + "common.schema.json#/$defs/version"})
    assert version.is_valid(1)
    assert not version.is_valid(True)
    assert version.is_valid(1.0)
    with pytest.raises(FormatError):
        parse_json(b'{"version":1.0}')


def test_text_refuses_lone_surrogates_and_accepts_pairs():
    text = validator("common.schema.json").evolve(schema={"$ref": BASE + "common.schema.json#/$defs/detail"})
    assert text.is_valid("候補者 🗳 ok")
    for bad in ("\ud800", "a\udfffb", "\udc00\ud800"):
        assert not text.is_valid(bad), repr(bad)
    assert not text.is_valid("x" * 501)
