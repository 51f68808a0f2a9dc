"""A whole election in one process: ceremony, voters at several devices, challenges, tally.

Used by ``election simulate`` and by tests. Crypto randomness always comes from the system;
``seed`` only drives the simulated voters' choices and behaviour.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from election.ballot import GENESIS_HASH, DeviceSigner, SealedBallot, Token, seal_ballot
from election.chain import ChainEntry, ChainState, Checkpoint, genesis_hash
from election.context import ElectionContext
from election.encoding import canonical_bytes
from election.keyceremony import Trustee, TrusteePublic, joint_public_key, run_local_ceremony
from election.manifest import Manifest
from election.record import (
    BALLOTS,
    CONTEXT,
    DECRYPTION,
    DEVICES,
    MANIFEST,
    RECORD_VERSION,
    RESULTS,
    SPOILED,
    TALLY,
    TRUSTEES,
    RecordWriter,
)
from election.stations import CHAIN_FILE, CHECKPOINT_FILE, STATION_FILE, STATIONS, StationKeys, chain_lines
from election.tally import DecryptionShare, Results, TallyAccumulator, decrypt_totals
from election.tokens import blind, blind_sign, finalize


@dataclass
class Device:
    signer: DeviceSigner
    seq: int = 0
    prev_hash: bytes = GENESIS_HASH

    def seal(self, manifest: Manifest, key, choices) -> tuple[SealedBallot, object]:
        self.seq += 1
        ballot, opening = seal_ballot(manifest, key, choices, self.signer, self.seq, self.prev_hash)
        self.prev_hash = ballot.ballot_hash
        return ballot, opening


class SimulatedStation:
    """A station's ledger and roll as far as the record sees them: chain, checkpoint, tokens."""

    def __init__(self, station_id: str, base_hash: bytes) -> None:
        self.station_id = station_id
        self.base_hash = base_hash
        self.ledger_key = Ed25519PrivateKey.generate()
        self.roll_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.chain = ChainState(genesis_hash(base_hash, station_id))
        self.entries: list[ChainEntry] = []

    def issue_token(self) -> Token:
        """Check-in: the terminal blinds a fresh message, the roll signs it blind, the terminal unblinds."""
        message = secrets.token_bytes(32)
        public = self.roll_key.public_key()
        request = blind(public, message)
        return Token(message, finalize(public, message, blind_sign(self.roll_key, request.blinded), request))

    def append(self, ballot: SealedBallot, kind: str) -> None:
        entry = self.chain.next_entry(ballot.ballot_hash, kind)
        self.chain.append(entry)
        self.entries.append(entry)

    def write(self, out: RecordWriter) -> None:
        folder = f"{STATIONS}/{self.station_id}"
        keys = StationKeys(self.station_id, self.ledger_key.public_key(), self.roll_key.public_key())
        out.write(f"{folder}/{STATION_FILE}", keys.to_json())
        out.write_bytes(f"{folder}/{CHAIN_FILE}", chain_lines(self.entries))
        checkpoint = Checkpoint(self.station_id, self.base_hash, self.chain.head)
        out.write(f"{folder}/{CHECKPOINT_FILE}", checkpoint.sign(self.ledger_key))


@dataclass
class SimulationOutcome:
    expected: dict[tuple[str, str], int] = field(default_factory=dict)
    cast: int = 0
    spoiled: int = 0
    results: Results | None = None


def random_choices(manifest: Manifest, rng: random.Random) -> dict[str, set[str]]:
    return {
        contest.id: set(rng.sample(contest.selection_ids(), rng.randint(0, contest.limit)))
        for contest in manifest.contests
    }


def write_election_package(
    writer: RecordWriter, manifest: Manifest, context: ElectionContext, publics: list[TrusteePublic]
) -> None:
    writer.write(MANIFEST, manifest.to_json())
    writer.write(CONTEXT, context.to_json())
    for public in publics:
        writer.write(f"{TRUSTEES}/{public.trustee_id}.json", public.to_json())


