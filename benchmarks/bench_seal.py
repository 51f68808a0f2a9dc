"""Median time to seal one ballot (encryption, every proof, device signature) and to verify it.

python benchmarks/bench_seal.py --contests 5 --selections 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import GENESIS_HASH, DeviceSigner, SealedBallot, seal_ballot
from election.encoding import canonical_bytes, parse_json
from election.keyceremony import joint_public_key, run_local_ceremony
from election.manifest import sample_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contests", type=int, default=5)
    parser.add_argument("--selections", type=int, default=5)
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    manifest = sample_manifest(args.contests, args.selections, args.limit)
    _, publics = run_local_ceremony(["t1", "t2", "t3"], 2, manifest.base_hash)
    key = joint_public_key(publics)
    signer = DeviceSigner("bench", Ed25519PrivateKey.generate())
    choices = {c.id: set(c.selection_ids()[: c.limit]) for c in manifest.contests}
    seal_times, verify_times = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        ballot, _ = seal_ballot(manifest, key, choices, signer, 1, GENESIS_HASH)
        sealed = time.perf_counter()
        wire = canonical_bytes(ballot.to_json())
        checked_at = time.perf_counter()
        received = SealedBallot.from_json(parse_json(wire), manifest)  # every point validated
        ok = received.signature_valid(signer.public_key) and not received.proof_failures(manifest, key)
        verified = time.perf_counter()
        assert ok
        seal_times.append(sealed - started)
        verify_times.append(verified - checked_at)
    print(f"seal_ms={statistics.median(seal_times) * 1e3:.2f} verify_ms={statistics.median(verify_times) * 1e3:.2f}")


if __name__ == "__main__":
    main()
