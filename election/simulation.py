"""A whole election in one process: ceremony, voters at several devices, challenges, tally.

Used by ``election simulate`` and by tests. Crypto randomness always comes from the system;
``seed`` only drives the simulated voters' choices and behaviour.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
)

from election.ballot import BallotOpening, Choices, DeviceSigner, SealedBallot, Token, seal_ballot
from election.chain import (
    CHAIN_VERSION,
    COUNTED_KINDS,
    ChainEntry,
    ChainState,
    Checkpoint,
    PoolBallot,
    genesis_hash,
    sign_document,
)
from election.context import ElectionContext
from election.devices import DeviceStatement
from election.encoding import canonical_bytes
from election.group import Point
from election.keyceremony import Trustee, TrusteePublic, joint_public_key, run_local_ceremony
from election.manifest import Manifest
from election.pool import ordered_chunks
from election.reconciliation import (
    ELECTION_DAY,
    MUNICIPAL_KINDS,
    RECONCILIATION,
    MunicipalityLine,
    Reconciliation,
    StationLine,
    StationMarks,
)
from election.record import (
    BALLOTS,
    CONTEXT,
    DECRYPTION,
    DEVICE_STATEMENTS,
    DEVICES,
    MANIFEST,
    RECORD_VERSION,
    RESULTS,
    SPOILED,
    TALLY,
    TRUSTEES,
    RecordWriter,
)
from election.stations import (
    CHAIN_FILE,
    CHECKPOINT_FILE,
    CLOSING_FILE,
    STATION_FILE,
    STATIONS,
    StationKeys,
    chain_lines,
)
from election.tally import DecryptionShare, Results, TallyAccumulator, decrypt_totals
from election.tokens import blind, blind_sign, finalize


@dataclass
class Device:
    """A simulated terminal: it seals ballots and keeps the set of their hashes, as a booth does
    (a set, not a sequence: record format 2 keeps no casting order)."""

    signer: DeviceSigner
    sealed: set[bytes] = field(default_factory=set)

    def seal(
        self, manifest: Manifest, key: Point, choices: Choices, token: Token | None = None
    ) -> tuple[SealedBallot, BallotOpening]:
        ballot, opening = seal_ballot(manifest, key, choices, self.signer, token)
        self.sealed.add(ballot.ballot_hash)
        return ballot, opening

    def statement(self, base_hash: bytes) -> DeviceStatement:
        """The device's final statement: every ballot it sealed and sent, counted and committed."""
        return DeviceStatement.make(self.signer, base_hash, self.sealed)


class SimulatedStation:
    """A station's ledger and roll as far as the record sees them: pool, batches, reports, tokens.

    Submissions arrive in bursts (a challenged ballot and the voter's cast ballot together, as
    the booth sends them); the pool is committed as one hash-sorted batch whenever it holds
    ``batch_min`` ballots, and whatever is left at the final close forms the last batch.
    """

    def __init__(self, station_id: str, base_hash: bytes, batch_min: int = 1) -> None:
        self.station_id = station_id
        self.base_hash = base_hash
        self.batch_min = batch_min
        self.ledger_key = Ed25519PrivateKey.generate()
        self.roll_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.chain = ChainState(genesis_hash(base_hash, station_id))
        self.entries: list[ChainEntry] = []
        self.pool: list[PoolBallot] = []
        self.check_ins = 0
        self.closed_position: int | None = None
        self.municipality: str | None = None
        self.kind = ELECTION_DAY

    def issue_token(self) -> Token:
        """Check-in: the terminal blinds a fresh message, the roll signs it blind, the terminal unblinds."""
        self.check_ins += 1
        return issue_token(self.roll_key)

    def receive(self, *ballots: tuple[bytes, str]) -> None:
        """One burst of ``(ballot hash, kind)`` into the pool, committed once it holds ``batch_min``."""
        self.pool.extend(PoolBallot(ballot_hash, kind) for ballot_hash, kind in ballots)
        if len(self.pool) >= self.batch_min:
            self.commit()

    def commit(self) -> None:
        """Chain the whole pool as the next batch, sorted by ballot hash."""
        for entry in self.chain.next_batch(self.pool):
            self.chain.append(entry)
            self.entries.append(entry)
        self.pool.clear()

    def close(self) -> None:
        """The final close: what is left in the pool forms the last (possibly smaller) batch."""
        if self.pool:
            self.commit()
        self.closed_position = self.chain.head.position

    def closing_report(self, devices: dict[bytes, str]) -> dict[str, Any]:
        """The ledger's closing report body (docs/ledger.md): counts per terminal of the counted
        ballots, given which device sealed each ballot hash."""
        if self.closed_position is None:
            raise ValueError("the polls of this station are not closed")
        head = self.chain.head
        terminals: dict[str, int] = {}
        for entry in self.entries:
            if entry.kind in COUNTED_KINDS:
                device_id = devices[entry.ballot_hash]
                terminals[device_id] = terminals.get(device_id, 0) + 1
        return {
            "version": CHAIN_VERSION,
            "type": "closing_report",
            "station_id": self.station_id,
            "base_hash": self.base_hash.hex(),
            "position": head.position,
            "head_hash": head.entry_hash.hex(),
            "terminals": dict(sorted(terminals.items())),
            "ballots": sum(terminals.values()),
            "spoiled": sum(1 for entry in self.entries if entry.kind == "spoiled"),
            "check_ins": self.check_ins,
            "late": {},
            "closed_position": self.closed_position,
            "unreachable": {},
        }

    def write(self, out: RecordWriter, devices: dict[bytes, str]) -> None:
        folder = f"{STATIONS}/{self.station_id}"
        keys = StationKeys(self.station_id, self.ledger_key.public_key(), self.roll_key.public_key())
        out.write(f"{folder}/{STATION_FILE}", keys.to_json())
        out.write_bytes(f"{folder}/{CHAIN_FILE}", chain_lines(self.entries))
        checkpoint = Checkpoint(self.station_id, self.base_hash, self.chain.head)
        out.write(f"{folder}/{CHECKPOINT_FILE}", checkpoint.sign(self.ledger_key))
        if self.closed_position is not None:
            out.write(f"{folder}/{CLOSING_FILE}", sign_document(self.closing_report(devices), self.ledger_key))

    def reconciliation_line(self) -> StationLine:
        """This station in ``reconciliation.json``: its roll's count once closed; an election-day
        station of a municipality sends back one mark per check-in (nobody voted twice here)."""
        check_ins = self.check_ins if self.closed_position is not None else None
        marks = None
        if self.kind == ELECTION_DAY and self.municipality is not None and check_ins is not None:
            marks = StationMarks(check_ins, 0, 0)
        ballots = sum(1 for entry in self.entries if entry.kind in COUNTED_KINDS)
        return StationLine(self.station_id, self.kind, self.municipality, check_ins, ballots, marks)


