"""The ledger's decision logic, free of I/O: which sealed ballot joins the chain, and why not.

:class:`LedgerCore` holds a mirror of the durable state (chain head, each device's last
sequence number and ballot hash, used tokens, the ballots already in the chain) and turns one
received payload into a decision. The service shell persists accepted entries durably and only
then sends the acknowledgements; if the commit fails the process stops and restarts from the
database, so the mirror can never run ahead of the disk.

Checks, in this order (the first failure is the reason sent back):
``too_large``/``malformed`` (schema, encoding, every group element) → ``wrong_election`` →
``polls_not_open`` (only before the polls open) → ``device_mismatch`` (ballot's device id vs.
the sender's certificate) → ``unknown_device``/``revoked_device`` → ``bad_signature`` → ``device_chain`` (sequence and
previous hash) → ``duplicate_ballot_id`` (a ballot id is chained once, whatever else differs)
→ ``no_token``/``bad_token``/``token_used`` → ``bad_proof``.

Bounds, so that one certificate cannot make the hub work without end: a terminal whose
messages keep being refused is answered ``rate_limited`` (no parsing, no signature or proof
check) until its budget refills; a terminal may chain only a few spoiled ballots in a burst
(``too_many_spoiled``), which no voter challenging a ballot and voting again ever reaches.

A *spoiled* (challenged) ballot arrives on the same topic as ``{"version": 1, "type":
"spoiled_ballot", "ballot": sealed ballot, "opening": its opening}``. It is checked like a cast
ballot except that its token must be null (``token_on_spoiled``: a public opening next to the
voter's token would link the voter to their cast ballot) and its opening must reproduce every
ciphertext (``bad_opening``); it joins the chain as kind ``spoiled`` and advances the device
chain like any sealed ballot. The chain's ``ballot_hash`` is always the sealed ballot's hash.
Closing (docs/ledger.md, "Closing the polls"): the polls go ``open`` → ``closing`` →
``closed``. At ``closing`` the roll stops issuing tokens, so every valid unspent token from
then on was issued before the close: the ledger keeps chaining such ballots as ``cast``. After
the final close a cast ballot with a valid unspent token (a booth that was offline, say) is
chained as ``late``: never refused (the voter did vote), never silently counted (the closing
report, re-signed, lists it per terminal, and the centre flags it). Spoiled ballots after the
final close are chained as ``spoiled`` (never counted) so the device's chain can continue.

A ballot whose exact bytes are already in the chain is not checked again: it gets its original
acknowledgement (idempotent resend), even after the polls closed — but only when it comes from
the terminal that sealed it; from any other terminal it is ``device_mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election import tokens
from election.ballot import GENESIS_HASH, BallotOpening, SealedBallot
from election.chain import ChainEntry, ChainHead, ChainState, tracking_code
from election.encoding import sha256
from election.group import Point
from election.manifest import Manifest
from protocol.errors import Reason, Refusal
from protocol.messages import AckAccepted, AckRefused, BallotSubmission

POLLS_STATES = ("pending", "open", "closing", "closed")

DeviceLookup = Callable[[str], Ed25519PublicKey | str]
"""Device id → its Ed25519 key, or the refusal reason (``unknown_device``/``revoked_device``)."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A token bucket: ``burst`` at once, then one more every ``1 / rate`` seconds."""

    burst: float
    rate: float


REFUSAL_BUDGET = Budget(burst=30, rate=0.5)
"""Refused messages a terminal may send before it is answered ``rate_limited`` only."""
SPOILED_BUDGET = Budget(burst=5, rate=1 / 30)
"""Spoiled ballots a terminal may chain in a burst, then one every 30 s."""


@dataclass
class _Bucket:
    level: float
    at: float

    def take(self, budget: Budget, now: float) -> bool:
        self.level = min(budget.burst, self.level + max(0.0, now - self.at) * budget.rate)
        self.at = now
        if self.level < 1:
            return False
        self.level -= 1
        return True

    def has(self, budget: Budget, now: float) -> bool:
        return min(budget.burst, self.level + max(0.0, now - self.at) * budget.rate) >= 1


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new chain entry; acknowledge only after it is durable."""

    entry: ChainEntry
    entry_hash: bytes
    ballot: SealedBallot
    payload: bytes

    def ack(self) -> AckAccepted:
        return accepted_ack(self.entry, self.entry_hash)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The ballot is already in the chain: answer with its original acknowledgement."""

    entry: ChainEntry
    entry_hash: bytes

    def ack(self) -> AckAccepted:
        return accepted_ack(self.entry, self.entry_hash)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Reason
    detail: str
    payload_hash: bytes

    def ack(self) -> AckRefused:
        return AckRefused(self.payload_hash, self.reason, self.detail)


Decision = Accepted | Duplicate | Refused


