"""Every message between a booth and its station hub, defined once: a frozen value per message,
one strict decoder (``decode``) and one encoder (``encode``) each. Formats: docs/ledger.md and
the JSON Schemas in docs/schemas/.

Decoders are total: any byte string gives the value or a :class:`protocol.errors.Refusal`.
Everything a hub signs, hashes or stores arrives in canonical JSON (docs/formats.md §1);
integers are bounded and never booleans, hex fields have their exact length, enums are closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from election.ballot import BallotOpening, SealedBallot
from election.chain import tracking_code
from election.devices import DeviceStatement
from election.encoding import (
    HASH_SIZE,
    canonical_bytes,
    check_version,
    encode_checked,
    hex_bytes,
    parse_json,
    strict_int,
)
from election.errors import FormatError
from election.ids import check_device_id
from election.manifest import Manifest
from protocol.errors import CheckinReason, PollsReason, Reason, Refusal

MESSAGE_VERSION = 1
BALLOT_MESSAGE_VERSION = 2
"""Ballot submissions and their acks changed with record format 2 (device statements instead of
device order; a held ack instead of a chain position); every other message is still version 1."""
MAX_BALLOT_BYTES = 256 * 1024
"""A cast ballot, or a spoiled ballot with its opening (the station broker allows twice this)."""
MAX_SMALL_MESSAGE_BYTES = 64 * 1024
"""Every other booth↔hub message: acks, check-ins, statuses, reports, commands."""
MAX_COUNT = 2**40
"""Bound of every count and position in a status or report (far beyond any station)."""
MAX_DETAIL = 500
SPOILED_TYPE = "spoiled_ballot"
POLLS_STATES = ("pending", "open", "closing", "closed")
"""``closing``: no new check-ins, ballots of tokens issued before still chained (docs/ledger.md)."""
PollsState = Literal["pending", "open", "closing", "closed"]
POLLS_COMMANDS = ("open", "close", "final")
"""``close`` starts closing (the roll stops issuing tokens); ``final`` ends it (docs/ledger.md)."""
MAX_UNREACHABLE = 1000


def _document(
    payload: bytes,
    kind: str,
    fields: set[str],
    *,
    max_size: int = MAX_SMALL_MESSAGE_BYTES,
    canonical: bool = True,
    version: int = MESSAGE_VERSION,
) -> dict[str, Any]:
    """The payload as a canonical JSON object of exactly ``fields``, this version and ``type`` kind."""
    try:
        data = parse_json(payload, max_size=max_size, canonical=canonical)
    except FormatError as error:
        raise Refusal(Reason.MALFORMED, f"{kind}: {error}") from None
    if not isinstance(data, dict) or set(data) != fields:
        raise Refusal(Reason.MALFORMED, f"{kind}: expected exactly the fields {sorted(fields)}")
    if type(data["version"]) is not int or data["version"] != version or data["type"] != kind:
        raise Refusal(Reason.MALFORMED, f"{kind}: expected version {version} and type {kind!r}")
    return data


def _field(check: Any, *args: Any, **options: Any) -> Any:
    try:
        return check(*args, **options)
    except FormatError as error:
        raise Refusal(Reason.MALFORMED, str(error)) from None


def _count(value: Any, what: str, *, minimum: int = 0) -> int:
    return _field(strict_int, value, what, minimum=minimum, maximum=MAX_COUNT)


def _text(value: Any, what: str, limit: int = MAX_DETAIL) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Refusal(Reason.MALFORMED, f"{what}: expected a string of at most {limit} characters")
    return value


def _choice(value: Any, what: str, choices: tuple[str, ...]) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise Refusal(Reason.MALFORMED, f"{what}: expected one of {', '.join(choices)}")
    return value


def _flag(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise Refusal(Reason.MALFORMED, f"{what}: expected true or false")
    return value


# --- ballots (booth → ledger) --------------------------------------------------------------

CAST_TYPE = "cast_ballot"
_SUBMISSION_FIELDS = {
    CAST_TYPE: {"version", "type", "ballot", "statement"},
    SPOILED_TYPE: {"version", "type", "ballot", "opening", "statement"},
}


@dataclass(frozen=True, slots=True)
class BallotSubmission:
    """A cast ballot (``opening`` None) or a challenged, spoiled ballot with its opening, each
    with the device statement the booth signed when it sealed that ballot (the statement's set
    includes the ballot): docs/design-record-v2.md §3."""

    ballot: SealedBallot
    opening: BallotOpening | None
    statement: DeviceStatement

    def encode(self, manifest: Manifest) -> bytes:
        if self.opening is not None and self.ballot.token is not None:
            raise ValueError("a spoiled ballot must not carry the voter's token")
        document: dict[str, Any] = {
            "version": BALLOT_MESSAGE_VERSION,
            "type": CAST_TYPE if self.opening is None else SPOILED_TYPE,
            "ballot": self.ballot.to_json(),
            "statement": self.statement.to_json(),
        }
        if self.opening is not None:
            document["opening"] = self.opening.to_json(manifest)
        return canonical_bytes(document)

    @classmethod
    def decode(cls, payload: bytes, manifest: Manifest) -> BallotSubmission:
        if len(payload) > MAX_BALLOT_BYTES:
            raise Refusal(Reason.TOO_LARGE, f"{len(payload)} bytes, the limit is {MAX_BALLOT_BYTES}")
        try:
            data = parse_json(payload, max_size=MAX_BALLOT_BYTES, canonical=True)
            kind = data.get("type") if isinstance(data, dict) else None
            fields = _SUBMISSION_FIELDS.get(kind) if type(kind) is str else None
            if fields is None:
                raise FormatError(f"ballot submission: type must be {CAST_TYPE!r} or {SPOILED_TYPE!r}")
            if set(data) != fields:
                raise FormatError(f"{kind}: expected exactly the fields {sorted(fields)}")
            check_version(data, BALLOT_MESSAGE_VERSION, kind)
            ballot = SealedBallot.from_json(data["ballot"], manifest, encoded=_ballot_bytes(payload, data))
            opening = BallotOpening.from_json(data["opening"], manifest) if kind == SPOILED_TYPE else None
            statement = DeviceStatement.from_json(data["statement"])
            if statement.device_id != ballot.device_id or statement.base_hash != ballot.base_hash:
                raise FormatError(f"{kind}: the statement is not the sealing device's for this election")
            return cls(ballot, opening, statement)
        except Refusal:
            raise
        except FormatError as error:
            raise Refusal(Reason.MALFORMED, str(error)) from None

    @staticmethod
    def ballot_id_of(payload: bytes) -> str | None:
        """The ballot id a (possibly invalid) submission names, for the booth's own bookkeeping."""
        try:
            data = parse_json(payload, max_size=MAX_BALLOT_BYTES)
            return str(data["ballot"]["ballot_id"])
        except (FormatError, KeyError, TypeError, AttributeError):
            return None


