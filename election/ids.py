"""Every identifier pattern of the election core, in one place, matched in full.

Why full match: ``re.match(r"^...$")`` lets a trailing newline through (``$`` matches before
a final ``\\n``), so ``"candidate-1\\n"`` was a second, different candidate that looked the
same on paper. :func:`re.fullmatch` with the pattern below is the whole rule; the character
classes are the ASCII ranges exactly as written (``docs/formats.md`` §1.4).
"""

from __future__ import annotations

import re
from typing import Any

from election.errors import FormatError

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
"""Manifest ids (election, contests, selections) and trustee ids."""
DEVICE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""Terminal (device) ids and station ids."""
_NAME = re.compile(NAME_PATTERN)
_DEVICE = re.compile(DEVICE_PATTERN)


def _check(pattern: re.Pattern[str], value: Any, what: str, description: str, error: type[FormatError]) -> str:
    if type(value) is not str or pattern.fullmatch(value) is None:
        shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
        raise error(f"{what}: {shown} is not {description}")
    return value


def check_name_id(value: Any, what: str, error: type[FormatError] = FormatError) -> str:
    """A manifest or trustee identifier: 1–64 of a-z 0-9 _ -, starting alphanumeric."""
    return _check(_NAME, value, what, "an identifier (1–64 of a-z 0-9 _ -, starting alphanumeric)", error)


def check_trustee_id(value: Any, what: str = "trustee_id") -> str:
    return check_name_id(value, what)


def check_device_id(value: Any, what: str = "device_id") -> str:
    """A terminal id: 1–64 of A-Z a-z 0-9 _ . -, starting alphanumeric."""
    return _check(_DEVICE, value, what, "a device id (1–64 of A-Z a-z 0-9 _ . -, starting alphanumeric)", FormatError)


def check_station_id(value: Any, what: str = "station_id") -> str:
    """A station id: the same pattern as a device id (it names a folder of the record)."""
    return _check(_DEVICE, value, what, "a station id (1–64 of A-Z a-z 0-9 _ . -, starting alphanumeric)", FormatError)
