"""Load docs/schemas/ once and validate with it (imported by the conftest and the test modules)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from hub_fixtures import SoftCard

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
BASE = "https://polling-station.invalid/schemas/v1/"


@cache
def documents() -> dict[str, dict[str, Any]]:
    """File name → parsed schema, for every ``*.schema.json`` of docs/schemas/."""
    return {path.name: json.loads(path.read_text("utf-8")) for path in sorted(SCHEMAS.glob("*.schema.json"))}


@cache
def registry() -> Registry:
    resources = [(BASE + name, Resource.from_contents(doc, DRAFT202012)) for name, doc in documents().items()]
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        documents()[name], registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(name: str, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in validator(name).iter_errors(instance)]  # fmt: skip


def assert_valid(name: str, instance: Any, what: str = "") -> None:
    found = errors(name, instance)
    assert not found, f"{what or name} does not follow {name}:\n" + "\n".join(found[:10])


def assert_invalid(name: str, instance: Any, what: str = "") -> None:
    assert not validator(name).is_valid(instance), f"{name} accepts {what or instance!r}"


def payload_json(payload: bytes) -> Any:
    """A real message's bytes as JSON (strictly: UTF-8, no duplicate keys)."""
    from election.encoding import parse_json

    return parse_json(payload)


@dataclass(frozen=True)
class SchemaTemplate:
    """A station template for the real-hub schema tests (tests/schemas/conftest.py)."""

    station: Path
    election: Path
    voters: list[SoftCard]
    """The cards of the voters on the roll."""
    stranger: SoftCard
    """A genuine card of the same JPKI CA whose holder is not on the roll."""
    foreign: SoftCard
    """A card of a JPKI CA the roll does not trust."""