def _ballot_bytes(payload: bytes, data: dict[str, Any]) -> bytes | None:
    """The sealed ballot's canonical bytes, cut from a canonical submission: its keys sort
    ``"ballot"`` first, so the ballot's value starts the document and the other members end
    it (None, to encode it again, if that were ever not so)."""
    others = sorted(name for name in data if name != "ballot")
    rest = b"".join(b',"' + name.encode() + b'":' + encode_checked(data[name]) for name in others)
    head = b'{"ballot":'
    if not (payload.startswith(head) and payload.endswith(rest + b"}")):
        return None
    return payload[len(head) : len(payload) - len(rest) - 1]


# --- acknowledgements (ledger → booth) -----------------------------------------------------

_ACK_HELD = {"version", "type", "result", "ballot_hash", "tracking_code"}
_ACK_REFUSED = {"version", "type", "result", "ballot_hash", "reason", "detail"}


@dataclass(frozen=True, slots=True)
class AckHeld:
    """The ballot is durably in the ledger's pool: the booth may forget it. No position: the
    ballot is chained later, in a hash-sorted batch (docs/design-record-v2.md §2). Not signed:
    only the ledger may write a terminal's ack topic, and the device statement, not the ack,
    guards against a hub that acknowledges and then drops a ballot."""

    ballot_hash: bytes

    @property
    def tracking_code(self) -> str:
        return tracking_code(self.ballot_hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": BALLOT_MESSAGE_VERSION,
            "type": "ack",
            "result": "held",
            "ballot_hash": self.ballot_hash.hex(),
            "tracking_code": self.tracking_code,
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())


