"""Validation of a card's certificate against the provisioned issuing CAs and their CRLs.

A polling station is offline from J-LIS, so the issuing CA certificates and a CRL for each
are provisioned with the election package; a missing CRL is a configuration error found when
the trust store is built, not a card that silently passes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning

from appliance.card.errors import (
    CardProtocolError,
    CardRevoked,
    CertificateExpired,
    RevocationListStale,
    UnknownIssuer,
)

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)
"""What cryptography raises for a certificate it cannot parse, at load time or (it parses
lazily) later, when an attribute such as ``issuer`` or ``serial_number`` is first read."""


@dataclass(frozen=True)
class CardCertificate:
    """A card's certificate with every field the booth uses already parsed and checked.

    Built only by parse_card_certificate(), which reads each lazily parsed attribute once
    inside one error handler, so no later access can raise.
    """

    certificate: x509.Certificate
    der: bytes
    issuer: x509.Name
    issuer_der: bytes
    serial_number: int
    not_before: datetime
    not_after: datetime
    public_key: rsa.RSAPublicKey


def parse_card_certificate(der: bytes) -> CardCertificate:
    """Parse a card's DER certificate; anything unusable is CardProtocolError (card invalid).

    Refused besides undecodable DER: a version other than v3 (every JPKI certificate carries
    extensions), a serial number that is not positive (RFC 5280 §4.1.2.2; cryptography only
    warns), and a key that is not RSA.
    """
    try:
        with warnings.catch_warnings():
            # A non-positive serial parses with a deprecation warning; it is refused below.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certificate = x509.load_der_x509_certificate(der)
            version = certificate.version
            issuer = certificate.issuer
            issuer_der = issuer.public_bytes()
            # Not used by the booth, but parsed too: a certificate with a part nobody can
            # read is not a JPKI certificate, and nothing downstream should meet it first.
            certificate.subject.public_bytes()
            certificate.extensions  # noqa: B018 (parsing is the point)
            serial_number = certificate.serial_number
            not_before = certificate.not_valid_before_utc
            not_after = certificate.not_valid_after_utc
            public_key = certificate.public_key()
    except PARSE_ERRORS as exc:
        log.info("card certificate unparseable (%s)", type(exc).__name__)
        raise CardProtocolError("the card's certificate is not valid DER X.509") from exc
    if version is not x509.Version.v3:
        raise CardProtocolError("the card's certificate is not an X.509 v3 certificate")
    if serial_number <= 0:
        raise CardProtocolError("the card's certificate has a serial number that is not positive")
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CardProtocolError("the card's certificate does not hold an RSA-2048 key")
    return CardCertificate(certificate, der, issuer, issuer_der, serial_number, not_before, not_after, public_key)


def _validity_of(anchor: x509.Certificate) -> tuple[datetime, datetime]:
    return anchor.not_valid_before_utc, anchor.not_valid_after_utc


@dataclass(frozen=True)
class TrustStore:
    """Issuing CAs accepted for one mode, each with the CRL it signed."""

    anchors: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]

    def __post_init__(self) -> None:
        if not self.anchors:
            raise ValueError("a trust store needs at least one issuing CA certificate")
        for anchor in self.anchors:
            if self._crl_of(anchor) is None:
                raise ValueError(f"no CRL signed by the issuing CA {anchor.subject.rfc4514_string()}")

    @classmethod
    def from_files(cls, anchor_paths: Iterable[str], crl_paths: Iterable[str]) -> TrustStore:
        """Load PEM or DER CA certificates and CRLs (the election package's files)."""
        anchors = tuple(_load_certificate(_read(path)) for path in anchor_paths)
        crls = tuple(_load_crl(_read(path)) for path in crl_paths)
        return cls(anchors, crls)

    def validate(self, certificate_der: bytes, now: datetime) -> x509.Certificate:
        """Return the parsed certificate if it is trusted at `now`; raise why not otherwise."""
        return self.check(certificate_der, now).certificate

    def check(self, certificate_der: bytes, now: datetime) -> CardCertificate:
        """Like validate(), returning the eagerly parsed fields the authenticator needs.

        Every failure is a CardError: a card's certificate is input from outside, and nothing
        it holds may surface as any other exception (the booth would not know the card).
        """
        parsed = parse_card_certificate(certificate_der)
        issuer = self._issuer_of(parsed)
        for not_before, not_after in ((parsed.not_before, parsed.not_after), _validity_of(issuer)):
            if not not_before <= now <= not_after:
                raise CertificateExpired()
        crl = self._crl_of(issuer)
        assert crl is not None  # guaranteed by __post_init__
        if not crl_is_fresh(crl, now):
            log.error("the CRL of %s is not fresh at %s: no card of that CA can be checked",
                      issuer.subject.rfc4514_string(), now.isoformat())  # fmt: skip
            raise RevocationListStale()
        if crl.get_revoked_certificate_by_serial_number(parsed.serial_number) is not None:
            raise CardRevoked()
        if parsed.public_key.key_size < MIN_RSA_BITS:
            raise CardProtocolError("the card's certificate does not hold an RSA-2048 key")
        return parsed

    def require_fresh(self, now: datetime) -> None:
        """Every CA's CRL is fresh at ``now``, else RevocationListStale (for "sign" mode, whose
        certificate, and so its issuer, can be read only after the password)."""
        for anchor in self.anchors:
            crl = self._crl_of(anchor)
            if crl is None or not crl_is_fresh(crl, now):
                log.error("the CRL of %s is not fresh at %s", anchor.subject.rfc4514_string(), now.isoformat())
                raise RevocationListStale()

    def _issuer_of(self, parsed: CardCertificate) -> x509.Certificate:
        for anchor in self.anchors:
            if anchor.subject != parsed.issuer:
                continue
            try:
                parsed.certificate.verify_directly_issued_by(anchor)
            except (*PARSE_ERRORS, InvalidSignature):
                log.info("certificate names a trusted issuer but its signature does not verify")
                continue
            return anchor
        raise UnknownIssuer()

    def _crl_of(self, anchor: x509.Certificate) -> x509.CertificateRevocationList | None:
        """The newest CRL this CA signed (None if it signed none)."""
        key = anchor.public_key()
        mine = [crl for crl in self.crls if crl.issuer == anchor.subject and crl.is_signature_valid(key)]  # type: ignore[arg-type]
        return max(mine, key=lambda crl: crl.last_update_utc, default=None)


def crl_is_fresh(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    """``this_update <= now < next_update`` (a CRL without a next update is never fresh), as
    the roll judges it (infra/jpki.py): a booth never passes a card the roll would refuse."""
    next_update = crl.next_update_utc
    return next_update is not None and crl.last_update_utc <= now < next_update


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _load_certificate(raw: bytes) -> x509.Certificate:
    if raw.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


def _load_crl(raw: bytes) -> x509.CertificateRevocationList:
    if raw.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(raw)
    return x509.load_der_x509_crl(raw)
