"""One small election, in memory, for the protocol tests: a station with two registered
terminals, its roll, and the three places that admit a sealed ballot — the station's ledger
core (no broker), the centre's checker (phases 1 and 2, no store) and the verifier (on a record
written to a temporary folder).

Everything here is the product's own code; nothing is mocked. Built once per process
(:func:`kit`), because hypothesis tests cannot take function-scoped fixtures.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from election import tokens
from election.ballot import BallotOpening, DeviceSigner, SealedBallot, Token, seal_ballot
from election.chain import COUNTED_KINDS, ChainEntry, ChainHead, ChainState, Checkpoint, PoolBallot, genesis_hash
from election.context import ElectionContext
from election.devices import DeviceStatement
from election.encoding import canonical_bytes, parse_json, sha256
from election.errors import ElectionError
from election.keyceremony import Trustee, TrusteePublic
from election.manifest import Manifest, sample_manifest
from election.reconciliation import ELECTION_DAY, RECONCILIATION, Reconciliation, StationLine
from election.record import (
    BALLOTS,
    DEVICE_STATEMENTS,
    DEVICES,
    RECORD_VERSION,
    RESULTS,
    SPOILED,
    TALLY,
    DirectoryRecord,
    RecordWriter,
)
from election.simulation import SimulatedStation, ceremony, write_election_package
from election.stations import CHAIN_FILE, CHECKPOINT_FILE, STATION_FILE, STATIONS, StationKeys, chain_lines
from election.tally import DecryptionShare, TallyAccumulator, decrypt_totals
from election.verify import VerificationReport, verify_record
from gateway.checker import ElectionKeys, Incident, StationJudge, StationProfile, StationSnapshot, prevalidate
from protocol.errors import Reason, Refusal
from protocol.forwarding import Batch, ForwardedEntry, batch_payload, parse_up
from protocol.messages import BALLOT_MESSAGE_VERSION, CAST_TYPE, SPOILED_TYPE
from station_hub.ledger import Decision, Duplicate, Held, LedgerCore, LedgerState, Refused

STATION_ID = "st-x"
CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}
OTHER_CHOICES = {"contest-1": {"candidate-3"}, "contest-2": set()}
REGISTERED = ("x1", "x2")
"""Terminals of the station (its CA vouches for them; the centre registered them)."""
STRANGER = "x9"
"""A terminal with a real key that no station registered."""


@dataclass(frozen=True)
class Kit:
    manifest: Manifest
    context: ElectionContext
    trustees: tuple[Trustee, ...]
    publics: tuple[TrusteePublic, ...]
    station: SimulatedStation
    signers: dict[str, DeviceSigner]
    other_roll: rsa.RSAPrivateKey

    @property
    def joint_key(self) -> Any:
        return self.context.joint_public_key

    @property
    def genesis(self) -> bytes:
        return genesis_hash(self.manifest.base_hash, STATION_ID)

    @property
    def roll_public(self) -> rsa.RSAPublicKey:
        return self.station.roll_key.public_key()

    # --- ballots -------------------------------------------------------------------------

    def token(self, roll: rsa.RSAPrivateKey | None = None, message: bytes | None = None) -> Token:
        """A token as a check-in gives it: a fresh message, blind-signed by ``roll``."""
        roll = roll or self.station.roll_key
        message = message or secrets.token_bytes(32)
        request = tokens.blind(roll.public_key(), message)
        signature = tokens.finalize(roll.public_key(), message, tokens.blind_sign(roll, request.blinded), request)
        return Token(message, signature)

    def seal(
        self, device: str = "x1", token: Token | None = None, choices: dict[str, set[str]] = CHOICES
    ) -> tuple[SealedBallot, BallotOpening]:
        return seal_ballot(self.manifest, self.joint_key, choices, self.signers[device], token)

    def cast(self, device: str = "x1", **kw: Any) -> dict[str, Any]:
        """A cast ballot's JSON, spending a fresh token of this station's roll."""
        return self.seal(device, kw.pop("token", None) or self.token(), **kw)[0].to_json()

    def spoiled(self, device: str = "x1") -> tuple[dict, dict]:
        ballot, opening = self.seal(device)
        return ballot.to_json(), opening.to_json(self.manifest)

    def statement(self, device: str, ballot_hashes: Sequence[bytes], base_hash: bytes | None = None) -> dict[str, Any]:
        """``device``'s signed statement that it sealed exactly ``ballot_hashes`` (for this
        election unless ``base_hash`` names another)."""
        base_hash = base_hash or self.manifest.base_hash
        return DeviceStatement.make(self.signers[device], base_hash, ballot_hashes).to_json()

    def resign(self, ballot: dict[str, Any], device: str = "x1") -> dict[str, Any]:
        """``ballot`` (any JSON, even a hostile one) signed by ``device`` as a terminal signs."""
        body = {name: value for name, value in ballot.items() if name != "signature"}
        return {**body, "signature": self.signers[device].sign(canonical_bytes(body)).hex()}

    # --- the three places ----------------------------------------------------------------

    def ledger_core(self) -> LedgerCore:
        """The station's ledger logic with the polls open and an empty chain (no broker, no disk)."""
        keys = {name: signer.public_key for name, signer in self.signers.items() if name in REGISTERED}

        def lookup(device_id: str) -> Ed25519PublicKey | str:
            return keys.get(device_id, "unknown_device")

        state = LedgerState(ChainHead(0, self.genesis), polls="open")
        return LedgerCore(self.manifest, self.joint_key, self.genesis, lookup, self.roll_public, state)

    @property
    def profile(self) -> StationProfile:
        keys = StationKeys(STATION_ID, self.station.ledger_key.public_key(), self.roll_public)
        devices = {name: signer.public_key for name, signer in self.signers.items() if name in REGISTERED}
        return StationProfile(keys, devices)

    @property
    def election_keys(self) -> ElectionKeys:
        return ElectionKeys(self.manifest, self.joint_key)