@dataclass(frozen=True, slots=True)
class AckRefused:
    """The message was refused; ``ballot_hash`` is the SHA-256 of the refused payload's bytes."""

    ballot_hash: bytes
    reason: Reason
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": BALLOT_MESSAGE_VERSION,
            "type": "ack",
            "result": "refused",
            "ballot_hash": self.ballot_hash.hex(),
            "reason": self.reason.value,
            "detail": self.detail[:MAX_DETAIL],
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())


Ack = AckHeld | AckRefused


def decode_ack(payload: bytes) -> Ack:
    try:
        data = parse_json(payload, max_size=MAX_SMALL_MESSAGE_BYTES, canonical=True)
    except FormatError as error:
        raise Refusal(Reason.MALFORMED, f"ack: {error}") from None
    result = data.get("result") if isinstance(data, dict) else None
    if result == "held":
        data = _document(payload, "ack", _ACK_HELD, version=BALLOT_MESSAGE_VERSION)
        ack = AckHeld(_field(hex_bytes, data["ballot_hash"], HASH_SIZE, "ack.ballot_hash"))
        if data["tracking_code"] != ack.tracking_code:
            raise Refusal(Reason.MALFORMED, "ack.tracking_code: not the code of this ballot hash")
        return ack
    if result == "refused":
        data = _document(payload, "ack", _ACK_REFUSED, version=BALLOT_MESSAGE_VERSION)
        try:
            reason = Reason(data["reason"])
        except ValueError:
            raise Refusal(Reason.MALFORMED, "ack.reason: not a documented refusal reason") from None
        return AckRefused(
            _field(hex_bytes, data["ballot_hash"], HASH_SIZE, "ack.ballot_hash"),
            reason,
            _text(data["detail"], "ack.detail"),
        )
    raise Refusal(Reason.MALFORMED, "ack: result must be held or refused")


# --- check-in (booth ↔ roll) ---------------------------------------------------------------
#
# Two request/response rounds on the terminal's check-in topic (docs/ledger.md, "Check-in"):
# the terminal asks for a challenge (CheckinChallengeRequest → CheckinChallenge), has the card
# sign checkin_binding(station, terminal, challenge, blinded), and sends CheckinRequest with
# the card's certificate and signature. The roll answers CheckinGranted or CheckinRefused.

CHALLENGE_BYTES = 32
MAX_CARD_CERTIFICATE_BYTES = 8192
MIN_CARD_SIGNATURE_BYTES = 256
MAX_CARD_SIGNATURE_BYTES = 512
MAX_CHECKIN_BYTES = 40 * 1024
CHECKIN_BINDING_DOMAIN = b"polling-station/checkin-binding/v1"


def checkin_binding(station_id: str, terminal_id: str, challenge: bytes, blinded: bytes) -> bytes:
    """What the card signs (as DigestInfo(SHA-256(binding)), PKCS#1 v1.5): the roll's fresh
    challenge, the station and terminal, and the blinded token, each length-prefixed."""
    parts = (CHECKIN_BINDING_DOMAIN, station_id.encode(), terminal_id.encode(), challenge, blinded)
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


@dataclass(frozen=True, slots=True)
class CheckinChallengeRequest:
    """First round: "give me a challenge for my next check-in"."""

    def encode(self) -> bytes:
        return canonical_bytes({"version": MESSAGE_VERSION, "type": "checkin_challenge_request"})


@dataclass(frozen=True, slots=True)
class CheckinRequest:
    """Second round: the card's proof over the roll's challenge and the blinded token.

    No voter key: the roll derives it from ``certificate``, which it never stores or logs."""

    challenge: bytes
    blinded: bytes
    certificate: bytes
    signature: bytes

    def encode(self) -> bytes:
        return canonical_bytes(
            {
                "version": MESSAGE_VERSION,
                "type": "checkin",
                "challenge": self.challenge.hex(),
                "blinded": self.blinded.hex(),
                "certificate": self.certificate.hex(),
                "signature": self.signature.hex(),
            }
        )

    @classmethod
    def decode(cls, payload: bytes, modulus_length: int) -> CheckinRequest:
        """``modulus_length``: the roll key's size in bytes, the blinded value's exact length."""
        fields = {"version", "type", "challenge", "blinded", "certificate", "signature"}
        data = _document(payload, "checkin", fields, max_size=MAX_CHECKIN_BYTES)
        blinded = _field(hex_bytes, data["blinded"], modulus_length, "blinded")
        if not any(blinded):
            raise Refusal(CheckinReason.MALFORMED, "blinded: must not be zero")
        return cls(
            _field(hex_bytes, data["challenge"], CHALLENGE_BYTES, "challenge"),
            blinded,
            _variable_hex(data["certificate"], "certificate", 1, MAX_CARD_CERTIFICATE_BYTES),
            _variable_hex(data["signature"], "signature", MIN_CARD_SIGNATURE_BYTES, MAX_CARD_SIGNATURE_BYTES),
        )


