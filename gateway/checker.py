"""The central office's judgement of a station's forwarded chain, free of I/O.

Two phases per batch, so the expensive part runs outside any database transaction and in
parallel across gateway workers, and an audit once the polls are closed:

1. :func:`prevalidate` — everything that needs no stored state: the ballot's bytes hash to
   the entry's ``ballot_hash``, the ballot follows the manifest, its device is one of this
   station's registered terminals and its signature verifies, its proofs verify, a cast
   ballot's token is signed by this station's roll, a spoiled ballot carries no token and its
   opening reproduces it; each signed statement (checkpoint, zero and closing report)
   verifies under the station's ledger key and names this station and election.
2. :meth:`StationJudge.apply` — against a :class:`StationSnapshot` the store read inside its
   transaction: chain continuity from the stored head with :class:`~election.chain.ChainState`
   (links, batch numbers, ballot-hash order within a batch; a resend is a no-op, a different
   entry at a held position is a FORK, an entry beyond head+1 is a GAP), token and ballot reuse
   across every station, whether the signed statements describe the chain the centre holds, and
   which device statement to keep (the one with the largest ``sealed``).
3. After the final close (:func:`device_problems`, :func:`batch_rule_problem`), against the whole
   station as stored: each device's ballots held are exactly the set its final statement signs
   (record format 2 has no device chain: this is what catches a dropped, added or replaced
   ballot), and every batch before the close holds at least the manifest's ``batch_min``.

An entry failing a check never joins the chain; it is kept as evidence in an
:class:`Incident` naming its station and position, and the station's head stays where it was,
so an honest hub's resend from that head can heal damage done on the way. A token or ballot
seen at another station *does* join (the station's ledger signed it; dropping it would hide
it) and is flagged for the officials — the exported record then fails verifier check 9/17.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election import tokens
from election.ballot import BallotOpening, SealedBallot
from election.chain import COUNTED_KINDS, ChainEntry, ChainError, ChainHead, ChainState, verify_chain, verify_document
from election.devices import DeviceStatement
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
    "invalid",  # an entry or a device statement failed a check (altered, inserted, unsigned, ...): not kept
    "token_reused",  # a cast ballot's token was already spent (at this or another station)
    "ballot_reused",  # the same ballot hash is chained twice
    "unknown_station",  # a message from a station that is not registered
    "malformed",  # a message that is not the protocol
    "count_mismatch",  # the closing report's ballots differ from the roll's check-ins
    "late",  # a cast ballot chained after the final close (token issued before it): counted, flagged
    "device_mismatch",  # after the close, a device's ballots held are not the set its statement signs (or none)
    "batch_rule",  # before the close a batch holds fewer than batch_min, or the close is not a batch end
)
RESOLVABLE_DEVICE_KIND = "device_mismatch"
"""Judged afresh at every audit: open until the device's ballots and its latest statement agree
(a late ballot arrives a message before the statement that covers it)."""


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


@dataclass(frozen=True, slots=True)
class Statement:
    """A signed ledger statement whose signature verified: it claims the chain had this head."""

    kind: str
    head: ChainHead
    document: bytes
    check_ins: int | None = None
    ballots: int | None = None
    closed_position: int | None = None
    """A closing report's position of the final close (where the last full-size batch may end)."""

    @property
    def digest(self) -> bytes:
        return sha256(self.document)


@dataclass(slots=True)
class Prevalidated:
    entries: list[CheckedEntry] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    devices: list[DeviceStatement] = field(default_factory=list)
    """Device statements whose signature verified under a registered terminal of the station."""
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
    return Statement(
        body["type"],
        head,
        canonical_bytes(document),
        body.get("check_ins"),
        body.get("ballots"),
        body.get("closed_position"),
    )


def _device_statement_problem(
    profile: StationProfile, election: ElectionKeys, statement: DeviceStatement
) -> str | None:
    """Why a device statement cannot be kept, or None: it must be signed by a registered terminal
    of this station, for this election."""
    key = profile.devices.get(statement.device_id)
    if key is None:
        return f"device {statement.device_id} is not a registered terminal of this station"
    if statement.base_hash != election.manifest.base_hash:
        return f"the statement of device {statement.device_id} belongs to another election"
    try:
        statement.verify(key)
    except ElectionError:
        return f"the statement of device {statement.device_id} is not signed by that device"
    return None


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
    for statement in batch.devices:
        refused = _device_statement_problem(profile, election, statement)
        if refused is None:
            result.devices.append(statement)
        else:
            evidence = canonical_bytes(statement.to_json())
            result.incidents.append(
                Incident(
                    station, None, "invalid", f"device statement refused: {refused}", evidence, Reason.BAD_STATEMENT
                )
            )
    return result


