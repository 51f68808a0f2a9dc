"""The central office's judgement of a station's forwarded chain, free of I/O.

Two phases, so the expensive part runs outside any database transaction and in parallel
across gateway workers:

1. :func:`prevalidate` — everything that needs no stored state: the ballot's bytes hash to
   the entry's ``ballot_hash``, the ballot follows the manifest, its device is one of this
   station's registered terminals and its signature verifies, its proofs verify, a cast
   ballot's token is signed by this station's roll, a spoiled ballot carries no token and its
   opening reproduces it; each signed statement (checkpoint, zero and closing report)
   verifies under the station's ledger key and names this station and election.
2. :meth:`StationJudge.apply` — against a :class:`StationSnapshot` the store read inside its
   transaction: chain continuity from the stored head (a resend is a no-op, a different entry
   at a held position is a FORK, an entry beyond head+1 is a GAP), each device's own chain,
   token and ballot reuse across every station, and whether the signed statements describe
   the chain the centre holds.

An entry failing a check never joins the chain; it is kept as evidence in an
:class:`Incident` naming its station and position, and the station's head stays where it was,
so an honest hub's resend from that head can heal damage done on the way. A token or ballot
seen at another station *does* join (the station's ledger signed it; dropping it would hide
it) and is flagged for the officials — the exported record then fails verifier check 9/17.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election import tokens
from election.ballot import GENESIS_HASH, BallotOpening, SealedBallot
from election.chain import COUNTED_KINDS, ChainEntry, ChainHead, tracking_code, verify_document
from election.encoding import canonical_bytes, sha256
from election.errors import ElectionError, FormatError
from election.group import Point
from election.manifest import Manifest
from election.stations import StationKeys
from protocol.errors import Reason
from protocol.forwarding import Batch, ForwardedEntry, check_statement

INCIDENT_KINDS = (
    "gap",  # an entry arrived beyond head+1: the positions between are missing (so far)
    "fork",  # a different entry at a position the centre already holds, or a signed head that disagrees
    "invalid",  # an entry failed a check (altered, inserted, unsigned, bad proof, ...): not chained
    "token_reused",  # a cast ballot's token was already spent (at this or another station)
    "ballot_reused",  # the same ballot hash is chained twice
    "unknown_station",  # a message from a station that is not registered
    "malformed",  # a message that is not the protocol
    "count_mismatch",  # the closing report's ballots differ from the roll's check-ins
    "late",  # a cast ballot chained after the final close (token issued before it): counted, flagged
)


@dataclass(frozen=True, slots=True)
class Incident:
    station_id: str
    position: int | None
    kind: str
    detail: str
    evidence: bytes = b""
    reason: Reason | None = None
    """For an entry refused or flagged: the rule it broke, in the ledger's own vocabulary
    (``protocol.errors.Reason``), so that hub and centre can be held to one admission rule
    (tests/protocol/bad_ballots.py). Not part of the digest."""

    @property
    def digest(self) -> bytes:
        """Identity for de-duplication: the same problem resent is recorded once."""
        return sha256(canonical_bytes([self.station_id, self.position, self.kind, self.detail, self.evidence.hex()]))

    def describe(self) -> str:
        where = f"station {self.station_id}" + ("" if self.position is None else f" position {self.position}")
        return f"{self.kind.upper()} at {where}: {self.detail}"


@dataclass(frozen=True, slots=True)
class StationProfile:
    """What the centre registered about a station: its ledger and roll keys and its terminals."""

    keys: StationKeys
    devices: Mapping[str, Ed25519PublicKey]

    @property
    def station_id(self) -> str:
        return self.keys.station_id


@dataclass(frozen=True, slots=True)
class ElectionKeys:
    manifest: Manifest
    joint_key: Point


@dataclass(frozen=True, slots=True)
class CheckedEntry:
    """An entry whose ballot passed every stateless check."""

    entry: ChainEntry
    entry_hash: bytes
    ballot: SealedBallot
    ballot_bytes: bytes
    opening_bytes: bytes | None

    @property
    def tracking_code(self) -> str:
        return tracking_code(self.entry_hash)


@dataclass(frozen=True, slots=True)
class Statement:
    """A signed ledger statement whose signature verified: it claims the chain had this head."""

    kind: str
    head: ChainHead
    document: bytes
    check_ins: int | None = None
    ballots: int | None = None

    @property
    def digest(self) -> bytes:
        return sha256(self.document)


@dataclass(slots=True)
class Prevalidated:
    entries: list[CheckedEntry] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    rejected_positions: set[int] = field(default_factory=set)


Problem = tuple[Reason, str]


def _entry_problem(profile: StationProfile, election: ElectionKeys, item: ForwardedEntry) -> tuple[Problem | None, Any]:
    """The first stateless problem of one forwarded entry (the rule it broke and why), or
    (None, parsed ballot and opening). The same rules as the ledger's, in the ledger's terms."""
    entry = item.entry
    try:
        ballot_bytes = item.ballot_bytes
        if sha256(ballot_bytes) != entry.ballot_hash:
            return (
                Reason.MALFORMED,
                "the ballot's bytes do not hash to the entry's ballot_hash (altered on the way?)",
            ), None
        ballot = SealedBallot.from_json(item.ballot, election.manifest)
    except ElectionError as error:
        return (Reason.MALFORMED, f"malformed ballot: {error}"), None
    if ballot.base_hash != election.manifest.base_hash:
        return (Reason.WRONG_ELECTION, "the ballot belongs to another election"), None
    key = profile.devices.get(ballot.device_id)
    if key is None:
        return (Reason.UNKNOWN_DEVICE, f"device {ballot.device_id} is not a registered terminal of this station"), None
    if not ballot.signature_valid(key):
        return (Reason.BAD_SIGNATURE, f"the signature of device {ballot.device_id} does not verify"), None
    opening_bytes = None
    opening = None
    if entry.kind in COUNTED_KINDS:
        if item.opening is not None:
            return (Reason.MALFORMED, "a cast ballot must not come with an opening"), None
        if ballot.token is None:
            return (Reason.NO_TOKEN, "a cast ballot without a token"), None
        if not tokens.verify(profile.keys.roll_key, ballot.token.message, ballot.token.signature):
            return (Reason.BAD_TOKEN, "the token is not signed by this station's roll"), None
    else:
        if ballot.token is not None:
            return (Reason.TOKEN_ON_SPOILED, "a spoiled ballot must not carry a token"), None
        if item.opening is None:
            return (Reason.MALFORMED, "a spoiled ballot without its opening"), None
        try:
            opening = BallotOpening.from_json(item.opening, election.manifest)
            opening_bytes = canonical_bytes(item.opening)
        except ElectionError as error:
            return (Reason.MALFORMED, f"the opening of the spoiled ballot: {error}"), None
    failures = ballot.proof_failures(election.manifest, election.joint_key)
    if failures:
        return (Reason.BAD_PROOF, "proofs do not verify: " + ", ".join(failures)), None
    if opening is not None:
        problems = opening.opening_failures(ballot, election.manifest, election.joint_key)
        if problems:
            return (
                Reason.BAD_OPENING,
                "the opening does not reproduce the spoiled ballot: " + "; ".join(problems),
            ), None
    return None, (ballot, ballot_bytes, opening_bytes)


def _statement(profile: StationProfile, election: ElectionKeys, document: Any) -> Statement:
    body = verify_document(check_statement(document), profile.keys.ledger_key)
    if body["station_id"] != profile.station_id:
        raise ElectionError(f"signed for station {body['station_id']!r}")
    if body["base_hash"] != election.manifest.base_hash.hex():
        raise ElectionError("signed for another election")
    head = ChainHead(body["position"], bytes.fromhex(body["head_hash"]))
    check_ins = body.get("check_ins")
    ballots = body.get("ballots")
    return Statement(body["type"], head, canonical_bytes(document), check_ins, ballots)


def prevalidate(profile: StationProfile, election: ElectionKeys, batch: Batch) -> Prevalidated:
    """Phase 1: every check that needs no stored state (signatures, proofs, tokens, openings)."""
    result = Prevalidated()
    station = profile.station_id
    for item in batch.entries:
        problem, parsed = _entry_problem(profile, election, item)
        position = item.entry.position
        if problem is not None:
            reason, detail = problem
            evidence = _evidence(item)
            result.incidents.append(Incident(station, position, "invalid", detail, evidence, reason))
            result.rejected_positions.add(position)
            continue
        ballot, ballot_bytes, opening_bytes = parsed
        result.entries.append(CheckedEntry(item.entry, item.entry.entry_hash, ballot, ballot_bytes, opening_bytes))
    for document in batch.statements:
        try:
            result.statements.append(_statement(profile, election, document))
        except ElectionError as error:
            result.incidents.append(
                Incident(station, None, "invalid", f"signed statement refused: {error}", _evidence(document))
            )
    return result


def _evidence(value: Any) -> bytes:
    """What a refused entry or statement was, as bytes to keep (canonical when it can be)."""
    item = value.to_json() if isinstance(value, ForwardedEntry) else value
    try:
        return canonical_bytes(item)
    except FormatError:
        return repr(item).encode("utf-8", "backslashreplace")[:65536]


@dataclass(slots=True)
class StationSnapshot:
    """What the store read, inside its transaction, for one batch of one station."""

    head: ChainHead
    state: str
    known_hashes: dict[int, bytes]
    """Entry hash at every held position the batch or a statement mentions."""
    device_heads: dict[str, tuple[int, bytes]]
    """Sequence and ballot hash of the last chained ballot of each device in the batch."""
    token_owners: dict[bytes, str]
    ballot_owners: dict[bytes, str]
    pending: list[Statement]
    """Statements stored earlier whose position the chain had not reached yet."""
    ballot_id_owners: dict[bytes, str] = field(default_factory=dict)
    """Where each ballot id of the batch is already chained (at any station)."""


@dataclass(slots=True)
class Applied:
    """What to write, in the same transaction, after phase 2."""

    head: ChainHead
    state: str
    entries: list[CheckedEntry] = field(default_factory=list)
    device_heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)
    verified: list[Statement] = field(default_factory=list)
    pending: list[Statement] = field(default_factory=list)
    mismatched: list[Statement] = field(default_factory=list)
    """Signed statements that contradict the chain held: kept as evidence of a fork."""
    resolved_gaps_below: int = 0
    resolved_mismatches_below: int = 0
    """A verified closing report whose ballots equal the check-ins accounts for the count
    mismatches of earlier closing reports (the late ballots that arrived since)."""


def snapshot_positions(head: ChainHead, prevalidated: Prevalidated, pending: Iterable[Statement]) -> set[int]:
    """The held positions whose entry hash phase 2 will need (the store fetches them)."""
    wanted = {e.entry.position for e in prevalidated.entries}
    wanted |= {s.head.position for s in (*prevalidated.statements, *pending)}
    return {p for p in wanted if 1 <= p <= head.position}


class StationJudge:
    """Phase 2 for one station and one batch."""

    def __init__(self, station_id: str, genesis: bytes) -> None:
        self.station_id = station_id
        self.genesis = genesis

    def apply(self, snapshot: StationSnapshot, checked: Prevalidated) -> Applied:
        out = Applied(snapshot.head, snapshot.state)
        hashes = dict(snapshot.known_hashes)
        hashes[0] = self.genesis
        tokens_seen = dict(snapshot.token_owners)
        ballots_seen = dict(snapshot.ballot_owners)
        ids_seen = dict(snapshot.ballot_id_owners)
        device_heads = dict(snapshot.device_heads)
        gap_reported = False
        for item in sorted(checked.entries, key=lambda e: e.entry.position):
            position = item.entry.position
            if position <= out.head.position:
                if hashes.get(position) != item.entry_hash:
                    self._fork(out, position, "a different entry than the one held at this position", item)
                continue
            if position > out.head.position + 1:
                missing = out.head.position + 1
                if not gap_reported and missing not in checked.rejected_positions:
                    out.incidents.append(
                        Incident(
                            self.station_id,
                            missing,
                            "gap",
                            f"entries from position {missing} are missing; received position {position}",
                        )
                    )
                gap_reported = True
                continue
            if item.entry.prev_hash != out.head.entry_hash:
                out.incidents.append(
                    Incident(
                        self.station_id,
                        position,
                        "invalid",
                        "the entry does not link to the previous entry's hash (inserted or reordered?)",
                        item.ballot_bytes,
                    )
                )
                continue
            ballot = item.ballot
            last_seq, last_hash = device_heads.get(ballot.device_id, (0, GENESIS_HASH))
            if ballot.device_seq != last_seq + 1 or ballot.prev_hash != last_hash:
                out.incidents.append(
                    Incident(
                        self.station_id,
                        position,
                        "invalid",
                        f"device {ballot.device_id}: sequence {ballot.device_seq} does not follow "
                        f"its last chained ballot {last_seq} (dropped or replayed ballot)",
                        item.ballot_bytes,
                        Reason.DEVICE_CHAIN,
                    )
                )
                continue
            where = f"station {self.station_id} position {position}"
            if ballot.ballot_hash in ballots_seen:
                out.incidents.append(
                    Incident(
                        self.station_id,
                        position,
                        "ballot_reused",
                        f"the same ballot is already chained at {ballots_seen[ballot.ballot_hash]}",
                        reason=Reason.DUPLICATE_BALLOT_ID,
                    )
                )
            elif ballot.ballot_id in ids_seen:
                # A copy (same id, ciphertexts and proofs) re-signed with another token: the
                # ledger refuses it (duplicate_ballot_id); chained here, it is flagged.
                out.incidents.append(
                    Incident(
                        self.station_id,
                        position,
                        "ballot_reused",
                        f"ballot id {ballot.ballot_id.hex()} is already chained at {ids_seen[ballot.ballot_id]}",
                        reason=Reason.DUPLICATE_BALLOT_ID,
                    )
                )
            if ballot.token is not None:
                owner = tokens_seen.get(ballot.token.message)
                if owner is not None:
                    out.incidents.append(
                        Incident(
                            self.station_id,
                            position,
                            "token_reused",
                            f"token {ballot.token.message.hex()[:16]}… already spent at {owner}",
                            reason=Reason.TOKEN_USED,
                        )
                    )
                tokens_seen[ballot.token.message] = where
            ballots_seen[ballot.ballot_hash] = where
            ids_seen.setdefault(ballot.ballot_id, where)
            device_heads[ballot.device_id] = (ballot.device_seq, ballot.ballot_hash)
            out.device_heads[ballot.device_id] = (ballot.device_seq, ballot.ballot_hash)
            if item.entry.kind == "late":
                out.incidents.append(
                    Incident(
                        self.station_id,
                        position,
                        "late",
                        f"a ballot of terminal {ballot.device_id} chained after the polls closed (its token was "
                        "issued before the close): counted, see docs/operations.md §7",
                    )
                )
            out.entries.append(item)
            out.head = ChainHead(position, item.entry_hash)
            hashes[position] = item.entry_hash
        out.resolved_gaps_below = out.head.position + 1
        for statement in [*snapshot.pending, *checked.statements]:
            self._judge_statement(out, statement, hashes)
        return out

    def _fork(self, out: Applied, position: int | None, detail: str, evidence: CheckedEntry | bytes) -> None:
        data = evidence.ballot_bytes if isinstance(evidence, CheckedEntry) else evidence
        out.incidents.append(Incident(self.station_id, position, "fork", detail, data))
        out.state = "forked"

    def _judge_statement(self, out: Applied, statement: Statement, hashes: dict[int, bytes]) -> None:
        position = statement.head.position
        if position > out.head.position:
            out.pending.append(statement)
            return
        if hashes.get(position) != statement.head.entry_hash:
            self._fork(
                out,
                position,
                f"the ledger's signed {statement.kind} names another head than the chain held",
                statement.document,
            )
            return
        out.verified.append(statement)
        if statement.kind == "closing_report" and statement.check_ins == statement.ballots:
            out.resolved_mismatches_below = max(out.resolved_mismatches_below, position)
        if statement.kind == "closing_report" and statement.check_ins not in (None, statement.ballots):
            detail = f"closing report: {statement.ballots} ballots, the roll checked in {statement.check_ins}"
            out.incidents.append(Incident(self.station_id, position, "count_mismatch", detail))
