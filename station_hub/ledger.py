"""The ledger's decision logic, free of I/O: which sealed ballot the ledger holds, when its pool
becomes the next batch of the chain, and why a ballot is refused.

Record format 2 (docs/design-record-v2.md §2–§4). An accepted ballot goes into the **pool**, a
set keyed by ballot hash with no position and no time, and the booth is acknowledged at once
(``held``). When the pool holds at least the manifest's ``batch_min`` ballots (cast and spoiled
together) the whole pool becomes the next **batch**: sorted by ballot hash, appended to the chain
in that order, so a position says which batch a ballot fell in and nothing about when it came.
The final close commits the pool whatever its size (the closing report's ``closed_position`` is
the end of that batch). After it, late ballots are committed when the pool reaches
``batch_min`` or when no ballot arrived for :data:`LATE_QUIET` seconds, so a late booth's burst
forms one sorted batch.

:class:`LedgerCore` holds a mirror of the durable state and takes the time as input. The service
shell persists what the core decided (the pool's new ballots, a batch) before it sends any
acknowledgement; if a commit fails the process stops and restarts from the database, so the
mirror can never run ahead of the disk.

Checks, in this order (the first failure is the reason sent back):
``too_large``/``malformed`` (schema, encoding, every group element; the statement names the
ballot's device and election) → ``wrong_election`` → ``polls_not_open`` (only before the polls
open) → ``device_mismatch`` (ballot's device id vs. the sender's certificate) →
``unknown_device``/``revoked_device`` → ``bad_signature`` → ``bad_statement`` (the device
statement does not verify, or contradicts the held one of the same count) →
``duplicate_ballot_id`` (a ballot id is held once, whatever else differs) →
``no_token``/``bad_token``/``token_used`` → ``bad_proof``.

**Device statements** (§3): every submission carries the statement its terminal signed when it
sealed that ballot. The ledger keeps only the one with the largest ``sealed`` per terminal:
an intermediate statement, compared with the next, would name the ballot sealed between them.

Bounds, so that one certificate cannot make the hub work without end: a terminal whose
messages keep being refused is answered ``rate_limited`` (no parsing, no signature or proof
check) until its budget refills; a terminal may hold only a few spoiled ballots in a burst
(``too_many_spoiled``), which no voter challenging a ballot and voting again ever reaches.

A *spoiled* (challenged) ballot is checked like a cast ballot except that its token must be
null (``token_on_spoiled``: a public opening next to the voter's token would link the voter to
their cast ballot) and its opening must reproduce every ciphertext (``bad_opening``); it joins
the same pool as kind ``spoiled``. Closing (docs/ledger.md, "Closing the polls"): the polls go
``open`` → ``closing`` → ``closed``. At ``closing`` the roll stops issuing tokens, so every valid
unspent token from then on was issued before the close: the ledger keeps holding such ballots
as ``cast``. After the final close a cast ballot with a valid unspent token (a booth that was
offline, say) is held as ``late``: never refused, never silently counted.

A ballot already held (in the pool or the chain) is not checked again: it gets its held
acknowledgement again (idempotent resend), even after the polls closed — but only when it
comes from the terminal that sealed it; from any other terminal it is ``device_mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election import tokens
from election.ballot import Token
from election.chain import ChainEntry, ChainHead, ChainState, PoolBallot
from election.devices import DeviceStatement, set_commitment
from election.encoding import canonical_bytes, sha256
from election.errors import SignatureError
from election.group import Point
from election.manifest import Manifest
from protocol.errors import Reason, Refusal
from protocol.messages import AckHeld, AckRefused, BallotSubmission

POLLS_STATES = ("pending", "open", "closing", "closed")
LATE_QUIET = 3.0
"""Seconds without a ballot after which the pool of late ballots is committed, however small."""
EMPTY_COMMITMENT = set_commitment([])
"""What the closing report says of a terminal none of whose statements arrived."""

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
"""Spoiled ballots a terminal may hold in a burst, then one every 30 s."""


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


class HeldBallot(Protocol):
    """What the ledger and its store need of a held ballot (a :class:`SealedBallot` has it too)."""

    @property
    def ballot_hash(self) -> bytes: ...
    @property
    def ballot_id(self) -> bytes: ...
    @property
    def device_id(self) -> str: ...
    @property
    def token(self) -> Token | None: ...


@dataclass(frozen=True, slots=True)
class BallotFacts:
    """The identifying fields of a parsed, held ballot: what crosses back from a check worker
    instead of the whole sealed ballot (its ciphertexts and proofs are in ``Held.stored``)."""

    ballot_hash: bytes
    ballot_id: bytes
    device_id: str
    token: Token | None


@dataclass(frozen=True, slots=True)
class Held:
    """A ballot for the pool; acknowledge only after it is durable.

    ``stored`` is what the store keeps of it: the sealed ballot's canonical bytes, or for a
    spoiled one ``{"ballot", "opening"}`` (the opening is public); never the statement.
    ``statement`` is the device's new latest statement, None when the one held is as recent.
    """

    ballot: HeldBallot
    kind: str
    stored: bytes
    statement: DeviceStatement | None
    ack_bytes: bytes | None = None
    """The encoded acknowledgement, when a check worker already made it."""

    def ack(self) -> AckHeld:
        return AckHeld(self.ballot.ballot_hash)

    def encoded_ack(self) -> bytes:
        return self.ack_bytes if self.ack_bytes is not None else self.ack().encode()


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The ballot is already held (pool or chain): answer with the same acknowledgement."""

    ballot_hash: bytes

    def ack(self) -> AckHeld:
        return AckHeld(self.ballot_hash)

    def encoded_ack(self) -> bytes:
        return self.ack().encode()


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Reason
    detail: str
    payload_hash: bytes

    def ack(self) -> AckRefused:
        return AckRefused(self.payload_hash, self.reason, self.detail)

    def encoded_ack(self) -> bytes:
        return self.ack().encode()


