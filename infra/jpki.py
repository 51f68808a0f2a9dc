"""JPKI card certificates as the roll service judges them, and the voter key it derives.

The roll never takes a terminal's word that a card was present: a check-in carries the card's
certificate and the card's RSA signature over :func:`protocol.messages.checkin_binding` (the
roll's own fresh challenge, the station, the terminal and the blinded token). This module
checks that certificate against the JPKI issuing CAs installed on the hub, with a CRL that is
still fresh (``this_update <= now < next_update``), the validity dates of card and CA, and the
signature, and derives the voter key from the certificate's issuer and serial number with the
roll salt, which only the roll holds (``docs/card-protocol.md`` §5).

Nothing here keeps or logs the certificate or the signature: :meth:`JpkiVerifier.voter_key`
returns the voter key and nothing else, and each failure is a :class:`CardRefused` with a
reason word, never with the certificate's contents.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

VOTER_KEY_DOMAIN = b"polling-station/jpki-voter-key/v1"
MIN_SALT_BYTES = 16
MIN_RSA_BITS = 2048
MAX_CERTIFICATE_BYTES = 8192
PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


def derive_voter_key(roll_salt: bytes, issuer_der: bytes, serial_number: int) -> str:
    """HMAC-SHA256(roll salt, domain ‖ len ‖ issuer DER ‖ len ‖ serial), lowercase hex."""
    if len(roll_salt) < MIN_SALT_BYTES:
        raise ValueError(f"the roll salt must be at least {MIN_SALT_BYTES} bytes")
    if serial_number < 0:
        raise ValueError("certificate serial numbers are positive")
    serial = serial_number.to_bytes(max(1, (serial_number.bit_length() + 7) // 8), "big")
    message = b"".join(
        (VOTER_KEY_DOMAIN, len(issuer_der).to_bytes(4, "big"), issuer_der, len(serial).to_bytes(4, "big"), serial)
    )
    return hmac.new(roll_salt, message, hashlib.sha256).hexdigest()


class CardRefused(Exception):
    """The roll does not accept this card; ``reason`` is a :class:`protocol.errors.CheckinReason` value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Anchor:
    certificate: x509.Certificate
    crl: x509.CertificateRevocationList | None


def _load_certificate(raw: bytes) -> x509.Certificate:
    if raw.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


def _load_crl(raw: bytes) -> x509.CertificateRevocationList:
    if raw.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(raw)
    return x509.load_der_x509_crl(raw)


class JpkiVerifier:
    """The JPKI issuing CAs and their CRLs, as the roll trusts them.

    A CA without a CRL is kept (so its cards are named), but every card it issued is refused
    with ``stale_crl``: the roll never lets a card pass on missing revocation data.
    """

    def __init__(self, anchors: Iterable[x509.Certificate], crls: Iterable[x509.CertificateRevocationList]) -> None:
        crls = list(crls)
        self._anchors = []
        for anchor in anchors:
            mine = [crl for crl in crls if crl.issuer == anchor.subject and crl.is_signature_valid(anchor.public_key())]  # type: ignore[arg-type]
            newest = max(mine, key=lambda crl: crl.last_update_utc, default=None)
            self._anchors.append(_Anchor(anchor, newest))
        if not self._anchors:
            raise ValueError("no JPKI issuing CA is installed")

    @classmethod
    def from_directory(cls, directory: Path) -> JpkiVerifier:
        """``directory/anchors/*.pem|*.der`` and ``directory/crls/*.pem|*.der``."""
        anchors = [_load_certificate(p.read_bytes()) for p in sorted((directory / "anchors").glob("*")) if p.is_file()]
        crls = [_load_crl(p.read_bytes()) for p in sorted((directory / "crls").glob("*")) if p.is_file()]
        return cls(anchors, crls)

    def voter_key(
        self, certificate_der: bytes, binding: bytes, signature: bytes, roll_salt: bytes, now: dt.datetime
    ) -> str:
        """The voter key of the card that signed ``binding``; raise :class:`CardRefused` otherwise."""
        if len(certificate_der) > MAX_CERTIFICATE_BYTES:
            raise CardRefused("malformed", "the card certificate is too large")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certificate = x509.load_der_x509_certificate(certificate_der)
                issuer = certificate.issuer
                issuer_der = issuer.public_bytes()
                serial = certificate.serial_number
                not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
                public_key = certificate.public_key()
                version = certificate.version
        except PARSE_ERRORS:
            raise CardRefused("malformed", "the card certificate is not valid DER X.509") from None
        if version is not x509.Version.v3 or serial <= 0:
            raise CardRefused("malformed", "the card certificate is not a JPKI certificate")
        if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_RSA_BITS:
            raise CardRefused("malformed", "the card certificate does not hold an RSA-2048 key")
        anchor = self._issuer_of(certificate)
        for start, end in ((not_before, not_after), (anchor.certificate.not_valid_before_utc,
                                                     anchor.certificate.not_valid_after_utc)):  # fmt: skip
            if not start <= now <= end:
                raise CardRefused("card_expired", "the card certificate (or its CA) is not in date")
        crl = anchor.crl
        if crl is None or crl.next_update_utc is None or not crl.last_update_utc <= now < crl.next_update_utc:
            raise CardRefused("stale_crl", "the roll's revocation list for this card's CA is not fresh")
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            raise CardRefused("card_revoked", "this card's certificate is revoked")
        if len(signature) != (public_key.key_size + 7) // 8:
            raise CardRefused("bad_card_signature", "the card signature has the wrong size")
        try:
            public_key.verify(signature, binding, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise CardRefused("bad_card_signature", "the card did not sign this check-in") from None
        return derive_voter_key(roll_salt, issuer_der, serial)

    def _issuer_of(self, certificate: x509.Certificate) -> _Anchor:
        for anchor in self._anchors:
            if anchor.certificate.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(anchor.certificate)
            except (*PARSE_ERRORS, InvalidSignature):
                continue
            return anchor
        raise CardRefused("unknown_issuer", "the card certificate is not from a JPKI CA this roll trusts")
