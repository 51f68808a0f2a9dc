"""A station directory: configuration, certificates, keys, election package and databases.

``station-hub init`` builds it once; every service and the CLI open it with
:meth:`Station.open`. Layout (see docs/ledger.md):

    station.json             station id, broker host/port, terminals, operators
    ca/                      the station CA (infra.pki): ca.pem, ca.key, crl.pem
    certs/<cn>.pem           every certificate issued (public), by CN
    keys/<cn>.key            private keys of the hub's own identities (never a terminal's,
                             except on a training station made with training_terminal_keys)
    election/                manifest.json, context.json: the installed election package
    broker/                  mosquitto.conf, acl (generated; rewritten by `station-hub revoke`)
    ledger/ledger.db         the ledger's SQLite database (only the ledger opens it)
    roll/roll.db             the roll's SQLite database (only the roll opens it)
    roll/token.key           the roll's RSA blind-signing key (PKCS#8, encrypted with the roll
                             passphrase, which is never stored in this directory)
    roll/salt.key            the roll salt (hex): only the roll derives voter keys
    jpki/anchors/, jpki/crls/  JPKI issuing CAs and their CRLs (the roll verifies cards with them)
    public/token.pem         the roll's public key (terminals blind with it, the ledger verifies)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from election.ballot import check_device_id
from election.chain import genesis_hash
from election.encoding import check_version, strict_int
from election.errors import FormatError
from election.ids import check_station_id
from infra.certdir import BROKER_NAME, CertificateDirectory, mosquitto_config, read_json
from infra.election_package import ElectionPackage
from infra.errors import SiteError
from infra.files import private_pem, write_atomically, write_private
from infra.pki import (
    CertificateRevoked,
    PkiError,
    Role,
    StationCA,
    common_name,
    load_certificate,
    load_crl,
    verify_certificate,
    write_certificate,
)
from protocol.topics import FORWARDER_NAME, SERVICE_NAMES, Topics

STATION_VERSION = 1
MESSAGE_SIZE_LIMIT = 512 * 1024
"""The station broker drops larger PUBLISH payloads: twice the largest ballot (a spoiled ballot with its opening)."""
TOKEN_KEY_BITS = 3072
ROLL_PASSPHRASE_ENV = "STATION_ROLL_PASSPHRASE"
"""The roll's token key is sealed with this passphrase (given to the roll at start, never stored)."""