def issue_token(roll_key: rsa.RSAPrivateKey) -> Token:
    """A fresh token signed blind by ``roll_key`` (a check-in, without its count)."""
    message = secrets.token_bytes(32)
    public = roll_key.public_key()
    request = blind(public, message)
    return Token(message, finalize(public, message, blind_sign(roll_key, request.blinded), request))


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``."""

SEAL_CHUNK = 32
"""Voters per task of the sealing pool (each ~10–25 ms of crypto): small enough for a steady
progress line, large enough that shipping a chunk's results costs next to nothing."""


@dataclass(frozen=True, slots=True)
class _Voter:
    """What the parent decided for one voter (from the seeded rng): where, and the choices."""

    device: int
    station: int
    challenged: dict[str, set[str]] | None
    """The choices of a ballot the voter challenges first, or None."""
    choices: dict[str, set[str]]


@dataclass(frozen=True, slots=True)
class _Sealed:
    """One voter's ballots as a sealing worker returns them, with their hashes."""

    challenged: tuple[SealedBallot, BallotOpening, bytes] | None
    cast: SealedBallot
    cast_hash: bytes


class _Sealer:
    """The per-voter cryptography, picklable for a worker process: the roll's blind signature
    on the voter's token, then sealing (encryption, proofs, device signature) of the voter's
    ballots. Only secrets-driven randomness is used here; every seeded decision was taken in
    the parent, so the record does not depend on how the voters are split between workers."""

    def __init__(
        self,
        manifest: Manifest,
        key: Point,
        devices: Sequence[tuple[str, Ed25519PrivateKey]],
        roll_keys: Sequence[rsa.RSAPrivateKey],
    ) -> None:
        self.manifest = manifest
        self.key = key
        self.device_keys = list(devices)
        self.signers = [DeviceSigner(device_id, private) for device_id, private in devices]
        self.roll_keys = list(roll_keys)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest.to_json(),
            "key": self.key,
            "devices": [(device_id, private.private_bytes_raw()) for device_id, private in self.device_keys],
            "roll_keys": [
                key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()) for key in self.roll_keys
            ],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.manifest = Manifest.from_json(state["manifest"])
        self.key = state["key"]
        self.device_keys = [(i, Ed25519PrivateKey.from_private_bytes(raw)) for i, raw in state["devices"]]
        self.signers = [DeviceSigner(device_id, private) for device_id, private in self.device_keys]
        self.roll_keys = []
        for der in state["roll_keys"]:
            # Keys this simulation generated itself: OpenSSL's slow consistency check adds nothing.
            key = load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise TypeError("a roll key is an RSA key")
            self.roll_keys.append(key)

    def __call__(self, voters: list[_Voter]) -> list[_Sealed]:
        return [self.one(voter) for voter in voters]

    def one(self, voter: _Voter) -> _Sealed:
        signer = self.signers[voter.device]
        token = issue_token(self.roll_keys[voter.station])
        challenged = None
        if voter.challenged is not None:
            ballot, opening = seal_ballot(self.manifest, self.key, voter.challenged, signer)
            challenged = (ballot, opening, ballot.ballot_hash)
        cast, _ = seal_ballot(self.manifest, self.key, voter.choices, signer, token)
        return _Sealed(challenged, cast, cast.ballot_hash)


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


