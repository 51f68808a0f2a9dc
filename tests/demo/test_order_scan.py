"""The order scan itself can fail: it flags a file that keeps casting order and passes one that
keeps hash order, so a pass of the whole-election order test means something."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from order_scan import Ballot, adjacent_pairs, first_offsets, order_z, scan_files, spearman


def ballots(count: int, batch: int) -> list[Ballot]:
    made = []
    for rank in range(count):
        digest = hashlib.sha256(f"ballot {rank}".encode()).hexdigest()
        made.append(Ballot(digest[:16], (digest.encode(),), rank // batch + 1, rank))
    return made


def test_spearman_extremes() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == -1


def test_a_file_in_casting_order_is_flagged_and_one_in_hash_order_is_not(tmp_path: Path) -> None:
    made = ballots(36, 6)
    in_cast_order = b"\n".join(pattern for ballot in made for pattern in ballot.patterns)
    in_hash_order = b"\n".join(
        ballot.patterns[0] for ballot in sorted(made, key=lambda ballot: (ballot.batch, ballot.patterns[0]))
    )
    (tmp_path / "leaky.log").write_bytes(in_cast_order)
    (tmp_path / "mixed.jsonl").write_bytes(in_hash_order)
    found = scan_files(tmp_path, made)
    leaky, used = order_z(found[tmp_path / "leaky.log"], made)
    assert used == 6 and leaky > 5
    mixed, _ = order_z(found[tmp_path / "mixed.jsonl"], made)
    assert abs(mixed) < 4


def test_under_random_order_z_stays_near_zero() -> None:
    rng = random.Random(7)
    made = ballots(600, 10)
    values = []
    for _ in range(50):
        offsets = list(range(len(made)))
        rng.shuffle(offsets)
        found = {ballot.key: offsets[i] for i, ballot in enumerate(made)}
        values.append(order_z(found, made)[0])
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    assert abs(mean) < 0.5 and 0.5 < variance < 1.6


def test_adjacent_spoiled_and_cast_pairs_are_counted() -> None:
    made = ballots(6, 6)
    data = b"|".join(ballot.patterns[0] for ballot in made)
    found = first_offsets(data, made)
    pairs = [(made[0].key, made[1].key), (made[2].key, made[4].key)]
    assert adjacent_pairs(found, pairs) == 1
