"""Hostile variants of a valid document: each must be refused by its schema."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

FREE_TEXT_KEYS = frozenset(
    {"en", "ja", "detail", "problems", "Content", "Name", "Issuer", "IssuerAbbreviation", "VendorApplicationId",
     "OtherType", "ca", "certificate", "link_request"}
)  # fmt: skip
"""Keys whose strings are text for people (or PEM): a trailing newline is allowed there."""
MAP_KEYS = frozenset({"terminals", "devices", "late", "unreachable", "stations", "municipalities"})
"""Objects whose keys are data (terminal ids), not field names (``late``, ``unreachable``: a closing
report's late ballots and unreachable terminals' heads, per terminal; ``stations``, ``municipalities``:
reconciliation.json's, per station and per municipality)."""
_FIXED_HEX = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}|[0-9a-f]{128}")
HUGE = 10**300
"""Far beyond 2^63 (and still printable: Python refuses repr() beyond 4300 digits)."""


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*path, index))


def _replace(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    result = copy.deepcopy(document)
    target = result
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return result


def _without(document: Any, path: tuple[Any, ...], key: str) -> Any:
    result = copy.deepcopy(document)
    target = result
    for step in path:
        target = target[step]
    del target[key]
    return result


def _text_context(path: tuple[Any, ...]) -> bool:
    return any(step in FREE_TEXT_KEYS for step in path if isinstance(step, str))


def variants(document: Any, *, limit: int | None = None) -> Iterator[tuple[str, Any]]:
    """(label, variant) for every hostile change this module knows, at every place it applies."""
    count = 0
    for path, value in _nodes(document):
        where = "/".join(map(str, path)) or "<root>"
        in_map = bool(path) and path[-1] in MAP_KEYS
        found: list[tuple[str, Any]] = []
        if isinstance(value, dict) and not in_map:
            extra = copy.deepcopy(value)
            extra["unexpected"] = 1
            found.append((f"extra field at {where}", extra if not path else None))
            if path:
                found[-1] = (f"extra field at {where}", _replace(document, path, extra))
            found += [(f"missing {where}/{key}", _without(document, path, key)) for key in value]
        elif type(value) is int:
            found += [
                (f"{where} = true", _replace(document, path, True)),
                (f"{where} = 2^64", _replace(document, path, 2**64)),
                (f"{where} = 10^300", _replace(document, path, HUGE)),
                (f"{where} = -1", _replace(document, path, -1)),
                (f'{where} = "{value}"', _replace(document, path, str(value))),
            ]
        elif type(value) is bool:
            found.append((f"{where} = {int(value)}", _replace(document, path, int(value))))
        elif value is None:
            found.append((f"{where} = true (for null)", _replace(document, path, True)))
        elif isinstance(value, str) and path:
            found.append((f"{where} + lone surrogate", _replace(document, path, value + "\ud800")))
            if not _text_context(path):
                found.append((f"{where} + trailing newline", _replace(document, path, value + "\n")))
            if _FIXED_HEX.fullmatch(value):
                if value.upper() != value:
                    found.append((f"{where} in uppercase hex", _replace(document, path, value.upper())))
                found.append((f"{where} one byte short", _replace(document, path, value[:-2])))
                found.append((f"{where} one byte long", _replace(document, path, value + "00")))
        for label, variant in found:
            if variant is None:
                continue
            yield label, variant
            count += 1
            if limit is not None and count >= limit:
                return


def root_variants(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The classic attacks on a document's head: version true/another/"1"/null, type changed, not an object."""
    if "version" in document:
        other = 2 if document["version"] == 1 else 1  # the other format version
        for bad in (True, other, str(document["version"]), None, 0, HUGE):
            yield f"version = {bad!r:.20}", {**document, "version": bad}
    if "type" in document:
        yield "type changed", {**document, "type": str(document["type"]) + "x"}
        yield "type with trailing newline", {**document, "type": str(document["type"]) + "\n"}
    yield "an array instead of the object", [document]
    yield "null instead of the object", None