def accepted_ack(entry: ChainEntry, entry_hash: bytes) -> AckAccepted:
    return AckAccepted(entry.ballot_hash, entry.position, entry_hash, tracking_code(entry_hash))


@dataclass
class LedgerState:
    """What the ledger remembers; loaded from the database at start."""

    head: ChainHead
    polls: str = "pending"
    device_heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    used_tokens: set[bytes] = field(default_factory=set)
    ballot_ids: set[bytes] = field(default_factory=set)
    entries_by_ballot: dict[bytes, tuple[ChainEntry, bytes, str]] = field(default_factory=dict)
    """Ballot hash → (entry, entry hash, the device that sealed it)."""
    per_device: dict[str, int] = field(default_factory=dict)
    """Cast ballots per terminal (what the closing report sets against the roll's check-ins)."""
    spoiled: int = 0
    late_per_device: dict[str, int] = field(default_factory=dict)
    """Cast ballots chained after the final close (``late``), per terminal."""
    closed_position: int | None = None
    """The chain position at the final close."""
    unreachable: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """Terminals declared unreachable at the final close → their device-chain head then
    (sequence, ballot hash; 0 and the genesis hash when none of its ballots arrived)."""

    def record(
        self,
        entry: ChainEntry,
        entry_hash: bytes,
        device_id: str,
        device_seq: int,
        token: bytes | None,
        ballot_id: bytes,
    ) -> None:
        """Remember one chained entry (on acceptance, and when the store replays the chain)."""
        self.head = ChainHead(entry.position, entry_hash)
        self.device_heads[device_id] = (device_seq, entry.ballot_hash)
        if token is not None:
            self.used_tokens.add(token)
        self.ballot_ids.add(ballot_id)
        self.entries_by_ballot[entry.ballot_hash] = (entry, entry_hash, device_id)
        if entry.kind == "cast":
            self.per_device[device_id] = self.per_device.get(device_id, 0) + 1
        elif entry.kind == "late":
            self.late_per_device[device_id] = self.late_per_device.get(device_id, 0) + 1
        else:
            self.spoiled += 1

    def counted_per_device(self) -> dict[str, int]:
        """Counted ballots (cast and late) per terminal."""
        counts = dict(self.per_device)
        for device, late in self.late_per_device.items():
            counts[device] = counts.get(device, 0) + late
        return counts

    def device_head(self, device_id: str) -> tuple[int, bytes]:
        return self.device_heads.get(device_id, (0, GENESIS_HASH))


