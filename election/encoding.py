"""The one canonical encoding for everything that is hashed or signed, and its total parser.

Canonical JSON: UTF-8, object keys sorted by code point, no insignificant whitespace, no
floats (integers, strings, booleans, null, arrays and objects only). Byte strings, group
elements and scalars travel as lowercase hexadecimal strings. ``docs/formats.md`` specifies
it byte by byte so that an independent verifier can reproduce every hash.

:func:`parse_json` is *total*: whatever bytes arrive (from a terminal, a hub, a record file),
it returns a value or raises :class:`FormatError`, never another exception, in time and
memory linear in the input. The services catch ``FormatError`` and refuse the message; any
other exception would crash them (a lone surrogate once did, in a redelivery loop). The same
bounds hold for :func:`canonical_bytes`, so that whatever we write we can read back.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from election.errors import FormatError

HASH_SIZE = 32
MAX_DEPTH = 32
"""Most arrays/objects nested in one another (a top-level ``[]`` is depth 1)."""
MAX_INT_DIGITS = 19
"""Most decimal digits of a JSON integer, checked before ``int()`` runs."""
INT_LIMIT = 2**63
"""Every JSON integer ``n`` satisfies ``−2^63 < n < 2^63``."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_LOWER_HEX = re.compile("(?:[0-9a-f]{2})*")
_SCALARS = frozenset({str, int, bool, type(None)})


