"""The central office's directory: its CA, its broker, its election package and its store.

``gateway init`` builds it once; ``gateway register-station`` adds a station. Layout::

    central.json           host, port of the central broker; database URL ("" = gateway.db)
    ca/                    the central CA (infra.pki.StationCA named "central")
    certs/<cn>.pem         broker, gateway workers (gateway-1, …), hubs (CN = station id)
    keys/<cn>.key          private keys of the broker and the gateway workers (never a hub's)
    election/              manifest.json, context.json, trustees/ (the election package)
    broker/                mosquitto.conf, acl (generated)
    gateway.db             the SQLite store, unless central.json names a PostgreSQL URL

Registering a station takes the station's registration (``station-hub registration``: its
ledger and roll keys, every terminal key its CA vouches for, and a certificate request for the
hub's central-link key) and answers with a link grant (the central CA, the hub's certificate,
the broker address) that ``station-hub link`` installs. The centre never sees a station key.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from election.context import ElectionContext
from election.encoding import check_version, parse_json, strict_int
from election.errors import ElectionError
from election.keyceremony import TrusteePublic
from election.manifest import Manifest
from election.record import CONTEXT, MANIFEST, TRUSTEES
from election.stations import check_station_id
from gateway.errors import GatewayError
from gateway.store import Store
from infra.certdir import BROKER_NAME, CertificateDirectory, mosquitto_config
from infra.files import private_pem, write_private
from infra.pki import PkiError, Role, StationCA, certificate_pem, write_certificate
from protocol.forwarding import MAX_MESSAGE_BYTES, TOPIC_ROOT
from protocol.municipal import ACL_PATTERNS, MUNICIPAL_ROLL_NAME, RELAY_SUFFIX, acl_municipal_roll
from protocol.registration import LinkGrant, StationRegistration

CENTRAL_VERSION = 1
MESSAGE_SIZE_LIMIT = MAX_MESSAGE_BYTES + 4096
"""The central broker drops larger PUBLISH payloads (a forwarding batch is the largest)."""
CENTRAL_CA_NAME = "central"
WORKER_PREFIX = "gateway-"


def worker_name(index: int) -> str:
    return f"{WORKER_PREFIX}{index}"


@dataclass(frozen=True)
class CentralElection:
    manifest: Manifest
    context: ElectionContext
    trustees: tuple[TrusteePublic, ...]


def _read(path: Path, what: str) -> Any:
    try:
        return parse_json(path.read_bytes(), max_size=16_000_000)
    except OSError as error:
        raise GatewayError(f"cannot read {what} {path}: {error.strerror}") from error
    except ElectionError as error:
        raise GatewayError(f"{what} {path}: {error}") from error


def load_election_package(directory: Path) -> CentralElection:
    try:
        manifest = Manifest.from_json(_read(directory / MANIFEST, "manifest"))
        context = ElectionContext.from_json(_read(directory / CONTEXT, "context"))
        trustees = tuple(
            TrusteePublic.from_json(_read(directory / TRUSTEES / f"{tid}.json", "trustee"))
            for tid in context.trustee_ids
        )
    except ElectionError as error:
        raise GatewayError(f"election package {directory}: {error}") from error
    if context.base_hash != manifest.base_hash:
        raise GatewayError(f"election package {directory}: the context is for another manifest")
    return CentralElection(manifest, context, trustees)


@dataclass(frozen=True)
class Central(CertificateDirectory):
    directory: Path
    host: str
    port: int
    database: str

    @property
    def broker_config(self) -> Path:
        return self.directory / "broker" / "mosquitto.conf"

    @property
    def election_dir(self) -> Path:
        return self.directory / "election"

    @property
    def database_target(self) -> str:
        return self.database or str(self.directory / "gateway.db")

    @classmethod
    def open(cls, directory: Path) -> Central:
        directory = Path(directory)
        data = _read(directory / "central.json", "central office configuration")
        fields = {"version", "host", "port", "database"}
        where = f"{directory}/central.json"
        if not isinstance(data, dict) or set(data) != fields:
            raise GatewayError(f"{where}: expected version 1 with {sorted(fields)}")
        try:
            check_version(data, CENTRAL_VERSION, where)  # "version": true is not 1
            port = strict_int(data["port"], f"{where}: port", minimum=1, maximum=65535)
        except ElectionError as error:
            raise GatewayError(str(error)) from error
        host, database = data["host"], data["database"]
        if not (isinstance(host, str) and 0 < len(host) <= 253 and host.isascii() and host.isprintable()):
            raise GatewayError(f"{where}: host must be a host name or address")
        if not isinstance(database, str):
            raise GatewayError(f'{where}: database must be a text ("" for SQLite)')
        return cls(directory, host, port, database)

    def election(self) -> CentralElection:
        return load_election_package(self.election_dir)

    def store(self, database: str | None = None) -> Store:
        return Store(database or self.database_target, self.election().manifest)

    def issue(self, name: str, role: Role, *, hostnames: tuple[str, ...] = ()) -> None:
        """A certificate and key from the central CA (Ed25519 for clients, P-256 for the broker)."""
        ca = StationCA.load(self.directory / "ca")
        key: Any = (
            ec.generate_private_key(ec.SECP256R1()) if role is Role.BROKER else ed25519.Ed25519PrivateKey.generate()
        )
        certificate = ca.issue(key.public_key(), name, role, hostnames=hostnames)
        (self.directory / "certs").mkdir(exist_ok=True)
        write_certificate(self.cert_file(name), certificate)
        write_private(self.key_file(name), private_pem(key))

    def ensure_worker(self, index: int) -> str:
        name = worker_name(index)
        if not self.cert_file(name).exists():
            self.issue(name, Role.OPERATOR)
        return name

    def acl(self) -> str:
        """Each hub writes only its own ``up`` topic and reads its own ``down`` topic (CN = %u)."""
        return "\n".join(
            [
                "# Generated by gateway: do not edit.",
                "# Hubs (user name = certificate CN = station id).",
                f"pattern write {TOPIC_ROOT}/%u/up",
                f"pattern read {TOPIC_ROOT}/%u/down",
                "# Station rolls of early/common stations (user name = <station>.roll), protocol/municipal.py.",
                *ACL_PATTERNS,
                "",
            ]
        )

    def worker_acl(self, names: list[str]) -> str:
        lines = [self.acl()]
        for name in names:
            lines += [f"user {name}", f"topic read {TOPIC_ROOT}/+/up", f"topic write {TOPIC_ROOT}/+/down", ""]
        rolls = sorted(path.stem for path in (self.directory / "certs").glob(f"{MUNICIPAL_ROLL_NAME}-*.pem"))
        for name in rolls:  # the municipal roll's processes (gateway/municipal_roll.py)
            lines += [*acl_municipal_roll(name), ""]
        return "\n".join(lines)

    def mosquitto_config(self) -> str:
        """Exactly a station broker's hardened configuration: the central directory has the
        same layout (``ca/``, ``certs/broker.pem``, ``keys/broker.key``, ``broker/acl``)."""
        return mosquitto_config(self, self.host, self.port, message_size_limit=MESSAGE_SIZE_LIMIT)

    def write_broker_files(self, workers: int) -> None:
        """(Re)generate the broker config and the ACL for ``workers`` gateway workers."""
        names = [self.ensure_worker(i) for i in range(1, workers + 1)]
        (self.directory / "broker").mkdir(exist_ok=True)
        (self.directory / "broker" / "acl").write_text(self.worker_acl(names))
        self.broker_config.write_text(self.mosquitto_config())


def init_central(
    directory: Path,
    election_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8884,
    database: str = "",
    workers: int = 2,
) -> Central:
    directory = Path(directory)
    if (directory / "central.json").exists():
        raise GatewayError(f"{directory} already holds a central office")
    load_election_package(Path(election_dir))
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(election_dir) / TRUSTEES, directory / "election" / TRUSTEES)
    for name in (MANIFEST, CONTEXT):
        shutil.copyfile(Path(election_dir) / name, directory / "election" / name)
    try:
        StationCA.create(directory / "ca", CENTRAL_CA_NAME)
    except PkiError as error:
        raise GatewayError(str(error)) from error
    config = {"version": CENTRAL_VERSION, "host": host, "port": port, "database": database}
    (directory / "central.json").write_text(json.dumps(config, indent=1) + "\n")
    central = Central.open(directory)
    central.issue(BROKER_NAME, Role.BROKER, hostnames=(host, "localhost"))
    central.write_broker_files(workers)
    central.store().close()
    return central


def register_station(central: Central, payload: bytes) -> tuple[str, list[str], list[str], LinkGrant]:
    """Register (or refresh) a station from its registration; returns its id, the devices
    added, the station's own refusals, and the link grant to hand back to the hub."""
    try:
        registration = StationRegistration.decode(payload)
        station_id = check_station_id(registration.station_id)
        request = x509.load_pem_x509_csr(registration.link_request_pem)
    except (ElectionError, ValueError) as error:
        raise GatewayError(f"station registration: {error}") from error
    if (station_id.startswith((WORKER_PREFIX, MUNICIPAL_ROLL_NAME)) or station_id == BROKER_NAME
            or station_id.endswith(RELAY_SUFFIX)):  # fmt: skip
        raise GatewayError(f"station id {station_id} is reserved for the central office")
    if registration.base_hash != central.election().manifest.base_hash:
        raise GatewayError(f"station {station_id} is installed with another election")
    if not request.is_signature_valid:
        raise GatewayError(f"station {station_id}: the link request's signature does not verify")
    store = central.store()
    try:
        added = store.register_station(registration.keys, registration.devices)
    finally:
        store.close()
    try:
        certificate = StationCA.load(central.directory / "ca").issue(request.public_key(), station_id, Role.LEDGER)
    except PkiError as error:
        raise GatewayError(f"station {station_id}: {error}") from error
    write_certificate(central.cert_file(station_id), certificate)
    grant = LinkGrant(
        station_id, central.host, central.port, central.ca_file.read_bytes(), certificate_pem(certificate)
    )
    return station_id, added, list(registration.problems), grant
