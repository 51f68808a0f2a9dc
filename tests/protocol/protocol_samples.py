"""One valid example of every message and document of :mod:`protocol`, with its strict decoder
and (where there is one) the encoder that must reproduce the accepted bytes exactly."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from protocol_kit import STATION_ID, Sub, final_statements, forwarded, honest, kit

from election.chain import CHAIN_VERSION, ChainHead, Checkpoint, sign_document
from election.encoding import canonical_bytes
from election.stations import StationKeys
from protocol.errors import CheckinReason, PollsReason, Reason
from protocol.forwarding import (
    ClosingSeen,
    Confirm,
    Refusal,
    batch_payload,
    hello_payload,
    parse_down,
    parse_statement,
    parse_up,
)
from protocol.messages import (
    NONCE_BYTES,
    AckHeld,
    AckRefused,
    BallotSubmission,
    CheckinChallenge,
    CheckinChallengeRequest,
    CheckinGranted,
    CheckinRefused,
    CheckinRequest,
    LedgerStatus,
    PollsChallenge,
    PollsCommand,
    PollsResult,
    RollReport,
    RollStatus,
    TerminalStatus,
    decode_ack,
    decode_checkin_message,
    decode_checkin_reply,
)
from protocol.registration import LinkGrant, StationRegistration

MODULUS = 256
"""Byte length of the kit's roll key (RSA-2048)."""


@dataclass(frozen=True)
class Sample:
    decode: Callable[[bytes], Any]
    valid: bytes
    encode: Callable[[Any], bytes] | None = None
    """Re-encodes a decoded value; what a strict decoder accepts, its encoder writes byte for byte."""


def _signed_statements() -> list[dict[str, Any]]:
    k = kit()
    key = k.station.ledger_key
    base = {"version": CHAIN_VERSION, "station_id": STATION_ID, "base_hash": k.manifest.base_hash.hex()}
    zero = sign_document(
        {**base, "type": "zero_report", "position": 0, "head_hash": k.genesis.hex(), "terminals": {"x1": 0, "x2": 0}},
        key,
    )
    checkpoint = Checkpoint(STATION_ID, k.manifest.base_hash, ChainHead(0, k.genesis)).sign(key)
    closing = sign_document(
        {
            **base,
            "type": "closing_report",
            "position": 0,
            "head_hash": k.genesis.hex(),
            "terminals": {"x1": 0, "x2": 0},
            "ballots": 0,
            "spoiled": 0,
            "check_ins": None,
            "late": {"x2": 1},
            "closed_position": 0,
            "unreachable": {"x2": {"sealed": 1, "commitment": "00" * 32}},
        },
        key,
    )
    return [zero, checkpoint, closing]


def _certificate_pem(name: str) -> str:
    key = Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _registration() -> StationRegistration:
    k = kit()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, STATION_ID)]))
        .sign(Ed25519PrivateKey.generate(), None)
    )
    return StationRegistration(
        StationKeys(STATION_ID, k.station.ledger_key.public_key(), k.roll_public),
        k.manifest.base_hash,
        {name: k.signers[name].public_key for name in ("x1", "x2")},
        ("terminal t3: revoked",),
        request.public_bytes(serialization.Encoding.PEM),
    )


def _up_encode(message: Any) -> bytes:
    if hasattr(message, "entries"):
        return batch_payload(
            message.station_id, message.request, list(message.entries), list(message.statements), list(message.devices)
        )
    return hello_payload(message.station_id, message.request)


