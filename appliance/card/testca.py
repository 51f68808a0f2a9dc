"""A test JPKI certificate authority for build machines, training and demos.

It mimics J-LIS's structure: one CA for user-authentication certificates, one for signing
certificates; every issued voter card gets an RSA-2048 key and certificate from each, a 4-digit
PIN and a 6-16 character password, written as one card file that the virtual card serves.
Never use it for a real election: the card files hold private keys in the clear.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.card.authenticator import AuthMode
from appliance.card.trust import TrustStore
from appliance.card.voter_key import voter_key_of
from infra.files import private_pem, write_private

CARD_FORMAT = "jpki-virtual-card/v1"
ROLL_FORMAT = "polling-station/voter-keys/v1"
# OIDs under which JPKI signing certificates carry the basic attributes (jpki/myna).
JPKI_ATTRIBUTE_OID = {
    "name": x509.ObjectIdentifier("1.2.392.200149.8.5.5.1"),
    "name_kana": x509.ObjectIdentifier("1.2.392.200149.8.5.5.2"),
    "sex": x509.ObjectIdentifier("1.2.392.200149.8.5.5.3"),
    "birth_date": x509.ObjectIdentifier("1.2.392.200149.8.5.5.4"),
    "address": x509.ObjectIdentifier("1.2.392.200149.8.5.5.5"),
}
CA_OU = {
    AuthMode.AUTH: "JPKI for user authentication (TEST)",
    AuthMode.SIGN: "JPKI for digital signature (TEST)",
}


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class CardCredential:
    """One of the card's two key pairs with its certificate and the secret that unlocks it."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    secret: str

    def to_json(self) -> dict[str, str]:
        return {
            "certificate": _cert_pem(self.certificate),
            "private_key": private_pem(self.private_key).decode(),
            "secret": self.secret,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> CardCredential:
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("card file private key is not RSA")
        return cls(x509.load_pem_x509_certificate(data["certificate"].encode()), key, data["secret"])


@dataclass(frozen=True)
class CardFile:
    """Everything a virtual JPKI card holds (format documented in docs/card-protocol.md)."""

    card_id: str
    auth: CardCredential
    sign: CardCredential
    auth_ca_certificate: x509.Certificate
    sign_ca_certificate: x509.Certificate

    def credential(self, mode: AuthMode) -> CardCredential:
        return self.auth if mode is AuthMode.AUTH else self.sign

    def to_json(self) -> dict[str, object]:
        return {
            "format": CARD_FORMAT,
            "card_id": self.card_id,
            "auth": self.auth.to_json(),
            "sign": self.sign.to_json(),
            "auth_ca_certificate": _cert_pem(self.auth_ca_certificate),
            "sign_ca_certificate": _cert_pem(self.sign_ca_certificate),
        }

    @classmethod
    def from_json(cls, data: dict) -> CardFile:
        if data.get("format") != CARD_FORMAT:
            raise ValueError(f"not a {CARD_FORMAT} card file")
        return cls(
            data["card_id"],
            CardCredential.from_json(data["auth"]),
            CardCredential.from_json(data["sign"]),
            x509.load_pem_x509_certificate(data["auth_ca_certificate"].encode()),
            x509.load_pem_x509_certificate(data["sign_ca_certificate"].encode()),
        )

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_json(), indent=2).encode())

    @classmethod
    def load(cls, path: Path | str) -> CardFile:
        return cls.from_json(json.loads(Path(path).read_text()))

    def cloned(self) -> CardFile:
        """The same certificates on a card with fresh keys: what a forger could make."""
        return replace(
            self,
            auth=replace(self.auth, private_key=new_rsa_key()),
            sign=replace(self.sign, private_key=new_rsa_key()),
        )


def _opaque_id(length: int = 23) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _utf8_string_der(text: str) -> bytes:
    raw = text.encode()
    if len(raw) >= 128:
        raise ValueError("attribute too long for this test CA")
    return bytes((0x0C, len(raw))) + raw


