"""A station directory: configuration, certificates, keys, election package and databases.

``station-hub init`` builds it once; every service and the CLI open it with
:meth:`Station.open`. Layout (see docs/ledger.md):

    station.json             station id, broker host/port, terminals, operators
    ca/                      the station CA (infra.pki): ca.pem, ca.key, crl.pem
    certs/<cn>.pem           every certificate issued (public), by CN
    keys/<cn>.key            private keys generated at init (terminals get theirs by flash.sh)
    election/                manifest.json, context.json: the installed election package
    broker/                  mosquitto.conf, acl (generated)
    ledger/ledger.db         the ledger's SQLite database (only the ledger opens it)
    roll/roll.db             the roll's SQLite database (only the roll opens it)
    roll/token.key           the roll's RSA blind-signing key
    public/token.pem         the roll's public key (terminals blind with it, the ledger verifies)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
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
from infra.files import private_pem, write_private
from infra.pki import (
    CertificateRevoked,
    PkiError,
    Role,
    StationCA,
    load_certificate,
    load_crl,
    verify_certificate,
    write_certificate,
)
from protocol.topics import SERVICE_NAMES, Topics

STATION_VERSION = 1
MESSAGE_SIZE_LIMIT = 512 * 1024
"""The station broker drops larger PUBLISH payloads: twice the largest ballot (a spoiled ballot with its opening)."""
TOKEN_KEY_BITS = 3072


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

    def token_private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.token_key_file.read_bytes(), None)
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


class DeviceDirectory:
    """Which terminal certificates the ledger accepts: issued by the station CA, not revoked.

    Re-reads the CRL whenever its file changes, so revoking a terminal takes effect on its
    next ballot even while it stays connected to the broker.
    """

    def __init__(self, station: Station) -> None:
        self._station = station
        self._ca = load_certificate(station.ca_file)
        self._crl_stamp: tuple[int, int] | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self._keys: dict[str, ed25519.Ed25519PublicKey | str] = {}

    def _refresh(self) -> None:
        stat = self._station.crl_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._crl_stamp:
            self._crl = load_crl(self._station.crl_file)
            self._crl_stamp = stamp
            self._keys.clear()

    def lookup(self, device_id: str) -> ed25519.Ed25519PublicKey | str:
        """The terminal's Ed25519 key, or the reason it is not acceptable."""
        self._refresh()
        if device_id not in self._keys:
            self._keys[device_id] = self._load(device_id)
        return self._keys[device_id]

    def _load(self, device_id: str) -> ed25519.Ed25519PublicKey | str:
        path = self._station.cert_file(device_id)
        if not path.is_file():
            return "unknown_device"
        try:
            certificate = load_certificate(path)
            verify_certificate(certificate, self._ca, crl=self._crl, role=Role.TERMINAL)
        except PkiError as error:
            return "revoked_device" if isinstance(error, CertificateRevoked) else f"unknown_device: {error}"
        key = certificate.public_key()
        if not isinstance(key, ed25519.Ed25519PublicKey):
            return "unknown_device: the terminal certificate does not carry an Ed25519 key"
        return key


def _issue(ca: StationCA, station_dir: Path, name: str, role: Role, key: Any, **kw: Any) -> None:
    certificate = ca.issue(key.public_key(), name, role, **kw)
    (station_dir / "certs").mkdir(parents=True, exist_ok=True)
    write_certificate(station_dir / "certs" / f"{name}.pem", certificate)
    write_private(station_dir / "keys" / f"{name}.key", private_pem(key))


def issue_terminal(station: Station, terminal_id: str) -> None:
    """Certificate for a terminal whose key the hub generates (demos, tests, training)."""
    ca = StationCA.load(station.directory / "ca")
    _issue(ca, station.directory, terminal_id, Role.TERMINAL, ed25519.Ed25519PrivateKey.generate())


def init_station(
    directory: Path,
    station_id: str,
    election_dir: Path,
    terminals: list[str],
    operators: list[str],
    host: str = "127.0.0.1",
    port: int = 8883,
) -> Station:
    """Create a station directory: CA, every certificate, broker config, election package."""
    directory = Path(directory)
    if (directory / "station.json").exists():
        raise SiteError(f"{directory} already holds a station")
    names = [*terminals, *operators]
    for name in names:
        try:
            check_device_id(name, "terminal or operator id")
        except FormatError as error:
            raise SiteError(str(error)) from error
    reserved = set(names) & {*SERVICE_NAMES, BROKER_NAME}
    if reserved or len(set(names)) != len(names):
        raise SiteError(f"ids must be unique and not {[*SERVICE_NAMES, BROKER_NAME]}")
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
        for terminal in terminals:
            _issue(ca, directory, terminal, Role.TERMINAL, ed25519.Ed25519PrivateKey.generate())
        for operator in operators:
            _issue(ca, directory, operator, Role.OPERATOR, ec.generate_private_key(ec.SECP256R1()))
    except PkiError as error:
        raise SiteError(str(error)) from error
    token_key = rsa.generate_private_key(public_exponent=65537, key_size=TOKEN_KEY_BITS)
    write_private(directory / "roll" / "token.key", private_pem(token_key))
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
    (directory / "broker" / "acl").write_text(station.topics.acl(operators))
    station.broker_config.write_text(station.mosquitto_config())
    return station