@functools.cache
def samples() -> dict[str, Sample]:
    k = kit()
    manifest = k.manifest
    spoiled, opening = k.spoiled()
    submitted = honest([Sub(spoiled, opening), Sub(k.cast())])
    confirm = Confirm(STATION_ID, 7, ChainHead(2, b"\x05" * 32), 2, ClosingSeen(2, 2), "ok")
    refused = Refusal(STATION_ID, 7, "malformed", "batch.entries[0]: …")
    grant = LinkGrant(
        STATION_ID, "central.example", 8884, _certificate_pem("central").encode(), _certificate_pem(STATION_ID).encode()
    )
    statements = _signed_statements()
    batch = batch_payload(STATION_ID, 9, forwarded(submitted), statements, final_statements(submitted))
    return {
        "cast ballot": Sample(
            lambda p: BallotSubmission.decode(p, manifest), submitted[1].payload(), lambda v: v.encode(manifest)
        ),
        "spoiled ballot": Sample(
            lambda p: BallotSubmission.decode(p, manifest), submitted[0].payload(), lambda v: v.encode(manifest)
        ),
        "ack held": Sample(decode_ack, AckHeld(b"\x01" * 32).encode(), lambda v: v.encode()),
        "ack refused": Sample(
            decode_ack, AckRefused(b"\x01" * 32, Reason.BAD_PROOF, "proofs").encode(), lambda v: v.encode()
        ),
        "check-in challenge request": Sample(
            lambda p: decode_checkin_message(p, MODULUS), CheckinChallengeRequest().encode()
        ),
        "check-in": Sample(
            lambda p: decode_checkin_message(p, MODULUS),
            CheckinRequest(b"\x03" * 32, b"\x04" * MODULUS, b"\x30" * 600, b"\x05" * 256).encode(),
            lambda v: v.encode(),
        ),
        "check-in challenge": Sample(
            lambda p: decode_checkin_reply(p, MODULUS),
            CheckinChallenge(b"\x08" * 32, 60).encode(),
            lambda v: v.encode(),
        ),
        "check-in granted": Sample(
            lambda p: decode_checkin_reply(p, MODULUS), CheckinGranted(b"\x06" * MODULUS).encode(), lambda v: v.encode()
        ),
        "check-in refused": Sample(
            lambda p: decode_checkin_reply(p, MODULUS),
            CheckinRefused(CheckinReason.ALREADY_VOTED, "voted").encode(),
            lambda v: v.encode(),
        ),
        "polls": Sample(PollsCommand.decode, PollsCommand("open").encode(), lambda v: v.encode()),
        "polls final": Sample(PollsCommand.decode, PollsCommand("final", ("x2",)).encode(), lambda v: v.encode()),
        "polls challenge": Sample(
            PollsChallenge.decode,
            PollsChallenge(b"\x07" * NONCE_BYTES, 1_800_000_000, 900).encode(),
            lambda v: v.encode(),
        ),
        "polls result accepted": Sample(
            PollsResult.decode, PollsResult("open", b"\x07" * NONCE_BYTES, True, "open").encode(), lambda v: v.encode()
        ),
        "polls result refused": Sample(
            PollsResult.decode,
            PollsResult("close", None, False, "open", PollsReason.SAME_OFFICIAL, "one official twice").encode(),
            lambda v: v.encode(),
        ),
        "terminal status": Sample(
            TerminalStatus.decode, TerminalStatus(True, "ok", False, 3, 1).encode(), lambda v: v.encode()
        ),
        "terminal offline": Sample(TerminalStatus.decode, TerminalStatus(False).encode()),
        "ledger status": Sample(
            LedgerStatus.decode,
            LedgerStatus(True, "open", 4, b"\x07" * 32, 1, None, (("x1", "bad_proof", 1),)).encode(),
            lambda v: v.encode(),
        ),
        "roll status": Sample(RollStatus.decode, RollStatus(True, "closed", 12).encode(), lambda v: v.encode()),
        "roll report": Sample(RollReport.decode, RollReport(12, 9).encode(), lambda v: v.encode()),
        "hello": Sample(lambda p: parse_up(p, STATION_ID), hello_payload(STATION_ID, 3), _up_encode),
        "batch": Sample(lambda p: parse_up(p, STATION_ID), batch, _up_encode),
        "confirm": Sample(
            lambda p: parse_down(p, STATION_ID),
            canonical_bytes(confirm.to_json()),
            lambda v: canonical_bytes(v.to_json()),
        ),
        "refused": Sample(
            lambda p: parse_down(p, STATION_ID),
            canonical_bytes(refused.to_json()),
            lambda v: canonical_bytes(v.to_json()),
        ),
        "zero report": Sample(parse_statement, canonical_bytes(statements[0]), canonical_bytes),
        "checkpoint": Sample(parse_statement, canonical_bytes(statements[1]), canonical_bytes),
        "closing report": Sample(parse_statement, canonical_bytes(statements[2]), canonical_bytes),
        "station registration": Sample(StationRegistration.decode, _registration().encode(), lambda v: v.encode()),
        "link grant": Sample(LinkGrant.decode, grant.encode(), lambda v: v.encode()),
    }