@dataclass(frozen=True)
class Station(CertificateDirectory):
    directory: Path
    station_id: str
    host: str
    port: int
    terminals: tuple[str, ...]
    operators: tuple[str, ...]

    # --- paths ---------------------------------------------------------------------------

    @property
    def ledger_db(self) -> Path:
        return self.directory / "ledger" / "ledger.db"

    @property
    def roll_db(self) -> Path:
        return self.directory / "roll" / "roll.db"

    @property
    def token_key_file(self) -> Path:
        return self.directory / "roll" / "token.key"

    @property
    def roll_salt_file(self) -> Path:
        return self.directory / "roll" / "salt.key"

    @property
    def jpki_dir(self) -> Path:
        return self.directory / "jpki"

    @property
    def acl_file(self) -> Path:
        return self.directory / "broker" / "acl"

    def roll_salt(self) -> bytes:
        try:
            return bytes.fromhex(self.roll_salt_file.read_text().strip())
        except (OSError, ValueError) as error:
            raise SiteError(f"cannot read the roll salt {self.roll_salt_file}: {error}") from error

    @property
    def token_public_file(self) -> Path:
        return self.directory / "public" / "token.pem"

    @property
    def broker_config(self) -> Path:
        return self.directory / "broker" / "mosquitto.conf"

    @property
    def topics(self) -> Topics:
        return Topics(self.station_id)

    # --- loading -------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path) -> Station:
        directory = Path(directory)
        data = read_json(directory / "station.json", "station configuration")
        fields = {"version", "station_id", "host", "port", "terminals", "operators"}
        where = f"{directory}/station.json"
        if not isinstance(data, dict) or set(data) != fields:
            raise SiteError(f"{where}: expected version 1 with {sorted(fields)}")
        host, terminals, operators = data["host"], data["terminals"], data["operators"]
        try:
            check_version(data, STATION_VERSION, where)  # "version": true is not 1
            station_id = check_station_id(data["station_id"], f"{where}: station_id")
            port = strict_int(data["port"], f"{where}: port", minimum=1, maximum=65535)
            if not (isinstance(terminals, list) and isinstance(operators, list)):
                raise FormatError(f"{where}: terminals and operators must be lists")
            for name in (*terminals, *operators):
                check_device_id(name, f"{where}: terminal or operator id")
        except FormatError as error:
            raise SiteError(str(error)) from error
        if not (isinstance(host, str) and 0 < len(host) <= 253 and host.isascii() and host.isprintable()):
            raise SiteError(f"{where}: host must be a host name or address")
        return cls(directory, station_id, host, port, tuple(terminals), tuple(operators))

    def election(self) -> ElectionPackage:
        return ElectionPackage.load(self.directory / "election")

    @property
    def genesis(self) -> bytes:
        return genesis_hash(self.election().manifest.base_hash, self.station_id)

    def token_public_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(self.token_public_file.read_bytes())
        if not isinstance(key, rsa.RSAPublicKey):
            raise SiteError(f"{self.token_public_file} is not an RSA public key")
        return key

    def token_private_key(self, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
        """The roll's blind-signing key; sealed keys need the passphrase (default: the
        ``STATION_ROLL_PASSPHRASE`` environment variable)."""
        if passphrase is None and os.environ.get(ROLL_PASSPHRASE_ENV):
            passphrase = os.environ[ROLL_PASSPHRASE_ENV].encode()
        data = self.token_key_file.read_bytes()
        try:
            key = serialization.load_pem_private_key(data, passphrase if b"ENCRYPTED" in data else None)
        except (TypeError, ValueError) as error:
            raise SiteError(
                f"{self.token_key_file}: the roll's token key is sealed; give the roll passphrase in "
                f"{ROLL_PASSPHRASE_ENV} ({error})"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SiteError(f"{self.token_key_file} is not an RSA private key")
        return key

    def signing_key(self, name: str) -> ed25519.Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self.key_file(name).read_bytes(), None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SiteError(f"{self.key_file(name)} is not an Ed25519 key")
        return key

    def certificate(self, name: str) -> x509.Certificate:
        return load_certificate(self.cert_file(name))

    def mosquitto_config(self, run_as: str | None = None) -> str:
        return mosquitto_config(self, self.host, self.port, message_size_limit=MESSAGE_SIZE_LIMIT, run_as=run_as)


class TrustedDeviceKeys(ed25519.Ed25519PublicKey):
    """Every key a terminal holds a valid certificate for, as one verifier: a signature by any of
    them verifies. ``public_bytes*`` give the newest key (the one the terminal signs with now)."""

    def __init__(self, keys: list[ed25519.Ed25519PublicKey]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self.keys = tuple(keys)

    def verify(self, signature: bytes, data: bytes) -> None:
        for key in self.keys:
            try:
                key.verify(signature, data)
                return
            except InvalidSignature:
                continue
        raise InvalidSignature()

    def public_bytes(self, encoding: serialization.Encoding, format: serialization.PublicFormat) -> bytes:
        return self.keys[-1].public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self.keys[-1].public_bytes_raw()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedDeviceKeys) and self.keys == other.keys

    def __hash__(self) -> int:
        return hash(tuple(key.public_bytes_raw() for key in self.keys))

    def __copy__(self) -> TrustedDeviceKeys:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TrustedDeviceKeys:
        return self


class DeviceDirectory:
    """Which terminal certificates the ledger accepts: every certificate the station CA issued
    for that terminal id (role terminal) that is in date and not revoked.

    Certificates are found in ``certs/<id>.pem`` (the latest) and ``certs/issued/<id>/<serial>.pem``
    (every one `station-hub enroll` issued). The directory re-reads them whenever the CRL, that
    file or that folder changes and when a certificate it relied on expires, so a terminal
    enrolled or revoked while the services run is accepted or refused on its next message,
    without a restart.
    """

    def __init__(self, station: Station) -> None:
        self._station = station
        self._ca = load_certificate(station.ca_file)
        self._crl_stamp: tuple[int, int] | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self._keys: dict[str, tuple[tuple[Any, ...], dt.datetime, ed25519.Ed25519PublicKey | str]] = {}

    @staticmethod
    def issued_dir(station: Station, device_id: str) -> Path:
        return station.directory / "certs" / "issued" / device_id

    def _refresh(self) -> None:
        stat = self._station.crl_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._crl_stamp:
            self._crl = load_crl(self._station.crl_file)
            self._crl_stamp = stamp
            self._keys.clear()

    def _stamp(self, device_id: str) -> tuple[Any, ...]:
        stamps: list[Any] = []
        for path in (self._station.cert_file(device_id), self.issued_dir(self._station, device_id)):
            try:
                stat = path.stat()
                stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def lookup(self, device_id: str) -> ed25519.Ed25519PublicKey | str:
        """The terminal's Ed25519 key(s), or the reason it is not acceptable."""
        self._refresh()
        stamp, now = self._stamp(device_id), dt.datetime.now(dt.UTC)
        cached = self._keys.get(device_id)
        if cached is None or cached[0] != stamp or now >= cached[1]:
            until, result = self._load(device_id, now)
            cached = self._keys[device_id] = (stamp, until, result)
        return cached[2]

    def _candidates(self, device_id: str) -> list[Path]:
        files = [self._station.cert_file(device_id)]
        folder = self.issued_dir(self._station, device_id)
        if folder.is_dir():
            files += sorted(folder.glob("*.pem"))
        return [path for path in files if path.is_file()]

    def _load(self, device_id: str, now: dt.datetime) -> tuple[dt.datetime, ed25519.Ed25519PublicKey | str]:
        later = now + dt.timedelta(minutes=1)  # re-check soon when nothing is valid yet
        files = self._candidates(device_id)
        if not files:
            return later, "unknown_device"
        valid: dict[int, x509.Certificate] = {}
        problems: list[PkiError] = []
        for path in files:
            try:
                certificate = load_certificate(path)
                if common_name(certificate) != device_id:
                    raise PkiError(f"{path.name} is not a certificate for {device_id}")
                verify_certificate(certificate, self._ca, crl=self._crl, role=Role.TERMINAL, at=now)
                if not isinstance(certificate.public_key(), ed25519.Ed25519PublicKey):
                    raise PkiError("the terminal certificate does not carry an Ed25519 key")
            except PkiError as error:
                problems.append(error)
                continue
            valid[certificate.serial_number] = certificate
        if not valid:
            if any(isinstance(p, CertificateRevoked) for p in problems):
                return later, "revoked_device"
            return later, f"unknown_device: {problems[0]}"
        newest_first = sorted(valid.values(), key=lambda c: c.not_valid_before_utc, reverse=True)
        keys: list[ed25519.Ed25519PublicKey] = []
        for certificate in reversed(newest_first):  # oldest first, the newest last
            key = certificate.public_key()
            assert isinstance(key, ed25519.Ed25519PublicKey)
            if all(key != k for k in keys):
                keys.append(key)
        until = min(c.not_valid_after_utc for c in valid.values())
        return until, keys[0] if len(keys) == 1 else TrustedDeviceKeys(keys)


def _issue(ca: StationCA, station_dir: Path, name: str, role: Role, key: Any, **kw: Any) -> None:
    certificate = ca.issue(key.public_key(), name, role, **kw)
    (station_dir / "certs").mkdir(parents=True, exist_ok=True)
    write_certificate(station_dir / "certs" / f"{name}.pem", certificate)
    write_private(station_dir / "keys" / f"{name}.key", private_pem(key))


def issue_terminal(station: Station, terminal_id: str) -> None:
    """Training only: a terminal certificate whose key the hub generates (demos, tests)."""
    ca = StationCA.load(station.directory / "ca")
    _issue(ca, station.directory, terminal_id, Role.TERMINAL, ed25519.Ed25519PrivateKey.generate())


def write_acl(station: Station) -> str:
    """(Re)write the broker ACL: every configured terminal and operator, minus revoked names."""
    revoked = StationCA.load(station.directory / "ca").revoked_names()
    acl = station.topics.acl(
        [t for t in station.terminals if t not in revoked],
        [o for o in station.operators if o not in revoked],
        forwarder=FORWARDER_NAME not in revoked,
    )
    write_atomically(station.acl_file, acl.encode())
    return acl


def install_jpki(station: Station, anchors: list[Path], crls: list[Path]) -> None:
    """Install the JPKI issuing CAs (if given) and replace the CRLs the roll checks cards with.

    The roll re-reads this directory when it changes: a fresh CRL takes effect at once."""
    for kind, files in (("anchors", anchors), ("crls", crls)):
        if not files:
            continue
        target = station.jpki_dir / kind
        target.mkdir(parents=True, exist_ok=True)
        for old in target.iterdir():
            if old.name not in {Path(f).name for f in files}:
                old.unlink()
        for file in files:
            write_atomically(target / Path(file).name, Path(file).read_bytes())


def init_station(
    directory: Path,
    station_id: str,
    election_dir: Path,
    terminals: list[str],
    operators: list[str],
    host: str = "127.0.0.1",
    port: int = 8883,
    *,
    training_terminal_keys: bool = True,
    roll_salt: bytes | None = None,
    roll_passphrase: bytes | None = None,
    jpki_anchors: list[Path] = (),  # type: ignore[assignment]
    jpki_crls: list[Path] = (),  # type: ignore[assignment]
) -> Station:
    """Create a station directory: CA, service certificates, broker config, election package.

    ``training_terminal_keys``: also make each terminal's key here (demos and tests only; a real
    terminal makes its own key and enrols, docs/provisioning.md). ``roll_passphrase`` seals the
    roll's token key (a training station without one keeps it in the clear). ``roll_salt``: the
    salt the municipality's voter-key roll was made with (random when None).
    """
    directory = Path(directory)
    if (directory / "station.json").exists():
        raise SiteError(f"{directory} already holds a station")
    names = [*terminals, *operators]
    for name in names:
        try:
            check_device_id(name, "terminal or operator id")
        except FormatError as error:
            raise SiteError(str(error)) from error
    reserved = set(names) & {*SERVICE_NAMES, BROKER_NAME, FORWARDER_NAME}
    if reserved or len(set(names)) != len(names):
        raise SiteError(f"ids must be unique and not {[*SERVICE_NAMES, BROKER_NAME, FORWARDER_NAME]}")
    if roll_salt is not None and len(roll_salt) < 16:
        raise SiteError("the roll salt must be at least 16 bytes")
    ElectionPackage.load(Path(election_dir))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "election").mkdir(exist_ok=True)
    for name in ("manifest.json", "context.json"):
        shutil.copyfile(Path(election_dir) / name, directory / "election" / name)
    try:
        ca = StationCA.create(directory / "ca", station_id)
        _issue(ca, directory, BROKER_NAME, Role.BROKER, ec.generate_private_key(ec.SECP256R1()),
               hostnames=(host, "localhost"))  # fmt: skip
        _issue(ca, directory, "ledger", Role.LEDGER, ed25519.Ed25519PrivateKey.generate())
        _issue(ca, directory, "roll", Role.ROLL, ec.generate_private_key(ec.SECP256R1()))
        if training_terminal_keys:
            for terminal in terminals:
                _issue(ca, directory, terminal, Role.TERMINAL, ed25519.Ed25519PrivateKey.generate())
        for operator in operators:
            _issue(ca, directory, operator, Role.OPERATOR, ec.generate_private_key(ec.SECP256R1()))
    except PkiError as error:
        raise SiteError(str(error)) from error
    token_key = rsa.generate_private_key(public_exponent=65537, key_size=TOKEN_KEY_BITS)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(roll_passphrase) if roll_passphrase else serialization.NoEncryption()
    )
    sealed = token_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private(directory / "roll" / "token.key", sealed)
    write_private(directory / "roll" / "salt.key", (roll_salt or secrets.token_bytes(32)).hex().encode())
    (directory / "public").mkdir(exist_ok=True)
    (directory / "public" / "token.pem").write_bytes(
        token_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (directory / "ledger").mkdir(exist_ok=True)
    config = {
        "version": STATION_VERSION,
        "station_id": station_id,
        "host": host,
        "port": port,
        "terminals": terminals,
        "operators": operators,
    }
    (directory / "station.json").write_text(json.dumps(config, indent=1) + "\n")
    station = Station.open(directory)
    (directory / "broker").mkdir(exist_ok=True)
    (station.jpki_dir / "anchors").mkdir(parents=True, exist_ok=True)
    (station.jpki_dir / "crls").mkdir(parents=True, exist_ok=True)
    install_jpki(station, list(jpki_anchors), list(jpki_crls))
    write_acl(station)
    station.broker_config.write_text(station.mosquitto_config())
    return station