@functools.cache
def kit() -> Kit:
    """Batches of one (a rehearsal manifest, ``batch_min`` 1): each submission is its own batch,
    so the chain keeps the table's order and "the last submission" is the last entry."""
    manifest = sample_manifest(contests=2, selections=3, limit=1, batch_min=1)
    trustees, publics, context = ceremony(manifest, 3, 2)
    signers = {name: DeviceSigner(name, Ed25519PrivateKey.generate()) for name in (*REGISTERED, STRANGER)}
    return Kit(
        manifest,
        context,
        tuple(trustees),
        tuple(publics),
        SimulatedStation(STATION_ID, manifest.base_hash),
        signers,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


# --- what a terminal sends, and what each place makes of it ---------------------------------


@dataclass(frozen=True)
class Sub:
    """One submission from a terminal: a sealed ballot (its JSON, or raw bytes for what JSON
    cannot say), the opening if it is spoiled, the device statement it carries (None: the
    honest one, filled in by :func:`honest`), and the sender's certificate name."""

    ballot: dict[str, Any] | None = None
    opening: dict[str, Any] | None = None
    sender: str = "x1"
    raw: bytes | None = None
    statement: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return "cast" if self.opening is None else "spoiled"

    @property
    def ballot_bytes(self) -> bytes:
        """The sealed ballot's bytes as the ledger would chain them (its hash is ``ballot_hash``)."""
        if self.raw is not None:
            return self.raw
        assert self.ballot is not None
        return canonical_bytes(self.ballot)

    @property
    def device(self) -> str:
        """The terminal whose statement this submission carries: the ballot's, else the sender."""
        named = (self.ballot or {}).get("device_id")
        return named if named in kit().signers else self.sender

    @property
    def base_hash(self) -> bytes | None:
        """The election the ballot names, if it names one at all (its terminal states for that one)."""
        named = (self.ballot or {}).get("base_hash")
        try:
            return bytes.fromhex(named) if isinstance(named, str) and len(named) == 64 else None
        except ValueError:
            return None

    def payload(self) -> bytes:
        """What the terminal publishes on its ballot topic (the ballot's bytes spliced in as they
        are, so a raw ballot stays raw inside a canonical envelope)."""
        assert self.statement is not None, "give the statement, or take the honest one (honest())"
        envelope: dict[str, Any] = {
            "version": BALLOT_MESSAGE_VERSION,
            "type": CAST_TYPE if self.opening is None else SPOILED_TYPE,
            "ballot": _PLACEHOLDER,
            "statement": self.statement,
        }
        if self.opening is not None:
            envelope["opening"] = self.opening
        return canonical_bytes(envelope).replace(canonical_bytes(_PLACEHOLDER), self.ballot_bytes)

    def file_stem(self, fallback: str) -> str:
        ballot_id = (self.ballot or {}).get("ballot_id")
        ok = isinstance(ballot_id, str) and len(ballot_id) == 32 and all(c in "0123456789abcdef" for c in ballot_id)
        return ballot_id if ok else fallback  # type: ignore[return-value]


_PLACEHOLDER = "\u0000raw ballot\u0000"


def honest(subs: Sequence[Sub]) -> list[Sub]:
    """``subs`` with each missing statement filled in as an honest terminal makes it: its
    device's every ballot so far, this one included."""
    sealed: dict[str, list[bytes]] = {}
    filled = []
    for sub in subs:
        hashes = sealed.setdefault(sub.device, [])
        if sha256(sub.ballot_bytes) not in hashes:
            hashes.append(sha256(sub.ballot_bytes))
        statement = sub.statement or kit().statement(sub.device, hashes, sub.base_hash)
        filled.append(Sub(sub.ballot, sub.opening, sub.sender, sub.raw, statement))
    return filled


def final_statements(subs: Sequence[Sub]) -> list[DeviceStatement]:
    """Each registered terminal's last honest statement over ``subs`` (what the hub forwards
    after the final close, and the record publishes)."""
    latest = {sub.device: sub.statement for sub in honest(subs) if sub.device in REGISTERED}
    return [DeviceStatement.from_json(latest[device]) for device in sorted(latest)]


def ledger_decisions(subs: Sequence[Sub]) -> list[Decision]:
    core = kit().ledger_core()
    return [core.decide(sub.payload(), sub.sender, now=float(i)) for i, sub in enumerate(honest(subs))]


def ledger_outcome(decision: Decision) -> Reason | None:
    """None when the ballot joins the pool (or is an exact resend), else the refusal reason."""
    if isinstance(decision, Held | Duplicate):
        return None
    assert isinstance(decision, Refused)
    return decision.reason


def chain_of_batches(subs: Sequence[Sub], genesis: bytes) -> list[ChainEntry]:
    """The chain a hub with batches of one makes of ``subs``: one entry each, in their order."""
    chain = ChainState(genesis)
    entries = []
    for sub in subs:
        (entry,) = chain.next_batch([PoolBallot(sha256(sub.ballot_bytes), sub.kind)])
        chain.append(entry)
        entries.append(entry)
    return entries


def _forwarded(subs: Sequence[Sub], genesis: bytes) -> tuple[list[ForwardedEntry], dict[int, bytes]]:
    """The chain entries a hub would forward for ``subs``, in order (raw ballots as placeholders)."""
    entries, raws = [], {}
    for sub, entry in zip(subs, chain_of_batches(subs, genesis), strict=True):
        ballot = sub.ballot if sub.raw is None else {"placeholder": _PLACEHOLDER + str(entry.position)}
        if sub.raw is not None:
            raws[entry.position] = sub.raw
        entries.append(ForwardedEntry(entry, ballot, sub.opening))  # type: ignore[arg-type]
    return entries, raws


def forwarded(subs: Sequence[Sub]) -> list[ForwardedEntry]:
    """The entries a hub forwards for ``subs`` (JSON ballots only)."""
    entries, raws = _forwarded(subs, kit().genesis)
    assert not raws, "raw ballots travel only inside batch_bytes"
    return entries


def batch_bytes(subs: Sequence[Sub], request: int = 1, *, devices: bool = False) -> bytes:
    """The hub's batch message carrying ``subs`` (raw ballots spliced in byte for byte), with
    the terminals' final statements when ``devices`` (as after the final close)."""
    entries, raws = _forwarded(subs, kit().genesis)
    payload = batch_payload(STATION_ID, request, entries, [], final_statements(subs) if devices else [])
    for position, raw in raws.items():
        payload = payload.replace(canonical_bytes({"placeholder": _PLACEHOLDER + str(position)}), raw)
    return payload


@dataclass(frozen=True)
class GatewayOutcome:
    """What the centre made of the last submission: ``refused`` (the whole message),
    ``invalid`` (not chained, evidence kept), ``flagged`` (chained with an incident) or
    ``chained``; and the reason, in the ledger's vocabulary."""

    outcome: str
    reason: Reason | None
    incidents: tuple[Incident, ...] = field(default=())


def gateway_outcome(subs: Sequence[Sub]) -> GatewayOutcome:
    k = kit()
    try:
        batch = parse_up(batch_bytes(subs), STATION_ID)
    except Refusal as refusal:
        return GatewayOutcome("refused", Reason(refusal.reason))
    assert isinstance(batch, Batch)
    checked = prevalidate(k.profile, k.election_keys, batch)
    snapshot = StationSnapshot(ChainHead(0, k.genesis), "ok", {}, {}, {}, {}, [])
    applied = StationJudge(STATION_ID, k.genesis).apply(snapshot, checked)
    last = len(subs)
    incidents = tuple(i for i in (*checked.incidents, *applied.incidents) if i.position == last)
    chained = any(e.entry.position == last for e in applied.entries)
    if len(applied.entries) != last - 1 + chained:
        raise AssertionError(f"the centre refused part of the good history: {[*checked.incidents, *applied.incidents]}")
    reasons = {i.reason for i in incidents}
    if len(reasons) > 1:
        raise AssertionError(f"several reasons for one entry: {incidents}")
    reason = next(iter(reasons)) if reasons else None
    if chained:
        return GatewayOutcome("flagged" if incidents else "chained", reason, incidents)
    return GatewayOutcome("invalid", reason, incidents)


def write_record(subs: Sequence[Sub], root: Path) -> DirectoryRecord:
    """The election record a centre would publish had the station chained every submission."""
    k = kit()
    writer = RecordWriter(root)
    write_election_package(writer, k.manifest, k.context, list(k.publics))
    devices = [
        {"device_id": name, "public_key": signer.public_key.public_bytes_raw().hex()}
        for name, signer in sorted(k.signers.items())
        if name in REGISTERED
    ]
    writer.write(DEVICES, {"version": RECORD_VERSION, "devices": devices})
    for statement in final_statements(subs):
        writer.write(f"{DEVICE_STATEMENTS}/{statement.device_id}.json", statement.to_json())
    entries = chain_of_batches(subs, k.genesis)
    cast: dict[str, bytes] = {}
    for index, sub in enumerate(subs):
        stem = sub.file_stem(f"{index:032x}")
        if sub.opening is None:
            writer.write_bytes(f"{BALLOTS}/{stem}.json", sub.ballot_bytes)
            cast[stem] = sub.ballot_bytes  # one file per ballot id: a second one overwrites the first
        else:
            document = {"version": RECORD_VERSION, "ballot": sub.ballot, "opening": sub.opening}
            writer.write(f"{SPOILED}/{stem}.json", document)
    folder = f"{STATIONS}/{STATION_ID}"
    keys = StationKeys(STATION_ID, k.station.ledger_key.public_key(), k.roll_public)
    writer.write(f"{folder}/{STATION_FILE}", keys.to_json())
    writer.write_bytes(f"{folder}/{CHAIN_FILE}", chain_lines(entries))
    last = entries[-1] if entries else None
    head = ChainHead(last.position, last.entry_hash, last.batch) if last else ChainHead(0, k.genesis)
    checkpoint = Checkpoint(STATION_ID, k.manifest.base_hash, head).sign(k.station.ledger_key)
    writer.write(f"{folder}/{CHECKPOINT_FILE}", checkpoint)
    accumulator = TallyAccumulator(k.manifest)
    for data in cast.values():
        with contextlib.suppress(ElectionError):  # the verifier tallies every cast ballot it can read
            accumulator.add(SealedBallot.from_json(parse_json(data, canonical=True), k.manifest))
    tally = accumulator.result()
    writer.write(TALLY, tally.to_json(k.manifest))
    shares = [DecryptionShare.compute(trustee, tally) for trustee in k.trustees[: k.context.quorum]]
    for share, trustee in zip(shares, k.trustees, strict=False):
        writer.write(f"decryption/{trustee.trustee_id}.json", share.to_json(k.manifest, tally))
    results = decrypt_totals(tally, shares, list(k.publics), k.context.quorum)
    writer.write(RESULTS, results.to_json(k.manifest))
    counted = sum(1 for entry in entries if entry.kind in COUNTED_KINDS)
    station = StationLine(STATION_ID, ELECTION_DAY, None, None, counted)
    writer.write(RECONCILIATION, Reconciliation.make(k.manifest.base_hash, [station]).to_json())
    return DirectoryRecord(root)


def verifier_outcome(subs: Sequence[Sub], root: Path) -> tuple[frozenset[int], VerificationReport]:
    report = verify_record(write_record(subs, root))
    return frozenset(report.failed_checks()), report