class LedgerCore:
    def __init__(
        self,
        manifest: Manifest,
        joint_key: Point,
        genesis: bytes,
        devices: DeviceLookup,
        token_key: rsa.RSAPublicKey,
        state: LedgerState,
        *,
        check_proofs: bool = True,
    ) -> None:
        self.manifest = manifest
        self.joint_key = joint_key
        self.devices = devices
        self.token_key = token_key
        self.state = state
        self.chain = ChainState(genesis, state.head)
        self.check_proofs = check_proofs
        self._refusals: dict[str, _Bucket] = {}
        self._verdict: ProofVerdict | None = None
        self._spoiled: dict[str, _Bucket] = {}

    def decide(self, payload: bytes, sender: str, now: float = 0.0, *, verdict: ProofVerdict | None = None) -> Decision:
        """Judge one payload from terminal ``sender`` at monotonic time ``now``; an acceptance
        updates the mirror. ``verdict``: the payload's proof and opening checks, already made
        by :func:`proof_verdict` in a worker process (they depend on nothing but the payload)."""
        self._verdict = verdict
        payload_hash = sha256(payload)
        refusals = self._refusals.setdefault(sender, _Bucket(REFUSAL_BUDGET.burst, now))
        if not refusals.has(REFUSAL_BUDGET, now):
            return Refused(Reason.RATE_LIMITED, "too many refused messages from this terminal; wait", payload_hash)
        try:
            submission = BallotSubmission.decode(payload, self.manifest)
            ballot, opening = submission.ballot, submission.opening
            known = self.state.entries_by_ballot.get(ballot.ballot_hash)
            if known:
                entry, entry_hash, device = known
                if device != sender:
                    raise Refusal(Reason.DEVICE_MISMATCH, f"a ballot of {device} sent by {sender}")
                return Duplicate(entry, entry_hash)
            self._check(ballot, sender, opening, now)
        except Refusal as refusal:
            refusals.take(REFUSAL_BUDGET, now)
            return Refused(Reason(refusal.reason), refusal.detail, payload_hash)
        entry = self.chain.next_entry(ballot.ballot_hash, self._kind(opening))
        entry_hash = self.chain.append(entry)
        token = None if ballot.token is None else ballot.token.message
        self.state.record(entry, entry_hash, ballot.device_id, ballot.device_seq, token, ballot.ballot_id)
        if opening is not None:
            self._spoiled[sender].take(SPOILED_BUDGET, now)
        return Accepted(entry, entry_hash, ballot, payload)

    def _kind(self, opening: BallotOpening | None) -> str:
        if opening is not None:
            return "spoiled"
        return "late" if self.state.polls == "closed" else "cast"

    def _check(self, ballot: SealedBallot, sender: str, opening: BallotOpening | None, now: float) -> None:
        if ballot.base_hash != self.manifest.base_hash:
            raise Refusal(Reason.WRONG_ELECTION, "the ballot is for another election (base hash)")
        if self.state.polls == "pending":
            raise Refusal(Reason.POLLS_NOT_OPEN, f"the polls are {self.state.polls}")
        if ballot.device_id != sender:
            raise Refusal(Reason.DEVICE_MISMATCH, f"ballot of {ballot.device_id} sent by {sender}")
        key = self.devices(ballot.device_id)
        if isinstance(key, str):
            reason, _, detail = key.partition(": ")
            raise Refusal(Reason(reason), detail or f"terminal {ballot.device_id}: {reason}")
        if not ballot.signature_valid(key):
            raise Refusal(Reason.BAD_SIGNATURE, "the device signature does not verify")
        last_seq, last_hash = self.state.device_head(ballot.device_id)
        if ballot.device_seq != last_seq + 1 or ballot.prev_hash != last_hash:
            raise Refusal(
                Reason.DEVICE_CHAIN,
                f"expected sequence {last_seq + 1} after the device's last ballot, "
                f"got {ballot.device_seq} (or a different previous hash)",
            )
        if ballot.ballot_id in self.state.ballot_ids:
            raise Refusal(Reason.DUPLICATE_BALLOT_ID, "a ballot with this ballot id is already in the chain")
        if opening is not None:
            self._check_spoiled(ballot, opening, sender, now)
            return
        if ballot.token is None:
            raise Refusal(Reason.NO_TOKEN, "a cast ballot needs a roll-signed token")
        if not tokens.verify(self.token_key, ballot.token.message, ballot.token.signature):
            raise Refusal(Reason.BAD_TOKEN, "the token is not signed by this station's roll")
        if ballot.token.message in self.state.used_tokens:
            raise Refusal(Reason.TOKEN_USED, "this token was already used for another ballot")
        self._check_proofs(ballot)

    def _check_spoiled(self, ballot: SealedBallot, opening: BallotOpening, sender: str, now: float) -> None:
        if ballot.token is not None:
            raise Refusal(Reason.TOKEN_ON_SPOILED, "a spoiled ballot must not carry the voter's token")
        if not self._spoiled.setdefault(sender, _Bucket(SPOILED_BUDGET.burst, now)).has(SPOILED_BUDGET, now):
            raise Refusal(Reason.TOO_MANY_SPOILED, "this terminal challenged too many ballots in a short time")
        self._check_proofs(ballot)
        failures = (
            list(self._verdict.opening_failures)
            if self._verdict is not None
            else opening.opening_failures(ballot, self.manifest, self.joint_key)
        )
        if failures:
            raise Refusal(Reason.BAD_OPENING, "the opening does not reproduce the ballot: " + ", ".join(failures))

    def _check_proofs(self, ballot: SealedBallot) -> None:
        if self.check_proofs:
            failures = (
                list(self._verdict.proof_failures)
                if self._verdict is not None
                else ballot.proof_failures(self.manifest, self.joint_key)
            )
            if failures:
                raise Refusal(Reason.BAD_PROOF, "proofs do not verify: " + ", ".join(failures))


@dataclass(frozen=True, slots=True)
class ProofVerdict:
    """What the expensive, stateless checks of one payload found (empty: all verify)."""

    proof_failures: tuple[str, ...]
    opening_failures: tuple[str, ...]


class ProofChecker:
    """The proof and opening checks of a payload, picklable for a worker process: the ledger
    runs them for a whole batch on every core, then decides the batch in order, alone."""

    def __init__(self, manifest: Manifest, joint_key: Point) -> None:
        self.manifest, self.joint_key = manifest, joint_key

    def __getstate__(self) -> dict[str, object]:
        return {"manifest": self.manifest.to_json(), "joint_key": self.joint_key}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.manifest = Manifest.from_json(state["manifest"])
        self.joint_key = state["joint_key"]  # type: ignore[assignment]

    def __call__(self, payload: bytes) -> ProofVerdict | None:
        """None when the payload does not even parse (the ledger refuses it as malformed)."""
        try:
            submission = BallotSubmission.decode(payload, self.manifest)
        except Refusal:
            return None
        ballot, opening = submission.ballot, submission.opening
        return ProofVerdict(
            tuple(ballot.proof_failures(self.manifest, self.joint_key)),
            () if opening is None else tuple(opening.opening_failures(ballot, self.manifest, self.joint_key)),
        )
