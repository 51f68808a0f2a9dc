"""ElectionGuard 1.4 (Python) reference figures for `bench_seal.py`: never imported by the project.

Runs *inside the separate ElectionGuard virtualenv* that `bench_seal.py --eg` creates. It builds
a C-contest × S-selection manifest (one-of-m, votes allowed = `--limit`) with ElectionGuard's own
API, runs EG's key ceremony (3 guardians, quorum 2, like our bench), then for N ballots:

- seal: `EncryptionMediator.encrypt` (ElGamal per selection and per placeholder, a disjunctive
  Chaum–Pedersen proof on each, a constant Chaum–Pedersen proof per contest, the contest's
  hashed-ElGamal extended data and the ballot code chain) — no proof self-check;
- verify: `ballot_is_valid_for_election(..., should_validate=True)`: style check, crypto hash,
  every disjunctive and constant CP proof with EG's residue checks on every element;
- parse+verify: the same, starting from EG's JSON (`serialize.from_raw`), like our verifier
  that starts from wire bytes.

Progress goes to stderr; the last line of stdout is one JSON object (seconds per ballot).

    python benchmarks/eg_seal_probe.py --ballots 10
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from datetime import datetime
from importlib.metadata import version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contests", type=int, default=5)
    parser.add_argument("--selections", type=int, default=5)
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--ballots", type=int, default=10)
    args = parser.parse_args()

    from electionguard.ballot import CiphertextBallot, PlaintextBallot, PlaintextBallotContest
    from electionguard.ballot_validator import ballot_is_valid_for_election
    from electionguard.constants import STANDARD_CONSTANTS, get_constants
    from electionguard.election import make_ciphertext_election_context
    from electionguard.encrypt import EncryptionDevice, EncryptionMediator, generate_device_uuid, selection_from
    from electionguard.guardian import Guardian
    from electionguard.key_ceremony import CeremonyDetails
    from electionguard.key_ceremony_mediator import KeyCeremonyMediator
    from electionguard.manifest import (
        BallotStyle,
        Candidate,
        CandidateContestDescription,
        ElectionType,
        GeopoliticalUnit,
        InternalManifest,
        Manifest,
        ReportingUnitType,
        SelectionDescription,
        SpecVersion,
        VoteVariationType,
    )
    from electionguard.serialize import from_raw, to_raw

    def progress(message: str) -> None:
        print(f"  [eg] {message}", file=sys.stderr, flush=True)

    if get_constants() is not STANDARD_CONSTANTS:
        sys.exit("eg_seal_probe: PRIME_OPTION selects EG's test-only group; unset it")
    logging.getLogger("electionguard").setLevel(logging.WARNING)  # EG prints INFO logs to stdout (our JSON)

    unit = "station"
    candidates, contests = [], []
    for c in range(args.contests):
        selections = []
        for s in range(args.selections):
            candidate_id = f"contest-{c + 1}-candidate-{s + 1}"
            candidates.append(Candidate(candidate_id))
            selections.append(SelectionDescription(f"{candidate_id}-selection", s, candidate_id))
        limit = min(args.limit, args.selections)
        variation = VoteVariationType.one_of_m if limit == 1 else VoteVariationType.n_of_m
        contests.append(
            CandidateContestDescription(
                f"contest-{c + 1}", c, unit, variation, limit, limit, f"Contest {c + 1}", selections
            )
        )
    style = BallotStyle("style", [unit])
    manifest = Manifest(
        "bench",
        SpecVersion.EG1_0,
        ElectionType.general,
        datetime.now(),
        datetime.now(),
        [GeopoliticalUnit(unit, "Station", ReportingUnitType.polling_place)],
        [],
        candidates,
        contests,
        [style],
    )
    if not manifest.is_valid():
        sys.exit("eg_seal_probe: ElectionGuard rejects the generated manifest")

    progress("key ceremony: 3 guardians, quorum 2 (4096-bit group) …")
    started = time.perf_counter()
    # EG's three rounds (announce keys, exchange partial-key backups, verify them), as its own
    # KeyCeremonyOrchestrator does (electionguard_tools needs hypothesis, so not imported here)
    details = CeremonyDetails(3, 2)
    guardians = [Guardian.from_nonce(str(i + 1), i + 1, 3, 2) for i in range(3)]
    mediator = KeyCeremonyMediator("bench-mediator", details)
    for guardian in guardians:
        mediator.announce(guardian.share_key())
    for guardian in guardians:
        for key in mediator.share_announced(guardian.id) or []:
            guardian.save_guardian_key(key)
    for guardian in guardians:
        guardian.generate_election_partial_key_backups()
        mediator.receive_backups(guardian.share_election_partial_key_backups())
    for guardian in guardians:
        for backup in mediator.share_backups(guardian.id) or []:
            guardian.save_election_partial_key_backup(backup)
    for guardian in guardians:
        for other in guardians:
            if other.id != guardian.id:
                verification = guardian.verify_election_partial_key_backup(other.id)
                assert verification is not None and verification.verified
                mediator.receive_backup_verifications([verification])
    joint_key = mediator.publish_joint_key()
    assert joint_key is not None
    internal_manifest = InternalManifest(manifest)
    context = make_ciphertext_election_context(
        3, 2, joint_key.joint_public_key, joint_key.commitment_hash, manifest.crypto_hash()
    )
    progress(f"key ceremony done in {time.perf_counter() - started:.1f} s")

    device = EncryptionDevice(generate_device_uuid(), 12345, 67890, "bench-booth")
    encrypter = EncryptionMediator(internal_manifest, context, device)

    def plaintext(index: int) -> PlaintextBallot:
        ballot_contests = []
        for description in manifest.contests:
            marked = {sel.object_id for sel in description.ballot_selections[: description.votes_allowed]}
            ballot_contests.append(
                PlaintextBallotContest(
                    description.object_id,
                    [selection_from(sel, False, sel.object_id in marked) for sel in description.ballot_selections],
                )
            )
        return PlaintextBallot(f"ballot-{index}", style.object_id, ballot_contests)

    def verify(ballot: CiphertextBallot) -> bool:
        return ballot_is_valid_for_election(ballot, internal_manifest, context, True)

    seal_times, verify_times, parse_verify_times = [], [], []
    wire_sizes = []
    for index in range(args.ballots + 1):  # ballot 0 warms up and is not counted
        clear = plaintext(index)
        t0 = time.perf_counter()
        ballot = encrypter.encrypt(clear)
        t1 = time.perf_counter()
        assert ballot is not None
        ok = verify(ballot)
        t2 = time.perf_counter()
        wire = to_raw(ballot)
        t3 = time.perf_counter()
        received = from_raw(CiphertextBallot, wire)
        ok_received = verify(received)
        t4 = time.perf_counter()
        if not (ok and ok_received):
            sys.exit(f"eg_seal_probe: ElectionGuard rejected its own ballot {index}")
        if index:
            seal_times.append(t1 - t0)
            verify_times.append(t2 - t1)
            parse_verify_times.append(t4 - t3)
            wire_sizes.append(len(wire.encode()))
            progress(
                f"ballot {index}/{args.ballots}: seal {(t1 - t0) * 1e3:.0f} ms, "
                f"verify {(t2 - t1) * 1e3:.0f} ms, parse+verify {(t4 - t3) * 1e3:.0f} ms"
            )

    first = internal_manifest.get_contests_for(style.object_id)[0]
    result = {
        "electionguard": version("electionguard"),
        "gmpy2": version("gmpy2"),
        "python": platform.python_version(),
        "contests": args.contests,
        "selections": args.selections,
        "limit": args.limit,
        "placeholders_per_contest": len(first.placeholder_selections),
        "ballots": args.ballots,
        "seal_s": statistics.median(seal_times),
        "verify_s": statistics.median(verify_times),
        "parse_verify_s": statistics.median(parse_verify_times),
        "wire_bytes": statistics.median(wire_sizes),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
