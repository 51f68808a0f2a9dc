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


def _check_canonical_value(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        raise FormatError(f"{path}: floats are not allowed in canonical JSON")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_canonical_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(f"{path}: object keys must be strings")
            _check_canonical_value(item, f"{path}.{key}")
        return
    raise FormatError(f"{path}: {type(value).__name__} cannot be encoded")


def canonical_bytes(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (the input of every hash and signature)."""
    _check_canonical_value(value, "$")
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
