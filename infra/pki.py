"""The station certificate authority: one per polling station, kept on the station hub.

Every MQTT identity in the station (terminals, the ledger and roll services, operators, the
broker) holds a certificate from this CA; Mosquitto takes the certificate's CN as user name
and client id, so the CN *is* the identity in every ACL. The role travels in the certificate
too (subject OU plus the extended key usage) so a service can refuse a certificate issued for
another purpose.

Directory layout (see docs/provisioning.md):

    ca.pem       the CA certificate (public; copied to every device)
    ca.key       the CA private key, PKCS#8 PEM, mode 0600 — never leaves the hub
    index.json   every issued certificate: serial, CN, role, expiry, revocation
    crl.pem      the current certificate revocation list (rewritten on every revoke)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.files import private_pem, write_atomically, write_private

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
INDEX_FILE = "index.json"
CRL_FILE = "crl.pem"

CA_VALIDITY = dt.timedelta(days=5 * 365)
LEAF_VALIDITY = dt.timedelta(days=400)
CRL_VALIDITY = dt.timedelta(days=30)
CRL_RENEW_MARGIN = dt.timedelta(days=7)
"""A CRL is re-signed once it has less than this left: every relying party refuses every
certificate once the CRL it holds is past its next_update (Mosquitto does), so a station set
up weeks before polling day must never reach that date."""
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates are back-dated this much

PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class PkiError(Exception):
    """A CA or certificate problem, with a message a technician can act on."""


class CertificateRevoked(PkiError):
    """The certificate is on the CA's revocation list."""


class Role(StrEnum):
    """What a certificate may be used for in the station."""

    TERMINAL = "terminal"
    LEDGER = "ledger"
    ROLL = "roll"
    OPERATOR = "operator"
    BROKER = "broker"
    FORWARDER = "forwarder"
    STATION_MANAGER = "station_manager"
    """An official's card: the station manager (opens and closes the polls with a witness)."""
    WITNESS = "witness"
    """An official's card: a witness (投票立会人), the second signature on every polls command."""


OFFICIAL_ROLES = (Role.STATION_MANAGER, Role.WITNESS)
"""Roles of officials' cards (docs/operations.md, "Officials' cards"): certificates for a key on
a smartcard, never an MQTT identity (their extended key usage is document signing, not TLS)."""
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): what an official's card certificate is for."""


@dataclass(frozen=True)
class IssuedRecord:
    """One line of the CA's index."""

    serial: int
    common_name: str
    role: Role
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    write_atomically(Path(path), certificate_pem(certificate))


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM certificate, with a clear error when the file is missing or not one."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as error:
        raise PkiError(f"cannot read certificate {path}: {error.strerror}") from error
    except ValueError as error:
        raise PkiError(f"{path} is not a PEM certificate") from error


def common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise PkiError("certificate has no single common name")
    return str(names[0].value)


def role_of(certificate: x509.Certificate) -> Role:
    """The station role written into a certificate's subject (OU)."""
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    try:
        return Role(str(units[0].value))
    except (IndexError, ValueError) as error:
        raise PkiError(f"certificate {common_name(certificate)!r} carries no station role") from error


def _check_common_name(name: str) -> None:
    """CNs become MQTT user names and topic levels: keep them to a safe alphabet."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not name or len(name) > 64 or not set(name) <= allowed:
        raise PkiError(f"common name {name!r} must be 1-64 characters of letters, digits, '-', '_', '.'")


class StationCA:
    """A station CA living in a directory; create() once, load() afterwards."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.directory = directory
        self._key = key
        self.certificate = certificate

    @property
    def station_id(self) -> str:
        return common_name(self.certificate).removesuffix("-ca")

    @classmethod
    def create(cls, directory: Path, station_id: str) -> StationCA:
        """Make a new CA (ECDSA P-256, which every TLS stack accepts) in an empty directory."""
        _check_common_name(station_id)
        directory = Path(directory)
        if (directory / CA_KEY_FILE).exists() or (directory / CA_CERT_FILE).exists():
            raise PkiError(f"{directory} already holds a CA; load it instead of creating one")
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, station_id),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{station_id}-ca"),
            ]
        )
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(directory / CA_KEY_FILE, private_pem(key))
        write_atomically(directory / CA_CERT_FILE, certificate_pem(certificate))
        ca = cls(directory, key, certificate)
        ca._write_index([])
        ca.write_crl()
        return ca

    @classmethod
    def load(cls, directory: Path) -> StationCA:
        directory = Path(directory)
        certificate = load_certificate(directory / CA_CERT_FILE)
        try:
            key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
        except OSError as error:
            raise PkiError(f"cannot read CA key in {directory}: {error.strerror}") from error
        except (ValueError, TypeError) as error:
            raise PkiError(f"{directory / CA_KEY_FILE} is not an unencrypted PEM key") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != certificate.public_key().public_numbers()  # type: ignore[union-attr]
        ):
            raise PkiError(f"the key in {directory} does not belong to its CA certificate")
        return cls(directory, key, certificate)

    # --- issuing -------------------------------------------------------------------------

    def issue(
        self,
        public_key: PublicKey,
        name: str,
        role: Role,
        *,
        validity: dt.timedelta = LEAF_VALIDITY,
        hostnames: tuple[str, ...] = (),
        subject_extra: tuple[x509.NameAttribute, ...] = (),
    ) -> x509.Certificate:
        """Certify a public key as `name` in `role`; brokers also get their host names.

        ``subject_extra``: further subject attributes (an official's holder pseudonym)."""
        _check_common_name(name)
        role = Role(role)
        # The broker knows an identity only by its CN: one CN, one role, or an operator
        # certificate named like a terminal would get that terminal's topics.
        clash = [r for r in self.issued() if r.common_name == name and r.role is not role and r.revoked_at is None]
        if clash:
            raise PkiError(f"{name!r} already holds a {clash[0].role} certificate; one name has one role")
        strong_rsa = isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048
        if not (isinstance(public_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) or strong_rsa):
            raise PkiError("only Ed25519, ECDSA or RSA (>= 2048 bit) keys can be certified")
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if role is Role.BROKER else (ExtendedKeyUsageOID.CLIENT_AUTH)
        if role in OFFICIAL_ROLES:
            usage = DOCUMENT_SIGNING  # a card that signs polls commands, never a TLS client
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.station_id),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        *subject_extra,
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + validity, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False)
        )
        if hostnames:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(host) for host in hostnames]), False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        records = self.issued()
        records.append(IssuedRecord(certificate.serial_number, name, role, certificate.not_valid_after_utc))
        self._write_index(records)
        return certificate

    def issue_for_csr(self, csr_pem: bytes, role: Role) -> x509.Certificate:
        """Certify the key in a certificate signing request, under the CN it asks for."""
        try:
            request = x509.load_pem_x509_csr(csr_pem)
        except ValueError as error:
            raise PkiError("not a PEM certificate signing request") from error
        if not request.is_signature_valid:
            raise PkiError("the signing request's signature is invalid (key mismatch?)")
        names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1:
            raise PkiError("the signing request must carry exactly one common name")
        return self.issue(request.public_key(), str(names[0].value), role)  # type: ignore[arg-type]

    # --- revocation ----------------------------------------------------------------------

    def revoke(self, serial: int) -> x509.CertificateRevocationList:
        """Revoke a certificate by serial and rewrite crl.pem; revoking twice is harmless."""
        records = self.issued()
        for index, record in enumerate(records):
            if record.serial == serial:
                if record.revoked_at is None:
                    records[index] = IssuedRecord(
                        record.serial, record.common_name, record.role, record.not_after, _now()
                    )
                break
        else:
            raise PkiError(f"serial {serial:x} was not issued by this CA")
        self._write_index(records)
        return self.write_crl()

    def revoked_names(self) -> set[str]:
        """CNs with a revoked certificate and no later valid one (left out of the broker ACL)."""
        revoked, valid = set(), set()
        for record in self.issued():
            (revoked if record.revoked_at is not None else valid).add(record.common_name)
        return revoked - valid

    def revoke_name(self, name: str) -> list[int]:
        """Revoke every unrevoked certificate issued for ``name``; returns their serials."""
        serials = [r.serial for r in self.issued() if r.common_name == name and r.revoked_at is None]
        if not serials and name not in {r.common_name for r in self.issued()}:
            raise PkiError(f"no certificate was issued for {name!r}")
        for serial in serials:
            self.revoke(serial)
        return serials

    def crl(self) -> x509.CertificateRevocationList:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - CLOCK_SKEW)
            .next_update(now + CRL_VALIDITY)
        )
        for record in self.issued():
            if record.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(record.serial)
                    .revocation_date(record.revoked_at)
                    .build()
                )
        return builder.sign(self._key, hashes.SHA256())

    def write_crl(self) -> x509.CertificateRevocationList:
        crl = self.crl()
        write_atomically(self.directory / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    def renew_crl_if_due(self, margin: dt.timedelta = CRL_RENEW_MARGIN) -> x509.CertificateRevocationList | None:
        """Re-sign the CRL (same revocations, new dates) when less than ``margin`` is left or it
        cannot be read; returns the new CRL, or None when the current one is good for longer."""
        try:
            current = load_crl(self.directory / CRL_FILE)
        except PkiError:
            return self.write_crl()
        if current.next_update_utc is None or current.next_update_utc - _now() < margin:
            return self.write_crl()
        return None

    # --- index ---------------------------------------------------------------------------

    def issued(self) -> list[IssuedRecord]:
        """Every certificate this CA issued, oldest first."""
        path = self.directory / INDEX_FILE
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            return [
                IssuedRecord(
                    serial=int(entry["serial"], 16),
                    common_name=entry["common_name"],
                    role=Role(entry["role"]),
                    not_after=dt.datetime.fromisoformat(entry["not_after"]),
                    revoked_at=(dt.datetime.fromisoformat(entry["revoked_at"]) if entry["revoked_at"] else None),
                )
                for entry in entries
            ]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as error:
            raise PkiError(f"{path} is damaged: {error}") from error

    def _write_index(self, records: list[IssuedRecord]) -> None:
        entries = [
            {
                "serial": f"{record.serial:x}",
                "common_name": record.common_name,
                "role": record.role.value,
                "not_after": record.not_after.isoformat(),
                "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
            }
            for record in records
        ]
        write_atomically(self.directory / INDEX_FILE, json.dumps(entries, indent=1).encode())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def verify_certificate(
    certificate: x509.Certificate,
    ca_certificate: x509.Certificate,
    *,
    crl: x509.CertificateRevocationList | None = None,
    role: Role | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Check that `certificate` was issued by the CA, is in date, not revoked, in `role`.

    Raises PkiError naming the first problem found.
    """
    name = common_name(certificate)
    if certificate.issuer != ca_certificate.subject:
        raise PkiError(f"certificate {name!r} was not issued by {common_name(ca_certificate)!r}")
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (InvalidSignature, ValueError, TypeError) as error:
        raise PkiError(f"certificate {name!r} has no valid signature from the station CA") from error
    moment = at or _now()
    if moment < certificate.not_valid_before_utc:
        raise PkiError(f"certificate {name!r} is not valid before {certificate.not_valid_before_utc}")
    if moment > certificate.not_valid_after_utc:
        raise PkiError(f"certificate {name!r} expired on {certificate.not_valid_after_utc}")
    if crl is not None:
        if not crl.is_signature_valid(ca_certificate.public_key()):  # type: ignore[arg-type]
            raise PkiError("the revocation list is not signed by the station CA")
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            raise CertificateRevoked(f"certificate {name!r} has been revoked")
    if role is not None and role_of(certificate) is not role:
        raise PkiError(f"certificate {name!r} is for role {role_of(certificate)}, not {role}")


def load_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(Path(path).read_bytes())
    except OSError as error:
        raise PkiError(f"cannot read revocation list {path}: {error.strerror}") from error
    except ValueError as error:
        raise PkiError(f"{path} is not a PEM revocation list") from error