class SimulatedElection:
    """An election run in memory, then published as a record: ceremony, voters at devices,
    stations' pools and batches, close, tally, decryption.

    Between :meth:`vote` and :meth:`publish` the state is plain data, so a test can play a
    dishonest hub or centre (drop, add or replace a ballot everywhere except in the device's own
    statement) and check that the verifier still notices.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        trustee_count: int = 5,
        quorum: int = 3,
        device_count: int = 3,
        station_count: int = 1,
        seed: int | None = None,
        places: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """``places``: station id → (municipality, kind) for stations of a municipality (kind
        ``early``, ``common`` or ``election_day``); the early and common places of one
        municipality share its token key, as at the municipal roll. Others are election-day
        stations outside any municipality."""
        self.manifest = manifest
        self.rng = random.Random(seed)
        self.quorum = quorum
        self.trustees, self.publics, self.context = ceremony(manifest, trustee_count, quorum)
        self._device_keys = [(f"terminal-{i + 1}", Ed25519PrivateKey.generate()) for i in range(device_count)]
        """Each device's id and key, for the sealing workers of :meth:`vote_many`."""
        self.devices = [Device(DeviceSigner(device_id, key)) for device_id, key in self._device_keys]
        self.stations = [
            SimulatedStation(f"station-{i + 1}", manifest.base_hash, manifest.batch_min) for i in range(station_count)
        ]
        self.token_keys: dict[str, rsa.RSAPrivateKey] = {}
        for station in self.stations:
            municipality, kind = (places or {}).get(station.station_id, (None, ELECTION_DAY))
            station.municipality, station.kind = municipality, kind
            if municipality is not None:
                key = self.token_keys.get(municipality)
                if key is None:
                    key = self.token_keys[municipality] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                if kind in MUNICIPAL_KINDS:
                    station.roll_key = key
        self.cast: list[SealedBallot] = []
        self.spoiled: list[tuple[SealedBallot, BallotOpening]] = []
        self.outcome = SimulationOutcome()

    def station_of(self, device_index: int) -> SimulatedStation:
        return self.stations[self._station_index(device_index)]

    def _station_index(self, device_index: int) -> int:
        return device_index % len(self.stations)

    def vote(self, voter: int, spoil_rate: float) -> None:
        """One voter at device ``voter % devices``: check in, maybe challenge a ballot, cast."""
        self.vote_many(voter, 1, spoil_rate, workers=1)

    def vote_many(
        self,
        first: int,
        count: int,
        spoil_rate: float,
        *,
        workers: int | None = None,
        progress: Progress = lambda stage, done, total: None,
    ) -> None:
        """Voters ``first`` … ``first + count - 1``, as :meth:`vote` one after the other, with the
        tokens and the sealing shared by ``workers`` processes (every core by default).

        The seeded decisions (who challenges, every choice) are drawn here first, in voter
        order, exactly as one :meth:`vote` after another draws them; the workers then sign the
        tokens blind and seal the ballots (system randomness only); the devices' sets and the
        stations' check-ins, pools and batches are then updated here in voter order. The
        record is the same whatever ``workers`` is, up to the cryptographic randomness.
        """
        plans = [self._plan(voter, spoil_rate) for voter in range(first, first + count)]
        roll_keys = [s.roll_key for s in self.stations]
        sealer = _Sealer(self.manifest, self.context.joint_public_key, self._device_keys, roll_keys)
        done = 0
        pool = (os.cpu_count() or 1) if workers is None else workers
        for size, sealed in ordered_chunks(sealer, plans, pool, chunk=SEAL_CHUNK):
            for plan, result in zip(plans[done : done + size], sealed, strict=True):
                self._record(plan, result)
            done += size
            progress("sealing ballots", done, count)

    def _plan(self, voter: int, spoil_rate: float) -> _Voter:
        """One voter's seeded decisions, drawn in the order :meth:`vote` has always drawn them."""
        device_index = voter % len(self.devices)
        challenged = random_choices(self.manifest, self.rng) if self.rng.random() < spoil_rate else None
        choices = random_choices(self.manifest, self.rng)
        return _Voter(device_index, self._station_index(device_index), challenged, choices)

    def _record(self, plan: _Voter, result: _Sealed) -> None:
        """What the device, the station and the outcome keep of one voter's sealed ballots."""
        device, station = self.devices[plan.device], self.stations[plan.station]
        station.check_ins += 1  # the check-in whose token the worker had the roll sign
        burst: list[tuple[bytes, str]] = []
        if result.challenged is not None:
            # The voter challenges: the opening is published and the ballot never counts.
            ballot, opening, ballot_hash = result.challenged
            device.sealed.add(ballot_hash)
            self.spoiled.append((ballot, opening))
            burst.append((ballot_hash, "spoiled"))
            self.outcome.spoiled += 1
        device.sealed.add(result.cast_hash)
        self.cast.append(result.cast)
        burst.append((result.cast_hash, "cast"))
        station.receive(*burst)  # the booth sends a challenged ballot and the cast one together
        self.outcome.cast += 1
        for contest_id, marked in plan.choices.items():
            for selection_id in marked:
                self.outcome.expected[contest_id, selection_id] = (
                    self.outcome.expected.get((contest_id, selection_id), 0) + 1
                )

    def close(self) -> None:
        for station in self.stations:
            station.close()

    def publish(self, out: RecordWriter, progress: Progress = lambda stage, done, total: None) -> SimulationOutcome:
        """Write the complete record of what the state now holds; returns what the voters chose."""
        manifest = self.manifest
        write_election_package(out, manifest, self.context, self.publics)
        out.write(
            DEVICES,
            {
                "version": RECORD_VERSION,
                "devices": [
                    {
                        "device_id": d.signer.device_id,
                        "public_key": d.signer.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
                    }
                    for d in self.devices
                ],
            },
        )
        for device in self.devices:
            if device.sealed:
                statement = device.statement(manifest.base_hash)
                out.write(f"{DEVICE_STATEMENTS}/{statement.device_id}.json", statement.to_json())
        sealed_by = {ballot.ballot_hash: ballot.device_id for ballot in self.cast}
        for station in self.stations:
            station.write(out, sealed_by)
        for ballot, opening in self.spoiled:
            out.write(
                f"{SPOILED}/{ballot.ballot_id.hex()}.json",
                {"version": RECORD_VERSION, "ballot": ballot.to_json(), "opening": opening.to_json(manifest)},
            )
        accumulator = TallyAccumulator(manifest)
        for ballot in self.cast:
            out.write(f"{BALLOTS}/{ballot.ballot_id.hex()}.json", ballot.to_json())
            accumulator.add(ballot)
        tally = accumulator.result()
        out.write(TALLY, tally.to_json(manifest))
        present = self.rng.sample(self.trustees, self.quorum)
        shares = []
        for i, trustee in enumerate(present):
            share = DecryptionShare.compute(trustee, tally)
            out.write(f"{DECRYPTION}/{trustee.trustee_id}.json", share.to_json(manifest, tally))
            shares.append(share)
            progress("trustees decrypting", i + 1, len(present))
        self.outcome.results = decrypt_totals(tally, shares, self.publics, self.quorum)
        out.write(RESULTS, self.outcome.results.to_json(manifest))
        out.write(RECONCILIATION, self.reconciliation().to_json())
        return self.outcome

    def reconciliation(self) -> Reconciliation:
        """What the centre would publish: every station's figures; per municipality its token
        key, a register of exactly the voters who came, and every one of them marked once."""
        lines = [station.reconciliation_line() for station in self.stations]
        municipalities = []
        for name, key in self.token_keys.items():
            mine = [line for line in lines if line.municipality == name]
            closed = all(line.check_ins is not None for line in mine)
            early = sum(line.check_ins or 0 for line in mine if line.kind in MUNICIPAL_KINDS)
            day = sum(line.marks.marked for line in mine if line.marks is not None)
            check_ins = sum(line.check_ins or 0 for line in mine) if closed else None
            municipalities.append(MunicipalityLine(name, key.public_key(), "closed" if closed else "open",
                                                   early + day, check_ins, sum(line.ballots for line in mine),
                                                   early, day, 0, 0))  # fmt: skip
        return Reconciliation.make(self.manifest.base_hash, lines, municipalities)


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
    progress: Progress = lambda stage, done, total: None,
    places: Mapping[str, tuple[str, str]] | None = None,
    workers: int | None = None,
) -> SimulationOutcome:
    """Run the election and write its complete record; returns what the voters chose.

    ``workers`` processes seal the ballots (every core by default; the seeded choices, the
    stations' chains and everything else are decided in this process, in voter order)."""
    election = SimulatedElection(
        manifest,
        trustee_count=trustee_count,
        quorum=quorum,
        device_count=device_count,
        station_count=station_count,
        seed=seed,
        places=places,
    )
    election.vote_many(0, ballots, spoil_rate, workers=workers, progress=progress)
    election.close()
    return election.publish(out, progress)
