"""The JPKI authentication flow at the booth, over any ApduTransport.

The flow proves three things to the booth: the certificate chains to a provisioned JPKI CA,
is in date and not revoked; the card knows the PIN (the card checks it); and the card holds the
certificate's private key (it signs a fresh random challenge). It then yields only a local
*card handle* (:func:`card_handle`, unkeyed, for the outbox's uncast check-in); the voter key is
derived by the roll alone, from the certificate the card proves to it: :meth:`sign_checkin`
has the card sign the roll's check-in binding, and :attr:`certificate_der` is what goes with
it (docs/card-protocol.md §5). The certificate (which in "sign" mode carries name, address,
birth date) is held in memory for this one attempt and never logged or stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from appliance.card import apdu
from appliance.card.channel import CardChannel
from appliance.card.errors import (
    BadCardSignature,
    CardLocked,
    CardProtocolError,
    InvalidPinFormat,
    WrongPin,
)
from appliance.card.transport import ApduTransport
from appliance.card.trust import CardCertificate, TrustStore

CARD_HANDLE_DOMAIN = b"polling-station/booth-card-handle/v1"

log = logging.getLogger(__name__)

# DER prefix of a DigestInfo for SHA-256 (RFC 8017, section 9.2, note 1); the card pads it.
SHA256_DIGEST_INFO_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
CHALLENGE_BYTES = 32
# Keeps every response (data + SW) inside one normal PN532 frame as well as on PC/SC.
READ_CHUNK = 0xF0
MAX_CERTIFICATE_BYTES = 8192
MAX_READ_COMMANDS = 128
"""READ BINARY commands per certificate file. A card may answer fewer bytes than asked (ISO
7816-4 allows it), so the reader loops; this bound stops a card that trickles a byte at a time
(128 reads carry a 1,583-byte certificate at 13 bytes each, 8 KiB at 64)."""


class AuthMode(StrEnum):
    AUTH = "auth"  # user-authentication certificate + 4-digit PIN: no personal data
    SIGN = "sign"  # signing certificate + 6-16 character password: personal data inside


@dataclass(frozen=True)
class ModeProfile:
    certificate_ef: int
    key_ef: int
    secret_ef: int
    max_tries: int
    secret_pattern: re.Pattern[str]
    secret_rule: str


PROFILES = {
    AuthMode.AUTH: ModeProfile(
        apdu.EF_AUTH_CERT,
        apdu.EF_AUTH_KEY,
        apdu.EF_AUTH_PIN,
        3,
        re.compile(r"[0-9]{4}"),
        "the PIN is 4 digits",
    ),
    AuthMode.SIGN: ModeProfile(
        apdu.EF_SIGN_CERT,
        apdu.EF_SIGN_KEY,
        apdu.EF_SIGN_PASSWORD,
        5,
        re.compile(r"[0-9A-Z]{6,16}"),
        "the password is 6 to 16 digits or capital letters",
    ),
}


@dataclass(frozen=True)
class CardStatus:
    """What the insertion probe learnt, before any PIN: the tries left of this mode's secret."""

    tries_left: int
    max_tries: int


@dataclass(frozen=True)
class AuthenticatedVoter:
    """What a successful authentication yields: the card handle, lowercase hex, nothing else."""

    card_handle: str