Decision = Held | Duplicate | Refused


@dataclass(frozen=True, slots=True)
class DeviceHead:
    """What the closing report says of a terminal declared unreachable: its latest statement's
    count and set commitment when the polls closed (0 and the empty set's when none arrived)."""

    sealed: int
    commitment: bytes

    def to_json(self) -> dict[str, int | str]:
        return {"sealed": self.sealed, "commitment": self.commitment.hex()}


@dataclass
class LedgerState:
    """What the ledger remembers; loaded from the database at start."""

    head: ChainHead
    polls: str = "pending"
    used_tokens: set[bytes] = field(default_factory=set)
    ballot_ids: set[bytes] = field(default_factory=set)
    held: dict[bytes, str] = field(default_factory=dict)
    """Ballot hash → the device that sealed it, for every ballot in the pool or the chain."""
    pool: dict[bytes, PoolBallot] = field(default_factory=dict)
    """The ballots held and not yet chained, by ballot hash (a set: no order)."""
    statements: dict[str, DeviceStatement] = field(default_factory=dict)
    """Each terminal's statement with the largest ``sealed`` received so far."""
    per_device: dict[str, int] = field(default_factory=dict)
    """Chained cast ballots per terminal (what the closing report sets against the check-ins)."""
    spoiled: int = 0
    late_per_device: dict[str, int] = field(default_factory=dict)
    """Chained ballots that arrived after the final close (``late``), per terminal."""
    closed_position: int | None = None
    """The chain position at the final close: the end of the batch the close committed."""
    unreachable: dict[str, DeviceHead] = field(default_factory=dict)
    """Terminals declared unreachable at the final close → their latest statement then."""

    def hold(self, ballot_hash: bytes, kind: str, device_id: str, token: bytes | None, ballot_id: bytes) -> None:
        """Remember one ballot as held (on acceptance, and when the store reads the pool back)."""
        self.held[ballot_hash] = device_id
        if token is not None:
            self.used_tokens.add(token)
        self.ballot_ids.add(ballot_id)
        self.pool[ballot_hash] = PoolBallot(ballot_hash, kind)

    def chained(self, entry: ChainEntry, entry_hash: bytes, device_id: str) -> None:
        """Remember one entry as chained: out of the pool, into the counts and the head."""
        self.pool.pop(entry.ballot_hash, None)
        self.head = ChainHead(entry.position, entry_hash, entry.batch)
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

    def device_head(self, device_id: str) -> DeviceHead:
        statement = self.statements.get(device_id)
        if statement is None:
            return DeviceHead(0, EMPTY_COMMITMENT)
        return DeviceHead(statement.sealed, statement.commitment)


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One entry of a batch with what the store and the counts need of it."""

    entry: ChainEntry
    entry_hash: bytes
    device_id: str


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A payload refused before it is a ballot (``too_large``, ``malformed``)."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Examined:
    """What the checks that depend on nothing but the payload and the sender's key found: made
    by :class:`Examiner`, in a worker process or here. The core judges it in the order of the
    module docstring, so a failed check here refuses only when no earlier rule did.

    Signature, statement, token, proofs and opening are checked only as far as they can decide
    (a check after one that failed is reported as failed too, unread: the earlier one refuses)."""

    ballot: BallotFacts
    base_hash: bytes
    spoiled: bool
    stored: bytes
    """What the store keeps (see :class:`Held`)."""
    statement: DeviceStatement
    signature_ok: bool
    """The device signature verifies under the sender's key (False when there is no key)."""
    statement_ok: bool
    token_ok: bool
    """The roll's signature on the token verifies (False when there is no token)."""
    proof_failures: tuple[str, ...]
    opening_failures: tuple[str, ...]
    ack: bytes
    """The held acknowledgement, encoded (the same for a resend)."""