def _type_name(value: Any) -> str:
    """The JSON name of a parsed value's type (for messages a person reads)."""
    return {bool: "a boolean", int: "an integer", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _check_string(text: str, what: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise FormatError(f"{what}: a lone surrogate (U+D800..U+DFFF) is not a character")


def _check_tree(value: Any, *, encoding: bool) -> None:
    """Refuse what canonical JSON cannot carry, iteratively (no recursion, any input depth).

    Type-exact (``type(x) is int``: a bool is not an integer, an ``IntEnum`` is not JSON),
    bounded in depth and integer size, and free of lone surrogates in strings and keys.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list or kind is tuple:
            if depth >= MAX_DEPTH:
                raise FormatError(f"nesting deeper than {MAX_DEPTH} arrays/objects")
            if kind is dict:
                for key in item:
                    if type(key) is not str:
                        raise FormatError(f"object key {key!r} is not a string")
                    _check_string(key, "object key")
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif kind is str:
            _check_string(item, "string")
        elif kind is int:
            if not -INT_LIMIT < item < INT_LIMIT:
                raise FormatError(f"integer out of range: |n| must be below 2^63 (got {item.bit_length()} bits)")
        elif kind is float:
            raise FormatError(f"{item!r}: floats are not allowed in canonical JSON")
        elif kind not in _SCALARS:
            what = "encoded" if encoding else "parsed"
            raise FormatError(f"{kind.__name__} cannot be {what} as canonical JSON")


def canonical_bytes(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (the input of every hash and signature).

    Raises FormatError (never UnicodeEncodeError or TypeError) for what has no canonical form.
    """
    _check_tree(value, encoding=True)
    return encode_checked(value)


def encode_checked(value: Any) -> bytes:
    """The canonical bytes of a tree already known to have a canonical form: what
    :func:`parse_json` returned, or a part of it that a strict decoder accepted (every field of
    it typed and bounded). Skips :func:`canonical_bytes`' walk over the tree, which costs more
    than the encoding itself on the ledger's and the verifier's hot paths; anything else goes
    through :func:`canonical_bytes`."""
    return _ENCODER.encode(value).encode("utf-8")


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _as_text(data: bytes | bytearray | memoryview | str) -> tuple[str, bytes]:
    """The document as text and as its exact bytes: strict UTF-8, no byte-order mark."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError("not valid JSON: a lone surrogate in the text") from None
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            # Decoded here, strictly: json.loads(bytes) would guess UTF-16/32 from the bytes.
            text = raw.decode("utf-8", "strict")
        except UnicodeDecodeError as exc:
            raise FormatError(f"not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        raise FormatError(f"a JSON document is bytes or text, not {type(data).__name__}")
    if text.startswith("\ufeff"):
        raise FormatError("not valid JSON: a byte-order mark is not allowed")
    return text, raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise FormatError(f"duplicate key {key[:64]!r}")
        result[key] = item
    return result


def _bounded_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise FormatError(f"integer of {digits} digits: at most {MAX_INT_DIGITS} are allowed")
    value = int(text)
    if not -INT_LIMIT < value < INT_LIMIT:
        raise FormatError("integer out of range: |n| must be below 2^63")
    return value


def _no_float(text: str) -> Any:
    raise FormatError(f"number {text[:40]} is not an integer")


def _no_constant(text: str) -> Any:
    raise FormatError(f"{text} is not allowed")


def parse_json(
    data: bytes | bytearray | memoryview | str, *, max_size: int | None = None, canonical: bool = False
) -> Any:
    """Parse JSON from outside; any input gives a value or FormatError, nothing else.

    Refuses: more than ``max_size`` bytes; anything but strict UTF-8 (UTF-16/32, a BOM,
    encoded surrogates); floats, exponents, NaN and Infinity; integers of more than
    :data:`MAX_INT_DIGITS` digits or outside ``±2^63``; duplicate keys; lone surrogates in
    strings or keys (also as ``\\ud800`` escapes); nesting deeper than :data:`MAX_DEPTH`.
    With ``canonical=True`` it also refuses a document whose bytes are not exactly
    ``canonical_bytes`` of its value: use it for everything that is hashed or signed, so
    that the bytes stored are the bytes the hash and the signature cover.
    """
    if max_size is not None and len(data) > max_size:
        raise FormatError(f"document is {len(data)} bytes, more than the limit of {max_size}")
    text, raw = _as_text(data)
    if max_size is not None and len(raw) > max_size:
        raise FormatError(f"document is {len(raw)} bytes, more than the limit of {max_size}")
    if canonical:
        value = _parse_canonical_fast(text, raw)
        if value is not _NOT_FAST:
            return value
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_bounded_int,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise FormatError(f"not valid JSON: nesting deeper than {MAX_DEPTH} arrays/objects") from None
    except ValueError as exc:  # json.JSONDecodeError and anything a hook's int() could say
        raise FormatError(f"not valid JSON: {exc}") from None
    _check_tree(value, encoding=False)
    if canonical and canonical_bytes(value) != raw:
        raise FormatError("not in canonical form (docs/formats.md §1)")
    return value


_NOT_FAST = object()


def _parse_canonical_fast(text: str, raw: bytes) -> Any:
    """The common case of a canonical document, in one pass of each C routine: its value, or
    :data:`_NOT_FAST` when the full path must decide (and name the fault).

    Without a ``\\u`` escape a strictly decoded text holds no lone surrogate; a document that
    equals the encoding of its value has no duplicate key (the parser keeps the last one, and
    the encoding would then be shorter); the parser's hooks already refuse floats, constants
    and unbounded integers, so only the depth is left to walk, over the containers alone."""
    if "\\u" in text:
        return _NOT_FAST
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_no_float, parse_constant=_no_constant)
    except (RecursionError, ValueError):
        return _NOT_FAST
    if not _shallow(value) or encode_checked(value) != raw:
        return _NOT_FAST
    return value


def _shallow(value: Any) -> bool:
    """Whether no container of a parsed tree lies :data:`MAX_DEPTH` or more levels deep."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        if depth >= MAX_DEPTH:
            return False
        below = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below.extend(child for child in children if type(child) is dict or type(child) is list)
        level, depth = below, depth + 1
    return True


def parse_canonical(data: bytes | bytearray | memoryview | str, *, max_size: int | None = None) -> Any:
    """``parse_json(data, max_size=max_size, canonical=True)``: for hashed or signed documents."""
    return parse_json(data, max_size=max_size, canonical=True)


def strict_int(
    value: Any,
    what: str,
    *,
    minimum: int = -(INT_LIMIT - 1),
    maximum: int = INT_LIMIT - 1,
    error: type[FormatError] = FormatError,
) -> int:
    """``value`` if it is a JSON integer (never a boolean) in ``minimum..maximum``.

    Python's ``True == 1`` and ``isinstance(True, int)``, so every integer field of every
    decoder goes through here: ``"version": true`` must be refused wherever ``1`` is taken.
    """
    if type(value) is not int:
        raise error(f"{what}: expected an integer, got {_type_name(value)}")
    if not minimum <= value <= maximum:
        raise error(f"{what}: {value} is not in {minimum}..{maximum}")
    return value


def check_version(data: dict[str, Any], expected: int, what: str, error: type[FormatError] = FormatError) -> None:
    """The document's ``version`` is exactly the integer ``expected`` (``true`` is not 1)."""
    version = data.get("version")
    if type(version) is not int or version != expected:
        shown = repr(version) if type(version) in (int, bool, type(None)) else _type_name(version)
        raise error(f"{what}: unsupported version {shown} (expected the integer {expected})")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_value(value: Any) -> bytes:
    """SHA-256 of the canonical JSON encoding of ``value``."""
    return sha256(canonical_bytes(value))


def hex_bytes(text: Any, size: int | None, what: str) -> bytes:
    """Decode a lowercase hex field of exactly ``size`` bytes (any size when None).

    Every point, scalar, hash and signature of every ballot comes through here (56 fields of a
    2 × 4 ballot): a well-formed field is decided by one regular-expression match; the checks
    below run only to name what is wrong with another."""
    if type(text) is str and _LOWER_HEX.fullmatch(text) and (size is None or len(text) == 2 * size):
        return bytes.fromhex(text)
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected a hex string, got {_type_name(text)}")
    if not text.isascii() or text != text.lower():
        raise FormatError(f"{what}: hex must be lowercase ASCII")
    if size is not None and len(text) != 2 * size:
        raise FormatError(f"{what}: expected {size} bytes ({2 * size} hex digits), got {len(text)} characters")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise FormatError(f"{what}: not hexadecimal") from None
    if len(raw) * 2 != len(text):
        raise FormatError(f"{what}: hex must have no spaces")
    return raw