def card_handle(issuer_der: bytes, serial_number: int) -> str:
    """SHA-256 over a domain, the issuer and the serial: stable for one card, so a retried
    check-in finds its stored blinded token; not the roll's voter key (no salt)."""
    serial = serial_number.to_bytes(max(1, (serial_number.bit_length() + 7) // 8), "big")
    parts = (CARD_HANDLE_DOMAIN, issuer_der, serial)
    return hashlib.sha256(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class JpkiAuthenticator:
    """One authentication attempt with one card; create a new one for the next card."""

    def __init__(
        self,
        transport: ApduTransport,
        mode: AuthMode | str,
        trust: TrustStore,
        roll_salt: bytes | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._transport = transport
        self._mode = AuthMode(mode)
        self._profile = PROFILES[self._mode]
        self._trust = trust
        del roll_salt  # no longer used: only the roll derives voter keys (a booth config may still name one)
        self._authenticated = False
        self._clock = clock
        self._random_bytes = random_bytes
        self._channel = CardChannel(transport)
        self._applet_selected = False
        self._certificate: CardCertificate | None = None

    @property
    def mode(self) -> AuthMode:
        return self._mode

    @property
    def max_tries(self) -> int:
        return self._profile.max_tries

    def tries_left(self) -> int:
        """Ask the card how many tries remain, without spending one; raise CardLocked at 0.

        VERIFY without data (ISO 7816-4 §11.5.6) answers ``63Cx`` and costs nothing. A card
        whose secret is already verified may answer ``9000``: a verified secret's counter is
        back at its maximum, so that is what is reported.
        """
        self._select_secret()
        response = self._exchange(apdu.verify(None))
        if response.sw == apdu.SW_OK:
            return self.max_tries
        return self._tries_from(response.sw)

    def check_certificate(self) -> None:
        """In "auth" mode, refuse a revoked, expired or foreign card before the PIN is typed.

        The signing certificate ("sign" mode) is readable only after the password, so there
        this is a no-op and the check happens inside authenticate().
        """
        if self._mode is AuthMode.AUTH:
            self._load_certificate()

    def probe(self) -> CardStatus:
        """The checks at card insertion, before any PIN (docs/card-protocol.md §2a).

        SELECT the applet (else not a My Number card); in "auth" mode read the certificate and
        check it — chain to an installed JPKI CA, dates of card and CA, that CA's CRL fresh,
        not revoked; in "sign" mode (certificate readable only after the password) check that
        every installed CA's CRL is fresh; then the tries left by VERIFY without data, which
        spends no try (CardLocked at none). Nothing here sends a secret: a card refused here
        never sees a PIN. Raises the CardError that tells the voter why.
        """
        self._select_applet()
        if self._mode is AuthMode.AUTH:
            self._load_certificate()
        else:
            self._trust.require_fresh(self._clock())
        return CardStatus(self.tries_left(), self.max_tries)

    def authenticate(self, secret: str) -> AuthenticatedVoter:
        if not self._profile.secret_pattern.fullmatch(secret):
            raise InvalidPinFormat(self._profile.secret_rule)
        self.check_certificate()
        # A locked card is never sent the secret: the empty VERIFY says so without a try.
        self.tries_left()
        response = self._exchange(apdu.verify(secret.encode("ascii")))
        if response.sw != apdu.SW_OK:
            tries = self._tries_from(response.sw)
            log.info("card refused the %s secret; %d tries left", self._mode, tries)
            raise WrongPin(tries)
        certificate = self._load_certificate()
        self._prove_key_possession(certificate)
        self._authenticated = True
        log.info("card authenticated in %s mode", self._mode)
        return AuthenticatedVoter(card_handle(certificate.issuer_der, certificate.serial_number))

    @property
    def certificate_der(self) -> bytes:
        """The certificate the roll checks (after :meth:`authenticate`): in "sign" mode it holds
        the four basic attributes, and goes to the roll only, over the station's TLS."""
        if not self._authenticated or self._certificate is None:
            raise CardProtocolError("the card is not authenticated")
        return self._certificate.der

    def sign_checkin(self, binding: bytes) -> bytes:
        """The card's signature over the roll's check-in binding (PKCS#1 v1.5, SHA-256), checked
        against the certificate here too, so a card that cannot sign is told apart locally."""
        if not self._authenticated or self._certificate is None:
            raise CardProtocolError("the card is not authenticated")
        return self._card_sign(self._certificate, binding)

    def _select_secret(self) -> None:
        self._select_applet()
        self._expect_ok(apdu.select_file(self._profile.secret_ef), "select the PIN file")

    def _tries_from(self, sw: int) -> int:
        if sw in apdu.LOCKED_STATUS_WORDS:
            log.info("card's %s secret is locked", self._mode)
            raise CardLocked()
        if sw & 0xFFF0 == 0x63C0:
            tries = sw & 0x0F
            if tries > self.max_tries:
                # Impossible for this mode's secret (63CF on a 3-try PIN): a broken or foreign
                # counter. The card enforces its own limit; the voter is never told more tries
                # than the secret can have, so the count is clamped (docs/card-protocol.md §2).
                log.warning("card reports %d tries left for a %d-try %s secret", tries, self.max_tries, self._mode)
                return self.max_tries
            return tries
        raise CardProtocolError(f"card answered VERIFY with unexpected status {sw:04X}")

    def _select_applet(self) -> None:
        if not self._applet_selected:
            response = self._exchange(apdu.select_applet())
            if response.sw != apdu.SW_OK:
                raise CardProtocolError(f"not a My Number card: JPKI applet selection answered {response.sw:04X}")
            self._applet_selected = True

    def _load_certificate(self) -> CardCertificate:
        if self._certificate is None:
            der = self._read_certificate_file(self._profile.certificate_ef)
            self._certificate = self._trust.check(der, self._clock())
        return self._certificate

    def _read_certificate_file(self, file_id: int) -> bytes:
        """The DER certificate in ``file_id``: its 4-byte header first, then the length it gives."""
        self._select_applet()
        self._expect_ok(apdu.select_file(file_id), "select the certificate file")
        reads = [0]  # READ BINARY commands spent on this file, shared by both calls below
        data = self._read_file(bytearray(), 4, reads)
        total = _der_total_length(bytes(data[:4]))
        return bytes(self._read_file(data, total, reads)[:total])

    def _read_file(self, data: bytearray, size: int, reads: list[int]) -> bytearray:
        """Extend ``data`` (the file from offset 0) to at least ``size`` bytes.

        A card may answer a READ BINARY with fewer bytes than asked (ISO 7816-4 §11.2.3), so
        this keeps reading from the new offset, bounded by MAX_READ_COMMANDS; an answer
        without data, or the end of the file (6282) before ``size``, is a broken card.
        """
        while len(data) < size:
            reads[0] += 1
            if reads[0] > MAX_READ_COMMANDS:
                raise CardProtocolError(f"card needed more than {MAX_READ_COMMANDS} reads for one certificate")
            offset = len(data)
            response = self._channel.transceive(apdu.read_binary(offset, min(READ_CHUNK, size - offset)))
            if response.sw not in (apdu.SW_OK, apdu.SW_END_OF_FILE):
                raise CardProtocolError(f"card refused to read the certificate (status {response.sw:04X})")
            if not response.data:
                raise CardProtocolError(f"card returned no data at offset {offset} of the certificate")
            data += response.data
            if response.sw == apdu.SW_END_OF_FILE and len(data) < size:
                raise CardProtocolError("certificate file ends before the length its header gives")
        return data

    def _prove_key_possession(self, certificate: CardCertificate) -> None:
        self._card_sign(certificate, self._random_bytes(CHALLENGE_BYTES))

    def _card_sign(self, certificate: CardCertificate, message: bytes) -> bytes:
        public_key = certificate.public_key
        digest_info = SHA256_DIGEST_INFO_PREFIX + hashlib.sha256(message).digest()
        self._expect_ok(apdu.select_file(self._profile.key_ef), "select the key file")
        signature = self._expect_ok(apdu.compute_digital_signature(digest_info), "sign the challenge").data
        if len(signature) != public_key.key_size // 8:
            raise CardProtocolError(
                f"card returned a {len(signature)}-byte signature for a {public_key.key_size}-bit key"
            )
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            log.warning("card's challenge signature does not match its certificate")
            raise BadCardSignature() from exc
        return signature

    def _expect_ok(self, command: apdu.CommandApdu, purpose: str) -> apdu.ResponseApdu:
        response = self._exchange(command)
        if response.sw != apdu.SW_OK:
            raise CardProtocolError(f"card refused to {purpose} (status {response.sw:04X})")
        return response

    def _exchange(self, command: apdu.CommandApdu) -> apdu.ResponseApdu:
        return self._channel.transceive(command)


def _der_total_length(head: bytes) -> int:
    """Total size of a DER SEQUENCE from its first four bytes (tag, length octets)."""
    if head[0] != 0x30:
        raise CardProtocolError("certificate file does not start with a DER SEQUENCE")
    first = head[1]
    if first < 0x80:
        total = 2 + first
    elif first == 0x81:
        total = 3 + head[2]
    elif first == 0x82:
        total = 4 + int.from_bytes(head[2:4], "big")
    else:
        raise CardProtocolError("certificate file has an unsupported DER length")
    if total > MAX_CERTIFICATE_BYTES:
        raise CardProtocolError(f"certificate file claims {total} bytes, more than any card holds")
    if total < len(head):
        raise CardProtocolError("certificate file is shorter than its header")
    return total
