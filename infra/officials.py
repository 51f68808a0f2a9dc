"""Officials' cards: who may open and close the polls, and how the services check it.

Every polls command (``open``, ``close``, ``final``) carries the card signatures of the
**station manager** and of a **witness** — two different officials — over the command's
canonical body, which names the station, the election (base hash) and the ledger's current
challenge (:class:`protocol.messages.PollsCommand`). An official's card holds an RSA-2048 key
(the PIN is checked by the card) and a certificate from the **station CA** in role
``station_manager`` or ``witness`` (infra/pki.py): CN an opaque card id, a holder pseudonym
(a hash of the official's staff id, never a name) and the extended key usage document
signing, so the card is no MQTT identity. The card speaks the JPKI applet profile (same AID
and files as a My Number card), so one client reads both (infra/official_card.py).

:class:`OfficialsVerifier` is what the ledger and the roll run before acting; every failure is
an :class:`OfficialsRefused` with a :class:`protocol.errors.PollsReason`.

Training and tests: ``station-hub issue-official-card --training`` writes a *virtual card
file* (``jpki-virtual-card/v1``, key in the clear) that the vpcd simulator serves to pcscd, or
that :class:`TrainingCard` signs with in software. Training certificates carry ``TEST`` in
their subject (the project's marker for test credentials); once a real official's card is
enrolled on a station, the services refuse training cards (``training_card``), and no new
training card is issued there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from infra.files import private_pem, write_atomically, write_private
from infra.pki import DOCUMENT_SIGNING, OFFICIAL_ROLES, PkiError, Role, StationCA, certificate_pem, load_crl
from protocol.errors import PollsReason
from protocol.messages import OfficialSignature, PollsCommand

OFFICIALS_DIR = "officials"
"""In the station directory: ``<card id>.pem`` for every official's card issued, and
``training/<function>.json`` (the training cards :func:`training_officials` uses)."""
CARD_FORMAT = "jpki-virtual-card/v1"
HOLDER_DOMAIN = b"polling-station/official-holder/v1\n"
TRAINING_MARK = "TEST training card"
CHALLENGE_LIFETIME = 900
"""Seconds a ledger challenge stays valid (time for two officials to insert cards, type PINs)."""
CLOCK_SKEW = 300
FUNCTIONS = {role.value: role for role in OFFICIAL_ROLES}
LABEL = {"station_manager": "the station manager's card", "witness": "the witness's card"}


class OfficialsRefused(Exception):
    """A polls command the services must not act on; ``reason`` says why."""

    def __init__(self, reason: PollsReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class OfficialSigner(Protocol):
    """An official's card, ready to sign (its PIN verified by the card)."""

    @property
    def function(self) -> str: ...

    @property
    def certificate_der(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """PKCS#1 v1.5 / SHA-256 signature of ``message`` by the card's key."""
        ...


def authorize(command: PollsCommand, signers: Sequence[OfficialSigner]) -> PollsCommand:
    """``command`` with each signer's signature over its signing input."""
    message = command.signing_input()
    signatures = []
    for signer in signers:
        signature = signer.sign(message)  # first: a card used in turn in one reader is read while it signs
        signatures.append(OfficialSignature(signer.function, signer.certificate_der, signature))  # type: ignore[arg-type]
    return replace(command, officials=tuple(signatures))


def holder_pseudonym(station_id: str, holder: str) -> str:
    """What an official's certificate says about its holder: a hash of the staff id, no name."""
    return hashlib.sha256(HOLDER_DOMAIN + f"{station_id}\n{holder}".encode()).hexdigest()[:32]


def fingerprint(certificate_der: bytes) -> str:
    return hashlib.sha256(certificate_der).hexdigest()


def is_training(certificate: x509.Certificate) -> bool:
    return any(str(a.value) == TRAINING_MARK for a in certificate.subject.get_attributes_for_oid(NameOID.TITLE))


def _holder_of(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.PSEUDONYM)
    return str(names[0].value) if names else None


def _role(certificate: x509.Certificate) -> str | None:
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else None


def issued_official_certificates(station_dir: Path) -> list[x509.Certificate]:
    folder = Path(station_dir) / OFFICIALS_DIR
    return [x509.load_pem_x509_certificate(p.read_bytes()) for p in sorted(folder.glob("*.pem"))]


def real_cards_enrolled(station_dir: Path) -> bool:
    return any(not is_training(c) for c in issued_official_certificates(station_dir))


def issue_official_certificate(station_dir: Path, function: str, holder: str, public_key: rsa.RSAPublicKey |
                               ec.EllipticCurvePublicKey, *, training: bool = False) -> x509.Certificate:  # fmt: skip
    """Certify an official's card key (made on the card, for a real smartcard) in ``function``.

    Refused: a holder who already holds an unrevoked card of the *other* function (one person
    is never both officials), and a training card once a real card is enrolled here.
    """
    if function not in FUNCTIONS:
        raise PkiError(f"an official's function is one of {', '.join(FUNCTIONS)}, not {function!r}")
    if not holder.strip():
        raise PkiError("give the official's staff id (--holder); the certificate keeps only its hash")
    station_dir = Path(station_dir)
    ca = StationCA.load(station_dir / "ca")
    pseudonym = holder_pseudonym(ca.station_id, holder)
    revoked = {r.serial for r in ca.issued() if r.revoked_at is not None}
    issued = issued_official_certificates(station_dir)
    if training and any(not is_training(c) and c.serial_number not in revoked for c in issued):
        raise PkiError("this station has real officials' cards enrolled: no training card is issued here")
    for other in issued:
        if other.serial_number in revoked or _holder_of(other) != pseudonym:
            continue
        if _role(other) != function:
            raise PkiError(f"this official already holds a valid {_role(other)} card (serial "
                           f"{other.serial_number:x}); one person is never both officials")  # fmt: skip
    card_id = f"official-{secrets.token_hex(6)}"
    extra = [x509.NameAttribute(NameOID.PSEUDONYM, pseudonym)]
    if training:
        extra.append(x509.NameAttribute(NameOID.TITLE, TRAINING_MARK))
    certificate = ca.issue(public_key, card_id, Role(function), subject_extra=tuple(extra))  # type: ignore[arg-type]
    write_atomically(station_dir / OFFICIALS_DIR / f"{card_id}.pem", certificate_pem(certificate))
    return certificate


def make_training_card(station_dir: Path, function: str, holder: str, pin: str, out: Path) -> x509.Certificate:
    """A training official's card as a virtual card file (served by the vpcd simulator)."""
    if not (len(pin) == 4 and pin.isdigit()):
        raise PkiError("the card PIN is 4 digits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = issue_official_certificate(station_dir, function, holder, key.public_key(), training=True)
    ca_pem = (Path(station_dir) / "ca" / "ca.pem").read_text()
    credential = {"certificate": certificate_pem(certificate).decode(), "private_key": private_pem(key).decode()}
    document = {
        "format": CARD_FORMAT,
        "card_id": certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        # The applet's signing slot is unused by officials: the same key, a password nobody needs.
        "auth": {**credential, "secret": pin},
        "sign": {**credential, "secret": secrets.token_hex(4).upper()},
        "auth_ca_certificate": ca_pem,
        "sign_ca_certificate": ca_pem,
    }
    write_private(Path(out), json.dumps(document, indent=2).encode())
    return certificate


class TrainingCard:
    """A training card file signing in software (tests, demos, training stations): it checks the
    PIN as the card would. The services cannot tell it from the card; they refuse any training
    certificate once real cards are enrolled."""

    def __init__(self, path: Path, pin: str | None = None) -> None:
        data = json.loads(Path(path).read_text())
        if data.get("format") != CARD_FORMAT:
            raise PkiError(f"{path} is not a virtual card file")
        self._certificate = x509.load_pem_x509_certificate(data["auth"]["certificate"].encode())
        key = serialization.load_pem_private_key(data["auth"]["private_key"].encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._key = key
        if pin is not None and pin != data["auth"]["secret"]:
            raise PkiError(f"{path}: wrong PIN")
        self.path = Path(path)

    @property
    def function(self) -> str:
        return _role(self._certificate) or ""

    @property
    def certificate_der(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.DER)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def training_officials(station_dir: Path) -> list[TrainingCard]:
    """The station's two training cards (issued on first use): scripts, tests and demos.

    Refused (PkiError) on a station with real officials' cards."""
    folder = Path(station_dir) / OFFICIALS_DIR / "training"
    cards = []
    for function in ("station_manager", "witness"):
        path = folder / f"{function}.json"
        if not path.exists():
            make_training_card(station_dir, function, f"training-{function}", "1234", path)
        cards.append(TrainingCard(path))
    return cards


@dataclass(frozen=True)
class VerifiedOfficial:
    """What the signed reports keep of an official: function, certificate fingerprint, signature."""

    function: str
    certificate_sha256: str
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {"function": self.function, "certificate_sha256": self.certificate_sha256,
                "signature": self.signature.hex()}  # fmt: skip


class OfficialsVerifier:
    """The station CA and its CRL (re-read on every check: a revocation counts at once)."""

    def __init__(self, station_dir: Path, station_id: str, base_hash: bytes) -> None:
        self.station_dir = Path(station_dir)
        self.station_id = station_id
        self.base_hash = base_hash
        self._ca = x509.load_pem_x509_certificate((self.station_dir / "ca" / "ca.pem").read_bytes())

    def check(self, command: PollsCommand, now: dt.datetime, nonce: bytes | None = None) -> list[VerifiedOfficial]:
        """The two officials who authorized ``command``; raise OfficialsRefused otherwise.

        ``nonce``: the ledger's current challenge (the roll, which cannot see it, passes None
        and relies on the issue time, the state machine and the ledger's answer)."""
        if not command.authorized_form or not command.officials:
            raise OfficialsRefused(PollsReason.OFFICIALS_MISSING,
                                   "the command carries no officials' signatures: insert the station manager's "
                                   "and a witness's cards")  # fmt: skip
        if command.station_id != self.station_id:
            raise OfficialsRefused(PollsReason.WRONG_STATION, f"a command for station {command.station_id!r}")
        if command.base_hash != self.base_hash:
            raise OfficialsRefused(PollsReason.WRONG_ELECTION, "a command for another election")
        age = now.timestamp() - (command.issued_at or 0)
        if not -CLOCK_SKEW <= age <= CHALLENGE_LIFETIME:
            raise OfficialsRefused(PollsReason.EXPIRED, f"the challenge is {int(age)} s old (at most "
                                   f"{CHALLENGE_LIFETIME} s): sign the command again")  # fmt: skip
        if nonce is not None and command.nonce != nonce:
            raise OfficialsRefused(PollsReason.STALE_NONCE, "the command answers an old challenge (replayed or "
                                   "already used): sign it again")  # fmt: skip
        if len(command.officials) != 2:
            raise OfficialsRefused(PollsReason.OFFICIALS_MISSING, f"{len(command.officials)} card signature(s): "
                                   "the station manager's and a witness's cards are both needed")  # fmt: skip
        certificates = [self._parse(official.certificate) for official in command.officials]
        first, second = command.officials
        pairs = zip(certificates, command.officials, strict=True)
        holders = [_holder_of(c) or fingerprint(o.certificate) for c, o in pairs]
        if first.certificate == second.certificate or holders[0] == holders[1]:
            raise OfficialsRefused(PollsReason.SAME_OFFICIAL, "both signatures come from one official: a second "
                                   "official must insert their own card")  # fmt: skip
        crl = load_crl(self.station_dir / "ca" / "crl.pem")
        if not crl.is_signature_valid(self._ca.public_key()):  # type: ignore[arg-type]
            raise OfficialsRefused(PollsReason.INTERNAL_ERROR, "the station CRL is not signed by the station CA")
        for official, certificate in zip(command.officials, certificates, strict=True):
            self._check_certificate(official, certificate, crl, now)
        if {o.function for o in command.officials} != set(FUNCTIONS):
            function = first.function.replace("_", " ")
            raise OfficialsRefused(PollsReason.WRONG_ROLE, f"two {function} cards: one station manager's and one "
                                   "witness's card are needed")  # fmt: skip
        message = command.signing_input()
        for official, certificate in zip(command.officials, certificates, strict=True):
            try:
                key = certificate.public_key()
                if isinstance(key, rsa.RSAPublicKey):
                    key.verify(official.signature, message, padding.PKCS1v15(), hashes.SHA256())
                elif isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(official.signature, message, ec.ECDSA(hashes.SHA256()))
                else:
                    raise InvalidSignature()
            except (InvalidSignature, ValueError, UnsupportedAlgorithm):
                raise OfficialsRefused(
                    PollsReason.BAD_OFFICIAL_SIGNATURE, f"{LABEL[official.function]} did not sign this command"
                ) from None
        if any(is_training(c) for c in certificates) and real_cards_enrolled(self.station_dir):
            raise OfficialsRefused(PollsReason.TRAINING_CARD, "a training card, on a station with real officials' "
                                   "cards enrolled")  # fmt: skip
        return sorted((VerifiedOfficial(o.function, fingerprint(o.certificate), o.signature)
                       for o in command.officials), key=lambda v: v.function)  # fmt: skip

    def _parse(self, der: bytes) -> x509.Certificate:
        try:
            certificate = x509.load_der_x509_certificate(der)
            certificate.subject.public_bytes()
            certificate.extensions  # noqa: B018 (parsing is the point)
            return certificate
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension):
            raise OfficialsRefused(PollsReason.UNKNOWN_OFFICIAL, "a card certificate is not valid X.509") from None

    def _check_certificate(self, official: OfficialSignature, certificate: x509.Certificate,
                           crl: x509.CertificateRevocationList, now: dt.datetime) -> None:  # fmt: skip
        label = LABEL[official.function]
        try:
            if certificate.issuer != self._ca.subject:
                raise InvalidSignature()
            certificate.verify_directly_issued_by(self._ca)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            raise OfficialsRefused(PollsReason.UNKNOWN_OFFICIAL,
                                   f"{label} is not issued by this station's CA") from None  # fmt: skip
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise OfficialsRefused(PollsReason.OFFICIAL_EXPIRED, f"{label} is not in date")
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            raise OfficialsRefused(PollsReason.OFFICIAL_REVOKED, f"{label} is revoked")
        role = _role(certificate)
        if role not in FUNCTIONS:
            raise OfficialsRefused(PollsReason.WRONG_ROLE, f"the card offered as {label[4:]} is a {role} "
                                   "certificate, not an official's card")  # fmt: skip
        if role != official.function:
            raise OfficialsRefused(PollsReason.WRONG_ROLE, f"the card offered as {label[4:]} is a "
                                   f"{role.replace('_', ' ')}'s card")  # fmt: skip
        try:
            usages: Iterable[x509.ObjectIdentifier] = certificate.extensions.get_extension_for_class(
                x509.ExtendedKeyUsage
            ).value
        except x509.ExtensionNotFound:
            usages = ()
        if DOCUMENT_SIGNING not in usages:
            raise OfficialsRefused(PollsReason.WRONG_ROLE, f"{label} is not for document signing")