def _evidence(value: Any) -> bytes:
    """What a refused entry or statement was, as bytes to keep (canonical when it can be)."""
    item = value.to_json() if isinstance(value, ForwardedEntry) else value
    try:
        return canonical_bytes(item)
    except FormatError:
        return repr(item).encode("utf-8", "backslashreplace")[:65536]


Place = tuple[str, int]
"""Where something is chained: station id and position."""


def _place(place: Place) -> str:
    return f"station {place[0]} position {place[1]}"


@dataclass(slots=True)
class StationSnapshot:
    """What the store read, inside its transaction, for one batch of one station."""

    head: ChainHead
    """The stored head, with the batch it ends (the next entry continues it or starts the next)."""
    state: str = "ok"
    known_hashes: dict[int, bytes] = field(default_factory=dict)
    """Entry hash at every held position the batch or a statement mentions."""
    token_owners: dict[bytes, Place] = field(default_factory=dict)
    ballot_owners: dict[bytes, Place] = field(default_factory=dict)
    ballot_id_owners: dict[bytes, Place] = field(default_factory=dict)
    """Where each token, ballot hash and ballot id of the batch is already chained (any station)."""
    pending: list[Statement] = field(default_factory=list)
    """Statements stored earlier whose position the chain had not reached yet."""
    last_ballot: bytes | None = None
    """The ballot hash of the head entry: a batch may span forwarding messages, and the next
    entry of the same batch must sort after it."""
    device_statements: dict[str, DeviceStatement] = field(default_factory=dict)
    """The statement kept so far of each device whose statement the batch carries."""


@dataclass(slots=True)
class Applied:
    """What to write, in the same transaction, after phase 2."""

    head: ChainHead
    state: str
    entries: list[CheckedEntry] = field(default_factory=list)
    devices: list[DeviceStatement] = field(default_factory=list)
    """Device statements that replace the one kept (a larger ``sealed``): overwritten in place."""
    incidents: list[Incident] = field(default_factory=list)
    verified: list[Statement] = field(default_factory=list)
    pending: list[Statement] = field(default_factory=list)
    mismatched: list[Statement] = field(default_factory=list)
    """Signed statements that contradict the chain held: kept as evidence of a fork."""
    resolved_gaps_below: int = 0
    resolved_mismatches_below: int = 0
    """A verified closing report whose ballots equal the check-ins accounts for the count
    mismatches of earlier closing reports (the late ballots that arrived since)."""
    audit: list[Incident] = field(default_factory=list)
    """What the after-close audit found (the store runs it after writing the rest)."""


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
        chain = ChainState(self.genesis, snapshot.head, snapshot.last_ballot)
        hashes = dict(snapshot.known_hashes)
        hashes[0] = self.genesis
        tokens_seen = dict(snapshot.token_owners)
        ballots_seen = dict(snapshot.ballot_owners)
        ids_seen = dict(snapshot.ballot_id_owners)
        rejected = set(checked.rejected_positions)
        gap_reported = False
        for item in sorted(checked.entries, key=lambda e: e.entry.position):
            position = item.entry.position
            if position <= chain.head.position:
                if hashes.get(position) != item.entry_hash:
                    self._fork(out, position, "a different entry than the one held at this position", item)
                continue
            if position > chain.head.position + 1:
                missing = chain.head.position + 1
                if not gap_reported and missing not in rejected:
                    detail = f"entries from position {missing} are missing; received position {position}"
                    out.incidents.append(Incident(self.station_id, missing, "gap", detail))
                gap_reported = True
                continue
            refusal = self._chain_refusal(chain, item, ballots_seen.get(item.entry.ballot_hash))
            if refusal is not None:
                out.incidents.append(refusal)
                rejected.add(position)
                continue
            self._flag_reuse(out, item, tokens_seen, ballots_seen, ids_seen)
            if item.entry.kind == "late":
                out.incidents.append(
                    Incident(
                        self.station_id,
                        position,
                        "late",
                        f"a ballot of terminal {item.ballot.device_id} chained after the polls closed (its token "
                        "was issued before the close): counted, see docs/operations.md §7",
                    )
                )
            out.entries.append(item)
            hashes[position] = item.entry_hash
        out.head = chain.head
        out.resolved_gaps_below = out.head.position + 1
        for statement in [*snapshot.pending, *checked.statements]:
            self._judge_statement(out, statement, hashes)
        for statement in checked.devices:
            self._keep_device_statement(out, statement, snapshot.device_statements.get(statement.device_id))
        return out

    def _chain_refusal(self, chain: ChainState, item: CheckedEntry, chained_at: Place | None) -> Incident | None:
        """Why an entry cannot extend this station's chain (None: it did): the links, batch
        numbers and ballot-hash order within a batch (:class:`ChainState`), and no ballot twice
        in one chain. Such an entry was inserted, replayed or moved on the way, or a hub broke
        the chain's rules; it is never chained, so the head stays for an honest resend."""
        position = item.entry.position
        if chained_at is not None and chained_at[0] == self.station_id:
            detail = f"the ballot is already chained at position {chained_at[1]} of this station (replayed?)"
            return Incident(self.station_id, position, "invalid", detail, item.ballot_bytes, Reason.DUPLICATE_BALLOT_ID)
        try:
            chain.append(item.entry)
        except ChainError as error:
            return Incident(self.station_id, position, "invalid", str(error), item.ballot_bytes)
        return None

    def _flag_reuse(
        self,
        out: Applied,
        item: CheckedEntry,
        tokens_seen: dict[bytes, Place],
        ballots_seen: dict[bytes, Place],
        ids_seen: dict[bytes, Place],
    ) -> None:
        """A ballot (chained at another station), ballot id or token already chained joins all
        the same (the ledger signed it; dropping it would hide it) and is flagged for the
        officials."""
        position, ballot = item.entry.position, item.ballot
        where = (self.station_id, position)
        if ballot.ballot_hash in ballots_seen:
            out.incidents.append(
                Incident(
                    self.station_id,
                    position,
                    "ballot_reused",
                    f"the same ballot is already chained at {_place(ballots_seen[ballot.ballot_hash])}",
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
                    f"ballot id {ballot.ballot_id.hex()} is already chained at {_place(ids_seen[ballot.ballot_id])}",
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
                        f"token {ballot.token.message.hex()[:16]}… already spent at {_place(owner)}",
                        reason=Reason.TOKEN_USED,
                    )
                )
            tokens_seen[ballot.token.message] = where
        ballots_seen[ballot.ballot_hash] = where
        ids_seen.setdefault(ballot.ballot_id, where)

    def _keep_device_statement(self, out: Applied, statement: DeviceStatement, kept: DeviceStatement | None) -> None:
        """Keep the statement with the largest ``sealed`` (a device's set only grows; an older one
        resent changes nothing). Two different sets of one size cannot both be the device's."""
        if kept is None or statement.sealed > kept.sealed:
            out.devices.append(statement)
        elif statement.sealed == kept.sealed and statement.commitment != kept.commitment:
            detail = (
                f"device {statement.device_id} signed two different sets of {statement.sealed} ballots; "
                "the first one received is kept"
            )
            evidence = canonical_bytes(statement.to_json())
            out.incidents.append(Incident(self.station_id, None, "invalid", detail, evidence, Reason.BAD_STATEMENT))

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


