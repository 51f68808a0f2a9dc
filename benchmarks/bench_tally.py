"""Tally throughput: ballots per second added homomorphically, from parsed ballots and from
their JSON (with every group element validated), and the time to decrypt the totals.

    python benchmarks/bench_tally.py --ballots 1000
"""

from __future__ import annotations

import argparse
import random
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import DeviceSigner, SealedBallot, seal_ballot
from election.keyceremony import joint_public_key, run_local_ceremony
from election.manifest import sample_manifest
from election.simulation import random_choices
from election.tally import DecryptionShare, TallyAccumulator, decrypt_totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ballots", type=int, default=1000)
    parser.add_argument("--contests", type=int, default=5)
    parser.add_argument("--selections", type=int, default=5)
    args = parser.parse_args()
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