CheckinMessage = CheckinChallengeRequest | CheckinRequest


def decode_checkin_message(payload: bytes, modulus_length: int) -> CheckinMessage:
    """Either round of a check-in, strictly (anything else: a ``malformed`` Refusal)."""
    try:
        data = parse_json(payload, max_size=MAX_CHECKIN_BYTES, canonical=True)
    except FormatError as error:
        raise Refusal(CheckinReason.MALFORMED, f"check-in: {error}") from None
    if isinstance(data, dict) and data.get("type") == "checkin_challenge_request":
        _document(payload, "checkin_challenge_request", {"version", "type"}, max_size=1024)
        return CheckinChallengeRequest()
    return CheckinRequest.decode(payload, modulus_length)


def _variable_hex(value: Any, what: str, minimum: int, maximum: int) -> bytes:
    raw = _field(hex_bytes, value, None, what) if isinstance(value, str) and len(value) <= 2 * maximum else None
    if raw is None or not minimum <= len(raw) <= maximum:
        raise Refusal(CheckinReason.MALFORMED, f"{what}: expected {minimum} to {maximum} bytes of lowercase hex")
    return raw


@dataclass(frozen=True, slots=True)
class CheckinChallenge:
    """The roll's fresh, single-use challenge (valid for ``expires_in`` seconds, this terminal only)."""

    challenge: bytes
    expires_in: int

    def encode(self) -> bytes:
        return canonical_bytes(
            {
                "version": MESSAGE_VERSION,
                "type": "checkin_reply",
                "result": "challenge",
                "challenge": self.challenge.hex(),
                "expires_in": self.expires_in,
            }
        )


@dataclass(frozen=True, slots=True)
class CheckinGranted:
    blind_signature: bytes

    def encode(self) -> bytes:
        return canonical_bytes(
            {
                "version": MESSAGE_VERSION,
                "type": "checkin_reply",
                "result": "granted",
                "blind_signature": self.blind_signature.hex(),
            }
        )


@dataclass(frozen=True, slots=True)
class CheckinRefused:
    reason: CheckinReason
    detail: str

    def encode(self) -> bytes:
        return canonical_bytes(
            {
                "version": MESSAGE_VERSION,
                "type": "checkin_reply",
                "result": "refused",
                "reason": self.reason.value,
                "detail": self.detail[:MAX_DETAIL],
            }
        )


CheckinReply = CheckinChallenge | CheckinGranted | CheckinRefused


def decode_checkin_reply(payload: bytes, modulus_length: int) -> CheckinReply:
    try:
        data = parse_json(payload, max_size=MAX_SMALL_MESSAGE_BYTES, canonical=True)
    except FormatError as error:
        raise Refusal(CheckinReason.MALFORMED, f"check-in reply: {error}") from None
    result = data.get("result") if isinstance(data, dict) else None
    if result == "challenge":
        data = _document(payload, "checkin_reply", {"version", "type", "result", "challenge", "expires_in"})
        return CheckinChallenge(
            _field(hex_bytes, data["challenge"], CHALLENGE_BYTES, "challenge"),
            _field(strict_int, data["expires_in"], "expires_in", minimum=1, maximum=3600),
        )
    if result == "granted":
        data = _document(payload, "checkin_reply", {"version", "type", "result", "blind_signature"})
        return CheckinGranted(_field(hex_bytes, data["blind_signature"], modulus_length, "blind_signature"))
    if result == "refused":
        data = _document(payload, "checkin_reply", {"version", "type", "result", "reason", "detail"})
        try:
            reason = CheckinReason(data["reason"])
        except ValueError:
            raise Refusal(CheckinReason.MALFORMED, "check-in reply: not a documented reason") from None
        return CheckinRefused(reason, _text(data["detail"], "check-in reply detail"))
    raise Refusal(CheckinReason.MALFORMED, "check-in reply: result must be challenge, granted or refused")


# --- polls command (operator → ledger, roll) -----------------------------------------------

