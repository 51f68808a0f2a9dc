"""The one canonical encoding for everything that is hashed or signed.

Canonical JSON: UTF-8, object keys sorted by code point, no insignificant whitespace, no
floats (integers, strings, booleans, null, arrays and objects only). Byte strings, group
elements and scalars travel as lowercase hexadecimal strings. ``docs/formats.md`` specifies
it byte by byte so that an independent verifier can reproduce every hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from election.errors import FormatError

HASH_SIZE = 32


def _check_canonical_value(value: Any) -> None:
    """Refuse what canonical JSON cannot carry (floats, non-string keys, other types).

    Iterative and type-exact because every hashed and signed document passes through here.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    raise FormatError(f"object key {key!r} is not a string")
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is float:
            raise FormatError(f"{item!r}: floats are not allowed in canonical JSON")
        elif kind not in _SCALARS:
            raise FormatError(f"{kind.__name__} cannot be encoded in canonical JSON")


_SCALARS = frozenset({str, int, bool, type(None)})


def canonical_bytes(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (the input of every hash and signature)."""
    _check_canonical_value(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_json(data: bytes | str, *, max_size: int | None = None) -> Any:
    """Parse JSON from outside, refusing floats, NaN, duplicate keys and oversized input."""
    if max_size is not None and len(data) > max_size:
        raise FormatError(f"document is {len(data)} bytes, more than the limit of {max_size}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, item in pairs:
            if key in result:
                raise FormatError(f"duplicate key {key!r}")
            result[key] = item
        return result

    def no_float(text: str) -> Any:
        raise FormatError(f"number {text} is not an integer")

    def no_constant(text: str) -> Any:
        raise FormatError(f"{text} is not allowed")

    try:
        return json.loads(
            data,
            object_pairs_hook=no_duplicates,
            parse_float=no_float,
            parse_constant=no_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"not valid JSON: {exc}") from None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_value(value: Any) -> bytes:
    """SHA-256 of the canonical JSON encoding of ``value``."""
    return sha256(canonical_bytes(value))


def hex_bytes(text: Any, size: int | None, what: str) -> bytes:
    """Decode a lowercase hex field of exactly ``size`` bytes (any size when None)."""
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected a hex string, got {type(text).__name__}")
    if text != text.lower():
        raise FormatError(f"{what}: hex must be lowercase")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise FormatError(f"{what}: not hexadecimal") from None
    if len(raw) * 2 != len(text):
        raise FormatError(f"{what}: hex must have no spaces")
    if size is not None and len(raw) != size:
        raise FormatError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw
