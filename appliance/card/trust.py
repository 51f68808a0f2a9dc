"""Validation of a card's certificate against the provisioned issuing CAs and their CRLs.

A polling station is offline from J-LIS, so the issuing CA certificates and a CRL for each
are provisioned with the election package; a missing CRL is a configuration error found when
the trust store is built, not a card that silently passes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.card.errors import CardProtocolError, CardRevoked, CertificateExpired, UnknownIssuer

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048


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
        try:
            certificate = x509.load_der_x509_certificate(certificate_der)
        except ValueError as exc:
            raise CardProtocolError("the card's certificate is not valid DER X.509") from exc
        issuer = self._issuer_of(certificate)
        for cert in (certificate, issuer):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise CertificateExpired()
        crl = self._crl_of(issuer)
        assert crl is not None  # guaranteed by __post_init__
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            raise CardRevoked()
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise CardProtocolError("the card's certificate does not hold an RSA-2048 key")
        return certificate

    def _issuer_of(self, certificate: x509.Certificate) -> x509.Certificate:
        for anchor in self.anchors:
            if anchor.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(anchor)
            except (ValueError, TypeError, InvalidSignature):
                log.info("certificate names a trusted issuer but its signature does not verify")
                continue
            return anchor
        raise UnknownIssuer()

    def _crl_of(self, anchor: x509.Certificate) -> x509.CertificateRevocationList | None:
        for crl in self.crls:
            if crl.issuer == anchor.subject and crl.is_signature_valid(anchor.public_key()):
                return crl
        return None


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