POLLS_SIGNING_DOMAIN = b"polling-station/polls-command/v1\n"
"""Prefix of what each official's card signs: this, then the command's canonical body."""
OFFICIAL_FUNCTIONS = ("station_manager", "witness")
"""The two officials who sign every polls command (their cards' roles, infra/pki.py)."""
NONCE_BYTES = 32
MAX_OFFICIAL_CERTIFICATE = 4096
MAX_OFFICIAL_SIGNATURE = 512
MAX_TIME = 2**40


def polls_challenge_topic(topics: Any) -> str:
    """Retained: the ledger's current challenge for the next polls command."""
    return f"{topics.root}/ledger/polls/challenge"


def polls_result_topic(topics: Any) -> str:
    """The ledger's answer to each polls command: accepted, or refused with a reason."""
    return f"{topics.root}/ledger/polls/result"


def _polls_refusal(detail: str) -> Refusal:
    return Refusal(Reason.MALFORMED, f"polls: {detail}")


@dataclass(frozen=True, slots=True)
class OfficialSignature:
    """One official's card signature over a polls command: the function the card signed as,
    its certificate (DER, station-CA issued: an opaque card id, no name) and the signature."""

    function: Literal["station_manager", "witness"]
    certificate: bytes
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {"function": self.function, "certificate": self.certificate.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, data: Any) -> OfficialSignature:
        if not isinstance(data, dict) or set(data) != {"function", "certificate", "signature"}:
            raise _polls_refusal("each official is {function, certificate, signature}")
        function = _choice(data["function"], "polls.officials[].function", OFFICIAL_FUNCTIONS)
        parts = []
        for name, limit in (("certificate", MAX_OFFICIAL_CERTIFICATE), ("signature", MAX_OFFICIAL_SIGNATURE)):
            value = data[name]
            if not isinstance(value, str) or not value or len(value) > 2 * limit:
                raise _polls_refusal(f"officials[].{name}: expected at most {limit} bytes of hex")
            parts.append(_field(hex_bytes, value, None, f"polls.officials[].{name}"))
        return cls(function, parts[0], parts[1])


@dataclass(frozen=True, slots=True)
class PollsCommand:
    """``open``, ``close`` (start closing) or ``final`` with the terminals the officials declare
    unreachable (their undelivered ballots will be chained ``late``).

    A command the services act on is *authorized*: it names the station and the election, and
    answers the ledger's current challenge (``nonce``, ``issued_at``), and it carries the card
    signatures of the station manager and of a witness over :meth:`signing_input`. The bare
    form (no station, no officials) still decodes so that the ledger can refuse it with its
    reason (``officials_missing``) instead of ``malformed``.
    """

    command: Literal["open", "close", "final"]
    unreachable: tuple[str, ...] = ()
    station_id: str | None = None
    base_hash: bytes | None = None
    nonce: bytes | None = None
    issued_at: int | None = None
    officials: tuple[OfficialSignature, ...] = ()

    @property
    def authorized_form(self) -> bool:
        return self.station_id is not None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"version": MESSAGE_VERSION, "type": "polls", "command": self.command}
        if self.command == "final":
            body["unreachable"] = sorted(set(self.unreachable))
        elif self.unreachable:
            raise ValueError("only the final close declares unreachable terminals")
        if self.authorized_form:
            if self.base_hash is None or self.nonce is None or self.issued_at is None:
                raise ValueError("an authorized polls command names station, election, nonce and time")
            body |= {"station_id": self.station_id, "base_hash": self.base_hash.hex(), "nonce": self.nonce.hex(),
                     "issued_at": self.issued_at}  # fmt: skip
        return body

    def signing_input(self) -> bytes:
        """What each official's card signs (PKCS#1 v1.5, SHA-256): the domain, then the body."""
        return POLLS_SIGNING_DOMAIN + canonical_bytes(self.body())

    def encode(self) -> bytes:
        body = self.body()
        if self.authorized_form:
            body["officials"] = [official.to_json() for official in self.officials]
        elif self.officials:
            raise ValueError("officials sign only a command that names its station and election")
        return canonical_bytes(body)

    @classmethod
    def decode(cls, payload: bytes) -> PollsCommand:
        try:
            data = parse_json(payload, max_size=MAX_SMALL_MESSAGE_BYTES, canonical=True)
        except FormatError as error:
            raise Refusal(Reason.MALFORMED, f"polls: {error}") from None
        final = isinstance(data, dict) and data.get("command") == "final"
        authorized = isinstance(data, dict) and "officials" in data
        fields = {"version", "type", "command", *(["unreachable"] if final else [])}
        if authorized:
            fields |= {"station_id", "base_hash", "nonce", "issued_at", "officials"}
        try:
            data = _document(payload, "polls", fields)
            command = _choice(data["command"], "polls.command", POLLS_COMMANDS)
        except Refusal as refusal:
            raise Refusal(Reason.MALFORMED, refusal.detail) from None
        names: tuple[str, ...] = ()
        if final:
            raw = data["unreachable"]
            if not isinstance(raw, list) or len(raw) > MAX_UNREACHABLE:
                raise _polls_refusal("unreachable: expected a list of terminal ids")
            listed = [_text(name, "polls.unreachable[]", 64) for name in raw]
            if listed != sorted(set(listed)):
                raise _polls_refusal("unreachable: expected sorted, distinct terminal ids")
            names = tuple(listed)
        if not authorized:
            return cls(command, names)
        officials = data["officials"]
        if not isinstance(officials, list) or len(officials) > 4:
            raise _polls_refusal("officials: expected a list of at most 4 signatures")
        station_id = _text(data["station_id"], "polls.station_id", 64)
        try:
            return cls(
                command,
                names,
                station_id,
                _field(hex_bytes, data["base_hash"], HASH_SIZE, "polls.base_hash"),
                _field(hex_bytes, data["nonce"], NONCE_BYTES, "polls.nonce"),
                _field(strict_int, data["issued_at"], "polls.issued_at", minimum=0, maximum=MAX_TIME),
                tuple(OfficialSignature.from_json(item) for item in officials),
            )
        except Refusal as refusal:
            raise Refusal(Reason.MALFORMED, refusal.detail) from None