# --- after the final close -------------------------------------------------------------------


def device_problems(
    station_id: str, held: Mapping[str, Sequence[bytes]], statements: Mapping[str, DeviceStatement]
) -> list[Incident]:
    """Each device whose ballots held at the centre (``held``: ballot hashes per device) are not
    exactly the set its latest statement signs, or that has ballots but no statement.

    The device statement is what a hub cannot forge: a ballot dropped, added, or replaced by
    another (even one another terminal signed, or one of the same device that it never sent)
    changes the count or the commitment of some device.
    """
    problems = []
    for device in sorted(set(held) | set(statements)):
        hashes, statement = held.get(device, ()), statements.get(device)
        if statement is None:
            detail = f"device {device}: {len(hashes)} ballots held but no device statement after the close"
        elif statement.matches(hashes):
            continue
        elif len(hashes) != statement.sealed:
            change = "missing (dropped?)" if len(hashes) < statement.sealed else "too many (added?)"
            detail = (
                f"device {device} signed {statement.sealed} ballots sealed, the centre holds {len(hashes)}: "
                f"{abs(statement.sealed - len(hashes))} {change}"
            )
        else:
            detail = f"device {device}: the {len(hashes)} ballots held are not the set it signed (a ballot replaced?)"
        problems.append(Incident(station_id, None, RESOLVABLE_DEVICE_KIND, detail))
    return problems


def batch_rule_problem(
    station_id: str, genesis: bytes, entries: Iterable[ChainEntry], batch_min: int, closed_position: int
) -> Incident | None:
    """Whether the chain keeps the batch rule of record format 2 up to the final close (every
    batch before it holds at least ``batch_min`` entries, the close ends a batch), as the
    verifier's check 16 judges it. ``entries`` run from position 1 to ``closed_position + 1``
    when held: the entry after the close shows whether the close ended its batch, and later ones
    (late ballots, which may come in batches of any size) are not this rule's concern."""
    try:
        verify_chain(genesis, entries, batch_min=batch_min, closed_position=closed_position)
    except ChainError as error:
        return Incident(station_id, closed_position, "batch_rule", f"the chain up to the close: {error}")
    return None
