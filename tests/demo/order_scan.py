"""Recover every order of ballots that stored or published bytes keep, and measure it against the
true casting order (issue 16).

An observer who holds the files of an election (a ledger's SQLite file, the central store, the
record, any log) and noted who entered which booth when, pairs voters with ballots if some file
keeps ballots in casting order. This module finds, in each file, where each ballot's
identifiers occur (its ballot hash in hex and raw, its ballot id, its token message, its
tracking code), reads the order of first occurrences, and compares it with the true casting
order *within each ledger batch*: across batches the order is public by design (a batch is
committed after the previous one); within a batch of ``k`` it must be consistent with chance.

The statistic: for each batch with ``n ≥ 3`` ballots found in a file, Spearman's ρ between
casting order and file order; under a random order ρ has mean 0 and variance ``1/(n-1)``, so
``Z = Σ ρ_b·√(n_b−1) / √B`` is approximately standard normal. A file that keeps casting order
gives ``Z ≈ √((n−1)·B)`` (5.5 for six batches of six).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SKIP_SUFFIXES = (".pem", ".key", ".crt", ".crl", ".der", ".htsvoice", ".so", ".pyc")


@dataclass(frozen=True, slots=True)
class Ballot:
    """What the test knows of one ballot: the patterns that identify it, its batch, and when it
    was really cast (rank in the true order)."""

    key: str
    patterns: tuple[bytes, ...]
    batch: int
    cast_rank: int


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's ρ of two equally long sequences without ties (ranks are positions)."""
    n = len(xs)
    rx = {value: rank for rank, value in enumerate(sorted(xs))}
    ry = {value: rank for rank, value in enumerate(sorted(ys))}
    d2 = sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def order_z(found: Mapping[str, int], ballots: Iterable[Ballot]) -> tuple[float, int]:
    """``(Z, batches used)`` for one file: ``found`` maps a ballot key to its first offset."""
    by_batch: dict[int, list[tuple[int, int]]] = {}
    for ballot in ballots:
        if ballot.key in found:
            by_batch.setdefault(ballot.batch, []).append((ballot.cast_rank, found[ballot.key]))
    total, used = 0.0, 0
    for pairs in by_batch.values():
        if len(pairs) < 3:
            continue
        rho = spearman([cast for cast, _ in pairs], [offset for _, offset in pairs])
        total += rho * math.sqrt(len(pairs) - 1)
        used += 1
    return (total / math.sqrt(used) if used else 0.0), used


def first_offsets(data: bytes, ballots: Iterable[Ballot]) -> dict[str, int]:
    """Where each ballot first occurs in ``data`` by any of its patterns."""
    found: dict[str, int] = {}
    for ballot in ballots:
        offsets = [offset for pattern in ballot.patterns if (offset := data.find(pattern)) >= 0]
        if offsets:
            found[ballot.key] = min(offsets)
    return found


def scan_files(root: Path, ballots: Sequence[Ballot]) -> dict[Path, dict[str, int]]:
    """Every regular file under ``root`` in which at least two ballots are found."""
    result: dict[Path, dict[str, int]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.suffix in SKIP_SUFFIXES:
            continue
        found = first_offsets(path.read_bytes(), ballots)
        if len(found) >= 2:
            result[path] = found
    return result


def adjacent_pairs(found: Mapping[str, int], pairs: Iterable[tuple[str, str]]) -> int:
    """How many ``(spoiled, cast)`` pairs of one voter sit next to each other, spoiled first,
    in a file's order: a file that keeps casting order puts every such pair side by side."""
    order = sorted(found, key=found.__getitem__)
    following = {order[i]: order[i + 1] for i in range(len(order) - 1)}
    return sum(1 for spoiled, cast in pairs if following.get(spoiled) == cast)