def polls_command(command: str, unreachable: tuple[str, ...] = ()) -> bytes:
    """The bare (unauthorized) form: the services refuse it ``officials_missing``."""
    return PollsCommand(command, unreachable).encode()  # type: ignore[arg-type]


def parse_polls_command(payload: bytes) -> str:
    return PollsCommand.decode(payload).command


@dataclass(frozen=True, slots=True)
class PollsChallenge:
    """The ledger's retained challenge: a polls command must carry this nonce and issue time
    (valid ``expires_in`` seconds from ``issued_at``; a new one after every accepted command)."""

    nonce: bytes
    issued_at: int
    expires_in: int

    def encode(self) -> bytes:
        return canonical_bytes({"version": MESSAGE_VERSION, "type": "polls_challenge", "nonce": self.nonce.hex(),
                                "issued_at": self.issued_at, "expires_in": self.expires_in})  # fmt: skip

    @classmethod
    def decode(cls, payload: bytes) -> PollsChallenge:
        data = _document(payload, "polls_challenge", {"version", "type", "nonce", "issued_at", "expires_in"})
        return cls(
            _field(hex_bytes, data["nonce"], NONCE_BYTES, "polls_challenge.nonce"),
            _field(strict_int, data["issued_at"], "polls_challenge.issued_at", minimum=0, maximum=MAX_TIME),
            _field(strict_int, data["expires_in"], "polls_challenge.expires_in", minimum=1, maximum=86400),
        )


@dataclass(frozen=True, slots=True)
class PollsResult:
    """The ledger's answer to one polls command (``nonce`` of the command, None for a bare one)."""

    command: Literal["open", "close", "final"]
    nonce: bytes | None
    accepted: bool
    polls: PollsState
    reason: PollsReason | None = None
    detail: str = ""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"version": MESSAGE_VERSION, "type": "polls_result", "command": self.command,
                                "nonce": self.nonce.hex() if self.nonce else None, "polls": self.polls,
                                "result": "accepted" if self.accepted else "refused"}  # fmt: skip
        if not self.accepted:
            body |= {"reason": (self.reason or PollsReason.INTERNAL_ERROR).value, "detail": self.detail[:MAX_DETAIL]}
        return canonical_bytes(body)

    @classmethod
    def decode(cls, payload: bytes) -> PollsResult:
        try:
            data = parse_json(payload, max_size=MAX_SMALL_MESSAGE_BYTES, canonical=True)
        except FormatError as error:
            raise Refusal(Reason.MALFORMED, f"polls_result: {error}") from None
        refused = isinstance(data, dict) and data.get("result") == "refused"
        fields = {"version", "type", "command", "nonce", "polls", "result", *(["reason", "detail"] if refused else [])}
        data = _document(payload, "polls_result", fields)
        command = _choice(data["command"], "polls_result.command", POLLS_COMMANDS)
        polls = _choice(data["polls"], "polls_result.polls", POLLS_STATES)
        _choice(data["result"], "polls_result.result", ("accepted", "refused"))
        nonce = None if data["nonce"] is None else _field(hex_bytes, data["nonce"], NONCE_BYTES, "polls_result.nonce")
        if not refused:
            return cls(command, nonce, True, polls)
        try:
            reason = PollsReason(data["reason"])
        except ValueError:
            raise Refusal(Reason.MALFORMED, "polls_result: not a documented reason") from None
        return cls(command, nonce, False, polls, reason, _text(data["detail"], "polls_result.detail"))


