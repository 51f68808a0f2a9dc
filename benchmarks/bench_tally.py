"""Tally throughput: ballots per second added homomorphically, from parsed ballots and from
their JSON (with every group element validated), and the time to decrypt the totals; or, with
``--record``, the tally of a whole record's ballot files as ``gateway tally`` adds them (read,
parse, validate, add) on 1, 2, … worker processes.

    python benchmarks/bench_tally.py --ballots 1000
    python benchmarks/bench_tally.py --record /tmp/bench-verify-v2-100000-2x4 --workers 1,2
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import DeviceSigner, SealedBallot, seal_ballot
from election.keyceremony import joint_public_key, run_local_ceremony
from election.manifest import Manifest, sample_manifest
from election.record import BALLOTS, MANIFEST, TALLY, DirectoryRecord
from election.simulation import random_choices
from election.tally import DecryptionShare, TallyAccumulator, add_ballot_files, decrypt_totals


def tally_record(root: Path, workers: list[int]) -> None:
    """The tally of every ballot file of a record, per worker count, held to its tally.json."""
    record = DirectoryRecord(root)
    manifest = Manifest.from_json(record.read(MANIFEST))
    published = record.read(TALLY)
    for count in workers:
        started = time.perf_counter()
        tally = add_ballot_files(record, manifest, BALLOTS, workers=count)
        elapsed = time.perf_counter() - started
        same = "equals tally.json" if tally.to_json(manifest) == published else "DIFFERS from tally.json"
        print(f"workers={count}: {tally.ballot_count} ballots in {elapsed:.1f} s = "
              f"{tally.ballot_count / elapsed:.0f} ballots/s, {same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ballots", type=int, default=1000)
    parser.add_argument("--contests", type=int, default=5)
    parser.add_argument("--selections", type=int, default=5)
    parser.add_argument("--record", type=Path, default=None, help="tally this record's ballot files instead")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="comma-separated, with --record")
    args = parser.parse_args()
    if args.record is not None:
        tally_record(args.record, [int(w) for w in args.workers.split(",")])
        return
    manifest = sample_manifest(args.contests, args.selections, 1)
    trustees, publics = run_local_ceremony(["t1", "t2", "t3"], 2, manifest.base_hash)
    key = joint_public_key(publics)
    signer = DeviceSigner("bench", Ed25519PrivateKey.generate())
    rng = random.Random(1)
    # Seal a pool of distinct ballots and reuse it: sealing is not what is measured here.
    pool = [seal_ballot(manifest, key, random_choices(manifest, rng), signer)[0] for _ in range(50)]
    ballots = [pool[i % len(pool)] for i in range(args.ballots)]
    documents = [b.to_json() for b in ballots]

    started = time.perf_counter()
    accumulator = TallyAccumulator(manifest)
    for ballot in ballots:
        accumulator.add(ballot)
    added = time.perf_counter() - started

    started = time.perf_counter()
    parsed = TallyAccumulator(manifest)
    for document in documents:
        parsed.add(SealedBallot.from_json(document, manifest))
    from_json = time.perf_counter() - started

    tally = accumulator.result()
    started = time.perf_counter()
    shares = [DecryptionShare.compute(t, tally) for t in trustees[:2]]
    decrypt_totals(tally, shares, publics, 2)
    decrypted = time.perf_counter() - started
    print(
        f"ballots={args.ballots} tally_ballots_per_s={args.ballots / added:.0f} "
        f"tally_from_json_ballots_per_s={args.ballots / from_json:.0f} decrypt_totals_s={decrypted:.2f}"
    )


if __name__ == "__main__":
    main()
