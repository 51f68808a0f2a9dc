"""Issue 16: the order in which voters cast cannot be recovered from anything stored or published.

A whole election through the real parts (the demo's: hub, booths with card readers, roll,
centre, record), with more voters and batches of six. The test alone knows the true casting
order (it drove the voters). It then scans every byte the election left on disk — the ledger's
and roll's SQLite files, the booths' stores and audit logs, the central store, the record, every
service log — for each ballot's identifiers, and measures each file's order against the true
one within each ledger batch (tests/demo/order_scan.py says how, and tests/demo/test_order_scan.py
shows the measure flags a file that keeps casting order).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from order_scan import Ballot, adjacent_pairs, order_z, scan_files

from demo.whole_election import Booth, run
from election.chain import tracking_code
from election.encoding import canonical_bytes, sha256
from election.record import DirectoryRecord
from election.stations import CHAIN_FILE, STATIONS, parse_chain_lines

BATCH_MIN = 6
Z_BOUND = 4.5
"""|Z| beyond 4.5 happens by chance once in about 150,000 files."""


def ballot_patterns(document: dict) -> tuple[bytes, ...]:
    ballot_hash = sha256(canonical_bytes(document))
    code = tracking_code(ballot_hash)
    patterns = [
        ballot_hash.hex().encode(),
        ballot_hash,
        document["ballot_id"].encode(),
        bytes.fromhex(document["ballot_id"]),
        code.encode(),
        code.replace("-", "").encode(),
    ]
    if document["token"] is not None:
        patterns += [document["token"]["message"].encode(), bytes.fromhex(document["token"]["message"])]
    return tuple(patterns)


def true_order(booths: list[Booth]) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """When each cast ballot (by tracking code) and each challenge (by device and revealed
    choices) happened."""
    cast = {code: at for booth in booths for code, at in zip(booth.tracking_codes, booth.finished, strict=True)}
    challenged: dict[tuple[str, str], float] = {}
    for booth in booths:
        for choices, at in booth.challenged:
            key = (booth.terminal, json.dumps(choices, sort_keys=True))
            challenged[key] = -1.0 if key in challenged else at  # -1: two alike, not identifiable
    return cast, challenged


def revealed_choices(opening: dict) -> str:
    return json.dumps(
        {
            contest["contest_id"]: sorted(s["selection_id"] for s in contest["selections"] if s["vote"])
            for contest in opening["contests"]
        },
        sort_keys=True,
    )


@pytest.mark.slow
def test_no_stored_or_published_byte_keeps_casting_order(tmp_path: Path, pcscd) -> None:
    out = tmp_path / "election"
    booths: list[Booth] = []
    assert run(out, voters_per_booth=8, challenge_every=2, seed=16, pcscd=pcscd, batch_min=BATCH_MIN, observed=booths)

    record = DirectoryRecord(out / "record")
    batch_of = {
        entry.ballot_hash: entry.batch
        for station in record.folders(STATIONS)
        for entry in parse_chain_lines(record.read_bytes(f"{STATIONS}/{station}/{CHAIN_FILE}"))
    }
    cast_at, challenged_at = true_order(booths)
    known: list[tuple[float, str, tuple[bytes, ...], bytes]] = []
    spoiled_of: dict[str, str] = {}
    for path in sorted((out / "record" / "ballots").iterdir()):
        document = json.loads(path.read_bytes())
        ballot_hash = sha256(canonical_bytes(document))
        known.append((cast_at[tracking_code(ballot_hash)], path.stem, ballot_patterns(document), ballot_hash))
    for path in sorted((out / "record" / "spoiled").iterdir()):
        document = json.loads(path.read_bytes())
        ballot = document["ballot"]
        at = challenged_at[ballot["device_id"], revealed_choices(document["opening"])]
        if at < 0:
            continue
        known.append((at, path.stem, ballot_patterns(ballot), sha256(canonical_bytes(ballot))))
        spoiled_of[path.stem] = ballot["device_id"]
    known.sort()
    ballots = [
        Ballot(key, patterns, batch_of[ballot_hash], rank) for rank, (_, key, patterns, ballot_hash) in enumerate(known)
    ]
    assert len(ballots) >= 30 and len(set(batch_of.values())) >= 4

    # Each challenger's spoiled ballot and the cast ballot that followed it on the same booth.
    keys_in_order = [key for _, key, _, _ in known]
    pairs = []
    for spoiled, device in spoiled_of.items():
        later = keys_in_order[keys_in_order.index(spoiled) + 1 :]
        cast = next((k for k in later if k not in spoiled_of and _device(out, k) == device), None)
        if cast is not None:
            pairs.append((spoiled, cast))
    assert len(pairs) >= 8

    found = scan_files(out, ballots)
    assert any(path.name == CHAIN_FILE for path in found), "the scan must see the published chain"
    for path, offsets in found.items():
        z, used = order_z(offsets, ballots)
        print(f"{path.relative_to(out)}: {len(offsets)} ballots, Z = {z:+.2f} over {used} batches")
        assert abs(z) < Z_BOUND, f"{path.relative_to(out)} keeps casting order (Z = {z:.2f} over {used} batches)"
        adjacent = adjacent_pairs(offsets, pairs)
        # At random, a cast ballot follows its voter's spoiled one with probability 1/(batch size).
        assert adjacent <= 2 * len(pairs) // 3, (
            f"{path.relative_to(out)} puts {adjacent}/{len(pairs)} challengers' ballots side by side"
        )


def _device(out: Path, ballot_key: str) -> str:
    return json.loads((out / "record" / "ballots" / f"{ballot_key}.json").read_bytes())["device_id"]