# --- retained statuses (every service and terminal → operators) ----------------------------


def offline_status(kind: str) -> bytes:
    """The retained last will of a service or terminal: ``{"online": false}`` of its kind."""
    return canonical_bytes({"version": MESSAGE_VERSION, "type": kind, "online": False})


def _offline(payload: bytes, kind: str) -> bool:
    """Whether the payload is the offline form of status ``kind`` (an empty retained payload
    clears a status, and reads as offline too)."""
    if not payload:
        return True
    try:
        data = parse_json(payload, max_size=MAX_SMALL_MESSAGE_BYTES)
    except FormatError:
        return False
    return isinstance(data, dict) and data.get("online") is False and set(data) == {"version", "type", "online"}


@dataclass(frozen=True, slots=True)
class TerminalStatus:
    online: bool
    reader: str | None = None
    tamper: bool | None = None
    ballots_cast: int | None = None
    outbox_depth: int | None = None

    def encode(self) -> bytes:
        if not self.online:
            return offline_status("terminal_status")
        return canonical_bytes(
            {
                "version": MESSAGE_VERSION,
                "type": "terminal_status",
                "online": True,
                "reader": self.reader,
                "tamper": self.tamper,
                "ballots_cast": self.ballots_cast,
                "outbox_depth": self.outbox_depth,
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> TerminalStatus:
        if _offline(payload, "terminal_status"):
            _offline_document(payload, "terminal_status")
            return cls(False)
        data = _document(
            payload,
            "terminal_status",
            {"version", "type", "online", "reader", "tamper", "ballots_cast", "outbox_depth"},
        )
        if data["online"] is not True:
            raise Refusal(Reason.MALFORMED, "terminal_status.online: an online status says true")
        return cls(
            True,
            _text(data["reader"], "terminal_status.reader", 32),
            _flag(data["tamper"], "terminal_status.tamper"),
            _count(data["ballots_cast"], "terminal_status.ballots_cast"),
            _count(data["outbox_depth"], "terminal_status.outbox_depth"),
        )


def _offline_document(payload: bytes, kind: str) -> None:
    if payload:
        _document(payload, kind, {"version", "type", "online"})


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    online: bool
    polls: PollsState | None = None
    position: int | None = None
    head_hash: bytes | None = None
    refused: int | None = None
    forward_lag: int | None = None
    """Entries not yet confirmed by the centre; None while the station never forwarded."""
    refusals: tuple[tuple[str, str, int], ...] = ()
    """(terminal, reason, count) of messages refused since the ledger started, sorted."""

    def encode(self) -> bytes:
        if not self.online:
            return offline_status("ledger_status")
        assert self.head_hash is not None
        return canonical_bytes(
            {
                "version": MESSAGE_VERSION,
                "type": "ledger_status",
                "online": True,
                "polls": self.polls,
                "position": self.position,
                "head_hash": self.head_hash.hex(),
                "refused": self.refused,
                "forward_lag": self.forward_lag,
                "refusals": _refusals_json(self.refusals),
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> LedgerStatus:
        if _offline(payload, "ledger_status"):
            _offline_document(payload, "ledger_status")
            return cls(False)
        data = _document(
            payload,
            "ledger_status",
            {"version", "type", "online", "polls", "position", "head_hash", "refused", "forward_lag", "refusals"},
        )
        if data["online"] is not True:
            raise Refusal(Reason.MALFORMED, "ledger_status.online: an online status says true")
        lag = data["forward_lag"]
        refusals = data["refusals"]
        if not isinstance(refusals, dict) or len(refusals) > MAX_UNREACHABLE:
            raise Refusal(Reason.MALFORMED, "ledger_status.refusals: expected terminal -> reason -> count")
        rows = []
        for terminal, reasons in refusals.items():
            _field(check_device_id, terminal, "ledger_status.refusals terminal")
            # Only terminals with refusals are listed, each with at least one reason: one
            # spelling per status, so that what is accepted re-encodes to the same bytes.
            if not isinstance(reasons, dict) or not 0 < len(reasons) <= len(Reason):
                raise Refusal(Reason.MALFORMED, "ledger_status.refusals: expected reason -> count per terminal")
            for reason, count in reasons.items():
                _choice(reason, "ledger_status.refusals reason", tuple(r.value for r in Reason))
                rows.append((terminal, reason, _count(count, "ledger_status.refusals count", minimum=1)))
        return cls(
            True,
            _choice(data["polls"], "ledger_status.polls", POLLS_STATES),
            _count(data["position"], "ledger_status.position"),
            _field(hex_bytes, data["head_hash"], HASH_SIZE, "ledger_status.head_hash"),
            _count(data["refused"], "ledger_status.refused"),
            None if lag is None else _count(lag, "ledger_status.forward_lag"),
            tuple(sorted(rows)),
        )


def _refusals_json(rows: tuple[tuple[str, str, int], ...]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for terminal, reason, count in rows:
        out.setdefault(terminal, {})[reason] = count
    return out


MUNICIPAL_ROLL = ("reachable", "unreachable")
"""What the relay of an early/common station says of its link to the municipal roll."""


@dataclass(frozen=True, slots=True)
class RollStatus:
    """The roll's retained status. ``municipal_roll`` is set only by the roll relay of an
    early/common station (issue 17): whether the municipal roll answered its latest request or
    probe. A station roll omits the field, so its bytes are those of before; a reader takes the
    document with or without it, and nothing else."""

    online: bool
    polls: PollsState | None = None
    eligible: int | None = None
    municipal_roll: str | None = None
    """``reachable`` or ``unreachable`` at an early/common station; None at any other."""

    def encode(self) -> bytes:
        if not self.online:
            return offline_status("roll_status")
        document = {"version": MESSAGE_VERSION, "type": "roll_status", "online": True, "polls": self.polls,
                    "eligible": self.eligible}  # fmt: skip
        if self.municipal_roll is not None:
            document["municipal_roll"] = _choice(self.municipal_roll, "roll_status.municipal_roll", MUNICIPAL_ROLL)
        return canonical_bytes(document)

    @classmethod
    def decode(cls, payload: bytes) -> RollStatus:
        if _offline(payload, "roll_status"):
            _offline_document(payload, "roll_status")
            return cls(False)
        base = {"version", "type", "online", "polls", "eligible"}
        try:
            data = _document(payload, "roll_status", base)
        except Refusal:
            data = _document(payload, "roll_status", base | {"municipal_roll"})
        if data["online"] is not True:
            raise Refusal(Reason.MALFORMED, "roll_status.online: an online status says true")
        municipal = data.get("municipal_roll")
        return cls(
            True,
            _choice(data["polls"], "roll_status.polls", POLLS_STATES),
            _count(data["eligible"], "roll_status.eligible"),
            None if "municipal_roll" not in data else _choice(municipal, "roll_status.municipal_roll", MUNICIPAL_ROLL),
        )


@dataclass(frozen=True, slots=True)
class RollReport:
    """The roll's totals once the polls closed (the ledger sets them beside its ballots)."""

    eligible: int
    checked_in: int

    def encode(self) -> bytes:
        return canonical_bytes(
            {"version": MESSAGE_VERSION, "type": "roll_report", "polls": "closed", "eligible": self.eligible,
             "checked_in": self.checked_in}
        )  # fmt: skip

    @classmethod
    def decode(cls, payload: bytes) -> RollReport:
        data = _document(payload, "roll_report", {"version", "type", "polls", "eligible", "checked_in"})
        _choice(data["polls"], "roll_report.polls", ("closed",))
        return cls(
            _count(data["eligible"], "roll_report.eligible"), _count(data["checked_in"], "roll_report.checked_in")
        )
