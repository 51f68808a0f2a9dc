"""The ledger's decision logic, free of I/O: which sealed ballot joins the chain, and why not.

:class:`LedgerCore` holds a mirror of the durable state (chain head, each device's last
sequence number and ballot hash, used tokens, the ballots already in the chain) and turns one
received payload into a decision. The service shell persists accepted entries durably and only
then sends the acknowledgements; if the commit fails the process stops and restarts from the
database, so the mirror can never run ahead of the disk.

Checks, in this order (the first failure is the reason sent back):
``too_large``/``malformed`` (schema, encoding, every group element) → ``wrong_election`` →
``polls_not_open`` → ``device_mismatch`` (ballot's device id vs. the sender's certificate) →
``unknown_device``/``revoked_device`` → ``bad_signature`` → ``device_chain`` (sequence and
previous hash) → ``no_token``/``bad_token``/``token_used`` → ``bad_proof``.

A *spoiled* (challenged) ballot arrives on the same topic as ``{"version": 1, "type":
"spoiled_ballot", "ballot": sealed ballot, "opening": its opening}``. It is checked like a cast
ballot except that its token must be null (``token_on_spoiled``: a public opening next to the
voter's token would link the voter to their cast ballot) and its opening must reproduce every
ciphertext (``bad_opening``); it joins the chain as kind ``spoiled`` and advances the device
chain like any sealed ballot. The chain's ``ballot_hash`` is always the sealed ballot's hash.
A ballot whose exact bytes are already in the chain is not checked again: it gets its original
acknowledgement (idempotent resend), even after the polls closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election import tokens
from election.ballot import GENESIS_HASH, BallotOpening, SealedBallot
from election.chain import ChainEntry, ChainHead, ChainState, tracking_code
from election.encoding import canonical_bytes, parse_json, sha256
from election.errors import FormatError
from election.group import Point
from election.manifest import Manifest
from station_hub.messages import MESSAGE_VERSION

MAX_BALLOT_BYTES = 256 * 1024
SPOILED_TYPE = "spoiled_ballot"
POLLS_STATES = ("pending", "open", "closed")

DeviceLookup = Callable[[str], Ed25519PublicKey | str]
"""Device id → its Ed25519 key, or the refusal reason (``unknown_device``/``revoked_device``)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new chain entry; acknowledge only after it is durable."""

    entry: ChainEntry
    entry_hash: bytes
    ballot: SealedBallot
    payload: bytes

    def ack(self) -> dict[str, Any]:
        return accepted_ack(self.entry, self.entry_hash)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The ballot is already in the chain: answer with its original acknowledgement."""

    entry: ChainEntry
    entry_hash: bytes

    def ack(self) -> dict[str, Any]:
        return accepted_ack(self.entry, self.entry_hash)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    detail: str
    payload_hash: bytes

    def ack(self) -> dict[str, Any]:
        return {
            "version": MESSAGE_VERSION,
            "type": "ack",
            "result": "refused",
            "ballot_hash": self.payload_hash.hex(),
            "reason": self.reason,
            "detail": self.detail,
        }


Decision = Accepted | Duplicate | Refused


