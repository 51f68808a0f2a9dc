"""A terminal's side of the hub protocol, for demo/training terminals, tests and benchmarks.

Check in a voter (blind a fresh token, get the roll's challenge, have the voter's card sign the
binding, ask the roll, unblind), seal a ballot with the device statement over every ballot the
terminal sealed so far (docs/design-record-v2.md §3), submit it and wait for the ledger's
acknowledgement. The booth appliance's durable outbox wraps the same steps.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from election import tokens
from election.ballot import BallotOpening, DeviceSigner, SealedBallot, Token, seal_ballot
from election.devices import DeviceStatement
from election.encoding import canonical_bytes, parse_json, sha256
from election.errors import FormatError
from infra.errors import SiteError
from infra.mqtt import HubClient
from protocol.messages import (
    BallotSubmission,
    CheckinChallenge,
    CheckinChallengeRequest,
    CheckinGranted,
    CheckinRequest,
    checkin_binding,
    decode_checkin_reply,
    offline_status,
)
from station_hub.station import Station


class CheckinRefused(SiteError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"check-in refused: {reason} ({detail})")
        self.reason = reason


class VoterCard(Protocol):
    """A voter's card as the check-in needs it: its certificate, and a PKCS#1 v1.5 SHA-256
    signature by its key (a real card through the booth's reader, or a test card in software)."""

    @property
    def certificate_der(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class TerminalClient(HubClient):
    def __init__(self, station: Station, terminal_id: str, **files: Any) -> None:
        super().__init__(
            station,
            terminal_id,
            will=(station.topics.terminal_status(terminal_id), offline_status("terminal_status")),
            **files,
        )
        self.terminal_id = terminal_id
        self.election = station.election()
        self.token_key = station.token_public_key()
        self.modulus_length = (self.token_key.key_size + 7) // 8
        self.signer = DeviceSigner(terminal_id, station.signing_key(terminal_id))
        self.sealed: list[bytes] = []
        """The hashes of every ballot this terminal sealed (a set in meaning; kept to sign statements)."""
        self.statements: dict[bytes, DeviceStatement] = {}
        """Ballot hash → the statement made when it was sealed, which its submission carries."""

    def connect(self, timeout: float = 10.0) -> TerminalClient:
        super().connect(timeout)
        self.subscribe(self.topics.ack(self.terminal_id))
        self.subscribe(self.topics.checkin_reply(self.terminal_id))
        return self

    def challenge(self, timeout: float = 10.0) -> bytes:
        """A fresh challenge from the roll (raises CheckinRefused)."""
        reply = decode_checkin_reply(self.ask_roll(CheckinChallengeRequest().encode(), timeout), self.modulus_length)
        if not isinstance(reply, CheckinChallenge):
            if isinstance(reply, CheckinGranted):
                raise SiteError("the roll answered a challenge request with a grant")
            raise CheckinRefused(reply.reason.value, reply.detail)
        return reply.challenge

    def checkin_payload(self, card: VoterCard, blinded: bytes, challenge: bytes | None = None) -> bytes:
        """The signed check-in for ``blinded`` (asks the roll for a challenge unless given)."""
        challenge = self.challenge() if challenge is None else challenge
        binding = checkin_binding(self.topics.station, self.terminal_id, challenge, blinded)
        return CheckinRequest(challenge, blinded, card.certificate_der, card.sign(binding)).encode()

    def ask_roll(self, payload: bytes, timeout: float = 10.0) -> bytes:
        answer = self.request(
            self.topics.checkin(self.terminal_id),
            self.topics.checkin_reply(self.terminal_id),
            payload,
            timeout,
        )
        return answer.payload

    def check_in(self, card: VoterCard) -> Token:
        """Get a roll-signed token for the voter whose card this is (raises CheckinRefused)."""
        message = secrets.token_bytes(32)
        request = tokens.blind(self.token_key, message)
        reply = decode_checkin_reply(self.ask_roll(self.checkin_payload(card, request.blinded)), len(request.blinded))
        if not isinstance(reply, CheckinGranted):
            if isinstance(reply, CheckinChallenge):
                raise SiteError("the roll answered a check-in with a challenge")
            raise CheckinRefused(reply.reason.value, reply.detail)
        return Token(message, tokens.finalize(self.token_key, message, reply.blind_signature, request))

    def seal_with_opening(
        self, choices: dict[str, set[str]], token: Token | None
    ) -> tuple[SealedBallot, BallotOpening]:
        """Seal a ballot and sign the device statement that now includes it."""
        manifest = self.election.manifest
        ballot, opening = seal_ballot(manifest, self.election.context.joint_public_key, choices, self.signer, token)
        self.sealed.append(ballot.ballot_hash)
        self.statements[ballot.ballot_hash] = DeviceStatement.make(self.signer, manifest.base_hash, self.sealed)
        return ballot, opening

    def seal(self, choices: dict[str, set[str]], token: Token | None) -> SealedBallot:
        return self.seal_with_opening(choices, token)[0]

    def submission(self, ballot: SealedBallot, opening: BallotOpening | None = None) -> bytes:
        """The message that submits a ballot this terminal sealed (spoiled with its opening)."""
        statement = self.statements[ballot.ballot_hash]
        return BallotSubmission(ballot, opening, statement).encode(self.election.manifest)

    def submit(self, payload: bytes, timeout: float = 10.0) -> dict[str, Any]:
        """Publish a ballot payload and wait for the ledger's acknowledgement of it: a held ack
        names the sealed ballot's hash, a refusal the hash of the payload."""
        wanted = {sha256(payload).hex(), _ballot_hash_in(payload)}
        code = self.publish(self.topics.ballot(self.terminal_id), payload)
        if code not in (0, 16):
            raise SiteError(f"the broker refused the ballot (reason {code})")

        def ours(message: Any) -> bool:
            if message.topic != self.topics.ack(self.terminal_id):
                return False
            try:
                return parse_json(message.payload).get("ballot_hash") in wanted
            except (FormatError, AttributeError):
                return False

        return parse_json(self.next_message(timeout, ours).payload)


def _ballot_hash_in(payload: bytes) -> str | None:
    """The hash of the sealed ballot a submission carries, if it carries one at all."""
    try:
        ballot = parse_json(payload).get("ballot")
        return sha256(canonical_bytes(ballot)).hex() if isinstance(ballot, dict) else None
    except (FormatError, AttributeError, TypeError, ValueError):
        return None
