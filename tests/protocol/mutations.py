"""Hypothesis strategies for hostile inputs: random bytes, JSON-like token soup, and mutated
valid documents — int → bool, a huge integer, a float, a lone surrogate, deep nesting, a
duplicated key, an extra or missing field, a value wrapped in a list, and truncation.

A mutation works on the parsed document and is encoded with :func:`encode_hostile`, which can
write what no valid (canonical) document holds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from election.encoding import parse_json

HUGE = "\u0000HUGE\u0000"
FLOAT = "\u0000FLOAT\u0000"
DUPLICATE = "\u0000DUP\u0000"
DEEP = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
REPLACEMENTS = st.sampled_from(
    [True, False, None, 0, -1, 1, 2, 2**63 - 1, 2**40 + 1, HUGE, FLOAT, "", "\ud800", "a\udfff", "x" * 3000,
     "00" * 32, "AB" * 32, "st-x\n", "x1\n", "ok", "forked", "open", [], {}, DEEP, {"a": 1}]
).map(copy.deepcopy)  # fmt: skip
"""A fresh copy at every draw: the mutations change containers in place."""
FIELD_NAMES = st.sampled_from(["extra", "version", "type", "signature", "station_id", "request", "\udc80", ""])


def encode_hostile(value: Any) -> bytes:
    """Canonical-looking JSON that may carry what canonical JSON cannot (see the markers)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    text = text.replace(json.dumps(HUGE), "9" * 5000).replace(json.dumps(FLOAT), "1.5")
    return text.replace(json.dumps(DUPLICATE) + ":1,", "").replace("," + json.dumps(DUPLICATE) + ":1", "").encode()


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


@st.composite
def mutated(draw: st.DrawFn, valid: bytes, max_mutations: int = 3) -> bytes:
    """``valid`` with one to ``max_mutations`` hostile changes, possibly truncated."""
    document = parse_json(valid)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = sorted(_paths(document), key=repr)
        path = draw(st.sampled_from(paths))
        parent: Any = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "int-to-bool", "delete", "add", "duplicate", "wrap"]))
        if not path:
            if action == "replace":
                document = draw(REPLACEMENTS)
            continue
        key = path[-1]
        if action == "replace":
            parent[key] = draw(REPLACEMENTS)
        elif action == "int-to-bool" and type(parent[key]) is int:
            parent[key] = bool(parent[key])
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(FIELD_NAMES)] = draw(REPLACEMENTS)
        elif action == "add" and isinstance(parent, list):
            parent.append(draw(REPLACEMENTS))
        elif action == "duplicate" and isinstance(parent, dict):
            parent[DUPLICATE] = 1
        elif action == "wrap":
            parent[key] = [parent[key]]
    raw = encode_hostile(document)
    end = draw(st.sampled_from([None, None, None, None, draw(st.integers(0, max(len(raw) - 1, 0)))]))
    return raw if end is None else raw[:end]


JSONISH = st.lists(
    st.sampled_from(['{', '}', '[', ']', ',', ':', '"a"', '"version"', '"type"', '"\\ud800"', "1", "-0", "true",
                     "null", "1.5", "1e3", "99999999999999999999", "9" * 400, " ", "\\", '"', "\ufeff"]),
    max_size=40,
).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))  # fmt: skip
"""Bytes that look like JSON: the decoders' fast paths and error paths both get exercised."""


def hostile_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, JSON-like soup, and mutations of ``valid``."""
    return st.one_of(st.binary(max_size=200), JSONISH, mutated(valid), mutated(valid), mutated(valid))


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
"""The fixed budget of every fuzz test here: 150 examples, the same ones on every run."""
LIGHT = settings(FUZZ, max_examples=100)
"""For the handlers whose every example runs real cryptography."""