def ceremony(
    manifest: Manifest, trustee_count: int, quorum: int
) -> tuple[list[Trustee], list[TrusteePublic], ElectionContext]:
    ids = [f"trustee-{i + 1}" for i in range(trustee_count)]
    trustees, publics = run_local_ceremony(ids, quorum, manifest.base_hash)
    context = ElectionContext(manifest.base_hash, tuple(ids), quorum, joint_public_key(publics))
    return trustees, publics, context


def ceremony_to_files(
    manifest: Manifest, trustee_count: int, quorum: int, package_dir: Path, secrets_dir: Path
) -> tuple[ElectionContext, list[Path]]:
    """A one-room ceremony written out: the public election package and one private key file
    per trustee (mode 0600, to be handed to that trustee)."""
    trustees, publics, context = ceremony(manifest, trustee_count, quorum)
    write_election_package(RecordWriter(package_dir), manifest, context, publics)
    secrets_dir.mkdir(parents=True, exist_ok=True)
    key_files = []
    for trustee in trustees:
        path = secrets_dir / f"{trustee.trustee_id}.json"
        _write_private(path, canonical_bytes(trustee.secret_json()))
        key_files.append(path)
    return context, key_files


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file that is mode 0600 from its first byte, then rename it into place.

    Never ``chmod`` after writing: until then the secret would be readable under the umask.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)  # left by an interrupted run
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def simulate(
    manifest: Manifest,
    out: RecordWriter,
    ballots: int,
    *,
    trustee_count: int = 5,
    quorum: int = 3,
    device_count: int = 3,
    station_count: int = 1,
    spoil_rate: float = 0.05,
    seed: int | None = None,
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> SimulationOutcome:
    """Run the election and write its complete record; returns what the voters chose."""
    rng = random.Random(seed)
    trustees, publics, context = ceremony(manifest, trustee_count, quorum)
    write_election_package(out, manifest, context, publics)
    devices = [Device(DeviceSigner(f"terminal-{i + 1}", Ed25519PrivateKey.generate())) for i in range(device_count)]
    out.write(
        DEVICES,
        {
            "version": RECORD_VERSION,
            "devices": [
                {
                    "device_id": d.signer.device_id,
                    "public_key": d.signer.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
                }
                for d in devices
            ],
        },
    )
    stations = [SimulatedStation(f"station-{i + 1}", manifest.base_hash) for i in range(station_count)]
    outcome = SimulationOutcome()
    accumulator = TallyAccumulator(manifest)
    key = context.joint_public_key
    for n in range(ballots):
        device_index = n % device_count
        device, station = devices[device_index], stations[device_index % station_count]
        token = station.issue_token()
        choices = random_choices(manifest, rng)
        ballot, opening = device.seal(manifest, key, choices)
        if rng.random() < spoil_rate:
            # The voter challenges: the opening is published and the ballot never counts.
            out.write(
                f"{SPOILED}/{ballot.ballot_id.hex()}.json",
                {"version": RECORD_VERSION, "ballot": ballot.to_json(), "opening": opening.to_json(manifest)},
            )
            station.append(ballot, "spoiled")
            outcome.spoiled += 1
            choices = random_choices(manifest, rng)
            ballot, opening = device.seal(manifest, key, choices)
        ballot = ballot.with_token(token, device.signer)
        device.prev_hash = ballot.ballot_hash
        station.append(ballot, "cast")
        out.write(f"{BALLOTS}/{ballot.ballot_id.hex()}.json", ballot.to_json())
        accumulator.add(ballot)
        outcome.cast += 1
        for contest_id, marked in choices.items():
            for selection_id in marked:
                outcome.expected[contest_id, selection_id] = outcome.expected.get((contest_id, selection_id), 0) + 1
        progress("sealing ballots", n + 1, ballots)
    for station in stations:
        station.write(out)
    tally = accumulator.result()
    out.write(TALLY, tally.to_json(manifest))
    present = rng.sample(trustees, quorum)
    shares = []
    for i, trustee in enumerate(present):
        share = DecryptionShare.compute(trustee, tally)
        out.write(f"{DECRYPTION}/{trustee.trustee_id}.json", share.to_json(manifest, tally))
        shares.append(share)
        progress("trustees decrypting", i + 1, len(present))
    outcome.results = decrypt_totals(tally, shares, publics, quorum)
    out.write(RESULTS, outcome.results.to_json(manifest))
    return outcome