def accepted_ack(entry: ChainEntry, entry_hash: bytes) -> dict[str, Any]:
    return {
        "version": MESSAGE_VERSION,
        "type": "ack",
        "result": "accepted",
        "ballot_hash": entry.ballot_hash.hex(),
        "position": entry.position,
        "entry_hash": entry_hash.hex(),
        "tracking_code": tracking_code(entry_hash),
    }


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class LedgerState:
    """What the ledger remembers; loaded from the database at start."""

    head: ChainHead
    polls: str = "pending"
    device_heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    used_tokens: set[bytes] = field(default_factory=set)
    entries_by_ballot: dict[bytes, tuple[ChainEntry, bytes]] = field(default_factory=dict)
    per_device: dict[str, int] = field(default_factory=dict)
    """Cast ballots per terminal (what the closing report sets against the roll's check-ins)."""
    spoiled: int = 0

    def record(
        self, entry: ChainEntry, entry_hash: bytes, device_id: str, device_seq: int, token: bytes | None
    ) -> None:
        """Remember one chained entry (on acceptance, and when the store replays the chain)."""
        self.head = ChainHead(entry.position, entry_hash)
        self.device_heads[device_id] = (device_seq, entry.ballot_hash)
        if token is not None:
            self.used_tokens.add(token)
        self.entries_by_ballot[entry.ballot_hash] = (entry, entry_hash)
        if entry.kind == "cast":
            self.per_device[device_id] = self.per_device.get(device_id, 0) + 1
        else:
            self.spoiled += 1


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

    def decide(self, payload: bytes, sender: str) -> Decision:
        """Judge one payload from terminal ``sender``; an acceptance updates the mirror."""
        payload_hash = sha256(payload)
        try:
            ballot, opening = self._parse(payload)
            ballot_hash = ballot.ballot_hash
            known = self.state.entries_by_ballot.get(ballot_hash)
            if known:
                return Duplicate(*known)
            self._check(ballot, sender, opening)
        except _Refusal as refusal:
            return Refused(refusal.reason, refusal.detail, payload_hash)
        entry = self.chain.next_entry(ballot_hash, "cast" if opening is None else "spoiled")
        entry_hash = self.chain.append(entry)
        token = None if ballot.token is None else ballot.token.message
        self.state.record(entry, entry_hash, ballot.device_id, ballot.device_seq, token)
        return Accepted(entry, entry_hash, ballot, payload)

    def _parse(self, payload: bytes) -> tuple[SealedBallot, BallotOpening | None]:
        """A cast ballot (opening None) or a spoiled ballot with its opening."""
        if len(payload) > MAX_BALLOT_BYTES:
            raise _Refusal("too_large", f"{len(payload)} bytes, the limit is {MAX_BALLOT_BYTES}")
        try:
            data = parse_json(payload)
            if canonical_bytes(data) != payload:
                raise FormatError("the payload is not in canonical JSON form")
            if not (isinstance(data, dict) and data.get("type") == SPOILED_TYPE):
                return SealedBallot.from_json(data, self.manifest), None
            if set(data) != {"version", "type", "ballot", "opening"} or data["version"] != MESSAGE_VERSION:
                raise FormatError("spoiled ballot: expected version 1 with type, ballot and opening")
            ballot = SealedBallot.from_json(data["ballot"], self.manifest)
            return ballot, BallotOpening.from_json(data["opening"], self.manifest)
        except FormatError as error:
            raise _Refusal("malformed", str(error)) from None

    def _check(self, ballot: SealedBallot, sender: str, opening: BallotOpening | None) -> None:
        if ballot.base_hash != self.manifest.base_hash:
            raise _Refusal("wrong_election", "the ballot is for another election (base hash)")
        if self.state.polls != "open":
            raise _Refusal("polls_not_open", f"the polls are {self.state.polls}")
        if ballot.device_id != sender:
            raise _Refusal("device_mismatch", f"ballot of {ballot.device_id} sent by {sender}")
        key = self.devices(ballot.device_id)
        if isinstance(key, str):
            reason, _, detail = key.partition(": ")
            raise _Refusal(reason, detail or f"terminal {ballot.device_id}: {reason}")
        if not ballot.signature_valid(key):
            raise _Refusal("bad_signature", "the device signature does not verify")
        last_seq, last_hash = self.state.device_heads.get(ballot.device_id, (0, GENESIS_HASH))
        if ballot.device_seq != last_seq + 1 or ballot.prev_hash != last_hash:
            raise _Refusal(
                "device_chain",
                f"expected sequence {last_seq + 1} after the device's last ballot, "
                f"got {ballot.device_seq} (or a different previous hash)",
            )
        if opening is not None:
            self._check_spoiled(ballot, opening)
            return
        if ballot.token is None:
            raise _Refusal("no_token", "a cast ballot needs a roll-signed token")
        if not tokens.verify(self.token_key, ballot.token.message, ballot.token.signature):
            raise _Refusal("bad_token", "the token is not signed by this station's roll")
        if ballot.token.message in self.state.used_tokens:
            raise _Refusal("token_used", "this token was already used for another ballot")
        self._check_proofs(ballot)

    def _check_spoiled(self, ballot: SealedBallot, opening: BallotOpening) -> None:
        if ballot.token is not None:
            raise _Refusal("token_on_spoiled", "a spoiled ballot must not carry the voter's token")
        self._check_proofs(ballot)
        failures = opening.opening_failures(ballot, self.manifest, self.joint_key)
        if failures:
            raise _Refusal("bad_opening", "the opening does not reproduce the ballot: " + ", ".join(failures))

    def _check_proofs(self, ballot: SealedBallot) -> None:
        if self.check_proofs:
            failures = ballot.proof_failures(self.manifest, self.joint_key)
            if failures:
                raise _Refusal("bad_proof", "proofs do not verify: " + ", ".join(failures))
