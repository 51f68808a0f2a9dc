"""The check that an audit log holds no voter identity and no choice.

The allow-list in `audit.events` makes leaks impossible by construction; this check is the
independent proof an auditor (and the end-to-end election test) runs on a real log: given
the strings that must never appear — voter keys, card certificate fields such as names,
addresses and serial numbers, selection ids and labels — it reports every line holding one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MIN_FORBIDDEN_LENGTH = 3


@dataclass(frozen=True)
class Leak:
    line: int
    forbidden: str

    def __str__(self) -> str:
        return f"line {self.line}: contains {self.forbidden!r}"


def find_forbidden(path: Path, forbidden: Iterable[str]) -> list[Leak]:
    """Every (line, string) where a forbidden string occurs, compared case-insensitively.

    Strings shorter than three characters are refused: they would match by accident and make
    the check meaningless.
    """
    needles = sorted({text.casefold() for text in forbidden})
    short = [text for text in needles if len(text) < MIN_FORBIDDEN_LENGTH]
    if short:
        raise ValueError(f"forbidden strings too short to check meaningfully: {short}")
    text = Path(path).read_bytes().decode("utf-8", errors="replace").casefold()
    return [
        Leak(number, needle)
        for number, line in enumerate(text.split("\n"), start=1)
        for needle in needles
        if needle in line
    ]