class TestCa:
    """The CA directory: CA keys and certificates, issued card files, revocations, CRLs."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._ca: dict[AuthMode, tuple[x509.Certificate, rsa.RSAPrivateKey]] = {}
        for mode in AuthMode:
            cert = x509.load_pem_x509_certificate(self._ca_cert_path(mode).read_bytes())
            key = serialization.load_pem_private_key(
                (self.directory / f"{mode}-ca-key.pem").read_bytes(), password=None
            )
            assert isinstance(key, rsa.RSAPrivateKey)
            self._ca[mode] = (cert, key)

    @classmethod
    def create(cls, directory: Path, name: str = "JPKI Test", valid_days: int = 3650) -> TestCa:
        directory = Path(directory)
        (directory / "cards").mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        for mode in AuthMode:
            key = new_rsa_key()
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CA_OU[mode]),
                ]
            )
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=valid_days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                    critical=True,
                )
                .sign(key, hashes.SHA256())
            )
            (directory / f"{mode}-ca.pem").write_text(_cert_pem(cert))
            write_private(directory / f"{mode}-ca-key.pem", private_pem(key))
        (directory / "revoked.json").write_text(json.dumps({mode: [] for mode in AuthMode}))
        ca = cls(directory)
        ca.publish_crl()
        return ca

    def ca_certificate(self, mode: AuthMode) -> x509.Certificate:
        return self._ca[mode][0]

    def ca_private_key(self, mode: AuthMode) -> rsa.RSAPrivateKey:
        """The issuing key, for tests that sign hand-built (malformed) certificates with it."""
        return self._ca[mode][1]

    def _ca_cert_path(self, mode: AuthMode) -> Path:
        return self.directory / f"{mode}-ca.pem"

    def crl_path(self, mode: AuthMode) -> Path:
        return self.directory / f"{mode}-crl.pem"

    def card_path(self, card_id: str) -> Path:
        return self.directory / "cards" / f"{card_id}.json"

    def issue_card(
        self,
        *,
        pin: str | None = None,
        password: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        holder: dict[str, str] | None = None,
    ) -> CardFile:
        """Issue, save and return a card; personal data goes only into the signing cert."""
        now = datetime.now(UTC)
        not_before = not_before or now - timedelta(days=1)
        not_after = not_after or now + timedelta(days=5 * 365)
        holder = holder or {
            "name": "試験 太郎",
            "sex": "1",
            "birth_date": "19800101",
            "address": "東京都千代田区霞が関二丁目1番2号",
        }
        card_id = _opaque_id()
        pin = pin or f"{secrets.randbelow(10_000):04d}"
        password = password or _opaque_id(8)
        sign_names = [
            x509.OtherName(JPKI_ATTRIBUTE_OID[field], _utf8_string_der(value)) for field, value in holder.items()
        ]
        credentials = {}
        for mode, secret in ((AuthMode.AUTH, pin), (AuthMode.SIGN, password)):
            ca_cert, ca_key = self._ca[mode]
            key = new_rsa_key()
            builder = (
                x509.CertificateBuilder()
                .subject_name(
                    x509.Name(
                        [
                            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                            x509.NameAttribute(NameOID.COMMON_NAME, _opaque_id()),
                        ]
                    )
                )
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
            )
            if mode is AuthMode.AUTH:
                builder = builder.add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
                )
            else:
                builder = builder.add_extension(x509.SubjectAlternativeName(sign_names), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            credentials[mode] = CardCredential(cert, key, secret)
        card = CardFile(
            card_id,
            credentials[AuthMode.AUTH],
            credentials[AuthMode.SIGN],
            self.ca_certificate(AuthMode.AUTH),
            self.ca_certificate(AuthMode.SIGN),
        )
        card.save(self.card_path(card_id))
        return card

    def issued_cards(self) -> list[CardFile]:
        return [CardFile.load(path) for path in sorted((self.directory / "cards").glob("*.json"))]

    def revoke(self, card_id: str) -> None:
        """Revoke both certificates of a card (as when a card is reported lost)."""
        card = CardFile.load(self.card_path(card_id))
        revoked_path = self.directory / "revoked.json"
        revoked = json.loads(revoked_path.read_text())
        for mode in AuthMode:
            serial = str(card.credential(mode).certificate.serial_number)
            if serial not in revoked[mode]:
                revoked[mode].append(serial)
        revoked_path.write_text(json.dumps(revoked))
        self.publish_crl()

    def publish_crl(self, valid_days: int = 30) -> None:
        revoked = json.loads((self.directory / "revoked.json").read_text())
        now = datetime.now(UTC)
        for mode in AuthMode:
            ca_cert, ca_key = self._ca[mode]
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(ca_cert.subject)
                .last_update(now - timedelta(minutes=1))
                .next_update(now + timedelta(days=valid_days))
            )
            for serial in revoked[mode]:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial))
                    .revocation_date(now - timedelta(minutes=1))
                    .build()
                )
            crl = builder.sign(ca_key, hashes.SHA256())
            self.crl_path(mode).write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def trust_store(self, mode: AuthMode) -> TrustStore:
        return TrustStore.from_files([str(self._ca_cert_path(mode))], [str(self.crl_path(mode))])

    def roll(self, roll_salt: bytes, mode: AuthMode) -> dict[str, object]:
        """The voter keys of every issued card, sorted so the order reveals nothing."""
        keys = sorted(voter_key_of(roll_salt, card.credential(mode).certificate) for card in self.issued_cards())
        return {"format": ROLL_FORMAT, "mode": str(mode), "voter_keys": keys}


@click.group(help="Test JPKI certificate authority (build machines, training, demos only).")
def main() -> None:
    pass


@main.command("init", help="Create a CA in DIRECTORY (auth and sign CAs, empty CRLs).")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", default="JPKI Test", show_default=True)
def init_command(directory: Path, name: str) -> None:
    TestCa.create(directory, name)
    click.echo(f"created test CA in {directory}")


@main.command("issue", help="Issue voter cards; prints each card file with its PIN/password.")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--pin", help="4-digit auth PIN (random if omitted)")
@click.option("--password", help="6-16 character signing password (random if omitted)")
def issue_command(directory: Path, count: int, pin: str | None, password: str | None) -> None:
    ca = TestCa(directory)
    for _ in range(count):
        card = ca.issue_card(pin=pin, password=password)
        click.echo(f"{ca.card_path(card.card_id)}  PIN {card.auth.secret}  password {card.sign.secret}")


@main.command("revoke", help="Revoke a card's certificates and republish the CRLs.")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.argument("card_id")
def revoke_command(directory: Path, card_id: str) -> None:
    TestCa(directory).revoke(card_id)
    click.echo(f"revoked {card_id}")


@main.command("crl", help="Publish fresh CRLs (auth-crl.pem, sign-crl.pem).")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--valid-days", default=30, show_default=True, type=click.IntRange(1, 3650))
def crl_command(directory: Path, valid_days: int) -> None:
    TestCa(directory).publish_crl(valid_days)
    click.echo(f"published CRLs in {directory}")


@main.command("export-roll", help="Write the voter-key roll file for the issued cards.")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--salt", required=True, help="the election's roll salt, hex (>= 16 bytes)")
@click.option("--mode", type=click.Choice([m.value for m in AuthMode]), default="auth")
@click.option("--output", type=click.Path(path_type=Path), required=True)
def export_roll_command(directory: Path, salt: str, mode: str, output: Path) -> None:
    try:
        roll_salt = bytes.fromhex(salt)
    except ValueError as exc:
        raise click.BadParameter("the salt must be hex") from exc
    roll = TestCa(directory).roll(roll_salt, AuthMode(mode))
    output.write_text(json.dumps(roll, indent=2))
    click.echo(f"wrote {len(roll['voter_keys'])} voter keys to {output}")  # type: ignore[arg-type]