Examination = Examined | Unparsed


class Examiner:
    """The stateless checks of one payload: parse (schema, encoding, every group element), ballot
    hash, device signature and statement signature under the sender's key, the roll's signature
    on the token, and (``check_proofs``) the zero-knowledge proofs and a spoiled ballot's
    opening. Picklable, so that they run on every core; the ledger then decides each payload
    alone, in order, from what was found here and its own state (:meth:`LedgerCore.decide`)."""

    def __init__(self, manifest: Manifest, joint_key: Point, token_key: rsa.RSAPublicKey, check_proofs: bool) -> None:
        self.manifest, self.joint_key, self.token_key, self.check_proofs = manifest, joint_key, token_key, check_proofs
        self.base_hash = manifest.base_hash
        self._keys: dict[bytes, Ed25519PublicKey] = {}

    def __getstate__(self) -> dict[str, object]:
        der = self.token_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"manifest": self.manifest.to_json(), "joint_key": self.joint_key, "token_key": der,
                "check_proofs": self.check_proofs}  # fmt: skip

    def __setstate__(self, state: dict[str, object]) -> None:
        token_key = serialization.load_der_public_key(state["token_key"])  # type: ignore[arg-type]
        assert isinstance(token_key, rsa.RSAPublicKey)
        self.__init__(Manifest.from_json(state["manifest"]), state["joint_key"], token_key,  # type: ignore[misc]
                      bool(state["check_proofs"]))  # type: ignore[arg-type]  # fmt: skip

    def examine_raw(self, payload: bytes, key: bytes | None) -> Examination:
        """:meth:`examine` with the sender's key as its 32 raw bytes (what crosses to a worker)."""
        if key is None:
            return self.examine(payload, None)
        public = self._keys.get(key)
        if public is None:
            public = self._keys[key] = Ed25519PublicKey.from_public_bytes(key)
        return self.examine(payload, public)

    def examine(self, payload: bytes, key: Ed25519PublicKey | None) -> Examination:
        try:
            submission = BallotSubmission.decode(payload, self.manifest)
        except Refusal as refusal:
            return Unparsed(Reason(refusal.reason), refusal.detail)
        ballot, opening, statement = submission.ballot, submission.opening, submission.statement
        ballot_bytes = ballot.encoded()  # its hash is the ballot hash (SealedBallot.ballot_hash)
        if opening is None:
            stored = ballot_bytes
        else:
            stored = canonical_bytes({"ballot": ballot.to_json(), "opening": opening.to_json(self.manifest)})
        facts = BallotFacts(sha256(ballot_bytes), ballot.ballot_id, ballot.device_id, ballot.token)
        signature_ok = statement_ok = token_ok = False
        proof_failures: tuple[str, ...] = ()
        opening_failures: tuple[str, ...] = ()
        if key is not None and ballot.base_hash == self.base_hash:
            signature_ok = ballot.signature_valid(key)
        if signature_ok:
            try:
                statement.verify(key)  # type: ignore[arg-type]
                statement_ok = True
            except SignatureError:
                pass
        if statement_ok and opening is None and ballot.token is not None:
            token_ok = tokens.verify(self.token_key, ballot.token.message, ballot.token.signature)
        if token_ok or (statement_ok and opening is not None and ballot.token is None):
            if self.check_proofs:
                proof_failures = tuple(ballot.proof_failures(self.manifest, self.joint_key))
            if opening is not None and not proof_failures:
                opening_failures = tuple(opening.opening_failures(ballot, self.manifest, self.joint_key))
        return Examined(facts, ballot.base_hash, opening is not None, stored, statement, signature_ok, statement_ok,
                        token_ok, proof_failures, opening_failures, AckHeld(facts.ballot_hash).encode())  # fmt: skip


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
        self.base_hash = manifest.base_hash
        self.joint_key = joint_key
        self.devices = devices
        self.token_key = token_key
        self.state = state
        self.genesis = genesis
        self.check_proofs = check_proofs
        self.examiner = Examiner(manifest, joint_key, token_key, check_proofs)
        self._refusals: dict[str, _Bucket] = {}
        self._spoiled: dict[str, _Bucket] = {}
        self._quiet_since: float | None = None
        """When the last ballot joined the pool (or the core first looked at a restored pool)."""

    def rate_limited(self, sender: str, now: float) -> bool:
        """Whether ``sender``'s next message is answered ``rate_limited`` (and not even parsed)."""
        bucket = self._refusals.get(sender)
        return bucket is not None and not bucket.has(REFUSAL_BUDGET, now)

    def decide(
        self,
        payload: bytes,
        sender: str,
        now: float = 0.0,
        *,
        examined: Examination | None = None,
        device: Ed25519PublicKey | str | None = None,
    ) -> Decision:
        """Judge one payload from terminal ``sender`` at monotonic time ``now``; a held ballot
        joins the mirror's pool. ``examined``: what :class:`Examiner` found of the payload (in a
        worker process) with ``device``, the sender's lookup it was given; without them both
        are made here. The decision is the same either way."""
        refusals = self._refusals.setdefault(sender, _Bucket(REFUSAL_BUDGET.burst, now))
        if not refusals.has(REFUSAL_BUDGET, now):
            return Refused(Reason.RATE_LIMITED, "too many refused messages from this terminal; wait", sha256(payload))
        if examined is None or device is None:
            device = self.devices(sender)
            examined = self.examiner.examine(payload, None if isinstance(device, str) else device)
        try:
            if isinstance(examined, Unparsed):
                raise Refusal(examined.reason, examined.detail)
            ballot = examined.ballot
            holder = self.state.held.get(ballot.ballot_hash)
            if holder is not None:
                if holder != sender:
                    raise Refusal(Reason.DEVICE_MISMATCH, f"a ballot of {holder} sent by {sender}")
                return Duplicate(ballot.ballot_hash)
            self._check(examined, device, sender, now)
        except Refusal as refusal:
            refusals.take(REFUSAL_BUDGET, now)
            return Refused(Reason(refusal.reason), refusal.detail, sha256(payload))
        kind = "spoiled" if examined.spoiled else "late" if self.state.polls == "closed" else "cast"
        token = None if ballot.token is None else ballot.token.message
        self.state.hold(ballot.ballot_hash, kind, ballot.device_id, token, ballot.ballot_id)
        statement = self._newer(examined.statement)
        if statement is not None:
            self.state.statements[statement.device_id] = statement
        if examined.spoiled:
            self._spoiled[sender].take(SPOILED_BUDGET, now)
        self._quiet_since = now
        return Held(ballot, kind, examined.stored, statement, examined.ack)

    def batch_due(self, now: float) -> bool:
        """Whether the pool is to be committed now: it holds ``batch_min`` ballots, or — after
        the final close only — it holds any and no ballot arrived for :data:`LATE_QUIET` s."""
        if not self.state.pool:
            return False
        if len(self.state.pool) >= self.manifest.batch_min:
            return True
        if self.state.polls != "closed":
            return False
        if self._quiet_since is None:
            self._quiet_since = now
        return now - self._quiet_since >= LATE_QUIET

    def take_batch(self) -> list[BatchEntry]:
        """The whole pool as the next batch of the chain, sorted by ballot hash (empty for an
        empty pool); the mirror moves to its end. The caller commits it in one transaction."""
        entries = ChainState(self.genesis, self.state.head).next_batch(self.state.pool.values())
        # next_batch linked each entry to the hash of the one before: hash each entry once
        hashes = [entry.prev_hash for entry in entries[1:]] + [entries[-1].entry_hash] if entries else []
        batch = []
        for entry, entry_hash in zip(entries, hashes, strict=True):
            batch.append(BatchEntry(entry, entry_hash, self.state.held[entry.ballot_hash]))
            self.state.chained(entry, entry_hash, self.state.held[entry.ballot_hash])
        return batch

    def close_final(self, unreachable: list[str]) -> list[BatchEntry]:
        """The final close: the pool becomes the last batch of the polls, whatever its size;
        ``closed_position`` is its end; each terminal declared ``unreachable`` is reported with
        its latest statement. Returns the batch, to commit with the new state in one transaction."""
        batch = self.take_batch()
        state = self.state
        state.polls, state.closed_position = "closed", state.head.position
        state.unreachable = {name: state.device_head(name) for name in unreachable}
        return batch

    def _newer(self, statement: DeviceStatement) -> DeviceStatement | None:
        held = self.state.statements.get(statement.device_id)
        return statement if held is None or statement.sealed > held.sealed else None

    def _check(self, examined: Examined, device: Ed25519PublicKey | str, sender: str, now: float) -> None:
        ballot = examined.ballot
        if examined.base_hash != self.base_hash:
            raise Refusal(Reason.WRONG_ELECTION, "the ballot is for another election (base hash)")
        if self.state.polls == "pending":
            raise Refusal(Reason.POLLS_NOT_OPEN, f"the polls are {self.state.polls}")
        if ballot.device_id != sender:
            raise Refusal(Reason.DEVICE_MISMATCH, f"ballot of {ballot.device_id} sent by {sender}")
        if isinstance(device, str):
            reason, _, detail = device.partition(": ")
            raise Refusal(Reason(reason), detail or f"terminal {ballot.device_id}: {reason}")
        if not examined.signature_ok:
            raise Refusal(Reason.BAD_SIGNATURE, "the device signature does not verify")
        self._check_statement(examined)
        if ballot.ballot_id in self.state.ballot_ids:
            raise Refusal(Reason.DUPLICATE_BALLOT_ID, "a ballot with this ballot id is already held")
        if examined.spoiled:
            self._check_spoiled(examined, sender, now)
            return
        if ballot.token is None:
            raise Refusal(Reason.NO_TOKEN, "a cast ballot needs a roll-signed token")
        if not examined.token_ok:
            raise Refusal(Reason.BAD_TOKEN, "the token is not signed by this station's roll")
        if ballot.token.message in self.state.used_tokens:
            raise Refusal(Reason.TOKEN_USED, "this token was already used for another ballot")
        self._check_proofs(examined)

    def _check_statement(self, examined: Examined) -> None:
        """The statement is the device's (the decoder matched its id and election), signed by
        its key, and — where the ledger holds one of the same count — that very statement: a
        terminal that signs two different sets of the same size is broken or forged."""
        statement = examined.statement
        if not examined.statement_ok:
            raise Refusal(Reason.BAD_STATEMENT, "the device statement does not verify under the device's key")
        held = self.state.statements.get(statement.device_id)
        if held is not None and held.sealed == statement.sealed and held != statement:
            raise Refusal(Reason.BAD_STATEMENT, f"the device signed another set of {statement.sealed} ballots")

    def _check_spoiled(self, examined: Examined, sender: str, now: float) -> None:
        if examined.ballot.token is not None:
            raise Refusal(Reason.TOKEN_ON_SPOILED, "a spoiled ballot must not carry the voter's token")
        if not self._spoiled.setdefault(sender, _Bucket(SPOILED_BUDGET.burst, now)).has(SPOILED_BUDGET, now):
            raise Refusal(Reason.TOO_MANY_SPOILED, "this terminal challenged too many ballots in a short time")
        self._check_proofs(examined)
        if examined.opening_failures:
            failures = ", ".join(examined.opening_failures)
            raise Refusal(Reason.BAD_OPENING, "the opening does not reproduce the ballot: " + failures)

    def _check_proofs(self, examined: Examined) -> None:
        if self.check_proofs and examined.proof_failures:
            raise Refusal(Reason.BAD_PROOF, "proofs do not verify: " + ", ".join(examined.proof_failures))
