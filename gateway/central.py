"""The central office's directory: its CA, its broker, its election package and its store.

``gateway init`` builds it once; ``gateway register-station`` adds a station. Layout::

    central.json           host, port of the central broker; database URL ("" = gateway.db)
    ca/                    the central CA (station_hub.pki.StationCA named "central")
    certs/<cn>.pem         broker, gateway workers (gateway-1, …), hubs (CN = station id)
    keys/<cn>.key          their private keys (a hub's key is also handed to the hub)
    election/              manifest.json, context.json, trustees/ (the election package)
    broker/                mosquitto.conf, acl (generated)
    gateway.db             the SQLite store, unless central.json names a PostgreSQL URL

Registering a station reads the station's public parts (ledger key from its ledger
certificate, roll key, every terminal certificate the station CA vouches for) and writes the
hub's forwarding credentials into the station directory (``central/``: the central CA, the
hub's certificate and key, the broker address) plus a ``forwarder`` certificate from the
station's own CA, with which the forwarder reads the ledger's signed statements.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from election.context import ElectionContext
from election.encoding import parse_json
from election.errors import ElectionError
from election.keyceremony import TrusteePublic
from election.manifest import Manifest
from election.record import CONTEXT, MANIFEST, TRUSTEES
from election.stations import StationKeys, check_station_id
from gateway.errors import GatewayError
from gateway.protocol import TOPIC_ROOT
from gateway.store import Store
from station_hub.errors import HubError
from station_hub.pki import PkiError, Role, StationCA, write_certificate
from station_hub.station import (
    BROKER_NAME,
    CertificateDirectory,
    DeviceDirectory,
    Station,
    _private_pem,
    _write_private,
)

CENTRAL_VERSION = 1
CENTRAL_CA_NAME = "central"
WORKER_PREFIX = "gateway-"
FORWARDER_NAME = "forwarder"
LINK_DIR = "central"
"""Inside a station directory: the hub's credentials for the central broker."""


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
        if not isinstance(data, dict) or set(data) != fields or data["version"] != CENTRAL_VERSION:
            raise GatewayError(f"{directory}/central.json: expected version 1 with {sorted(fields)}")
        return cls(directory, data["host"], data["port"], data["database"])

    def election(self) -> CentralElection:
        return load_election_package(self.election_dir)

    def store(self, database: str | None = None) -> Store:
        return Store(database or self.database_target, self.election().manifest.base_hash)

    def issue(self, name: str, role: Role, *, hostnames: tuple[str, ...] = ()) -> None:
        """A certificate and key from the central CA (Ed25519 for clients, P-256 for the broker)."""
        ca = StationCA.load(self.directory / "ca")
        key: Any = (
            ec.generate_private_key(ec.SECP256R1()) if role is Role.BROKER else ed25519.Ed25519PrivateKey.generate()
        )
        certificate = ca.issue(key.public_key(), name, role, hostnames=hostnames)
        (self.directory / "certs").mkdir(exist_ok=True)
        write_certificate(self.cert_file(name), certificate)
        _write_private(self.key_file(name), _private_pem(key))

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
                "",
            ]
        )

    def worker_acl(self, names: list[str]) -> str:
        lines = [self.acl()]
        for name in names:
            lines += [f"user {name}", f"topic read {TOPIC_ROOT}/+/up", f"topic write {TOPIC_ROOT}/+/down", ""]
        return "\n".join(lines)

    def mosquitto_config(self) -> str:
        """Exactly a station broker's hardened configuration: the central directory has the
        same layout (``ca/``, ``certs/broker.pem``, ``keys/broker.key``, ``broker/acl``)."""
        return Station.mosquitto_config(self)  # type: ignore[arg-type]

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


@dataclass(frozen=True)
class CentralLink:
    """A hub's view of the central broker (``STATION_DIR/central/``), shaped like a Station for
    :func:`station_hub.mqtt.make_client` and :func:`station_hub.mqtt.connect`."""

    directory: Path
    station_id: str
    host: str
    port: int

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def cert_file(self, name: str) -> Path:
        return self.directory / "hub.pem"

    def key_file(self, name: str) -> Path:
        return self.directory / "hub.key"

    @classmethod
    def open(cls, station_dir: Path) -> CentralLink:
        directory = Path(station_dir) / LINK_DIR
        data = _read(directory / "link.json", "central link")
        if not isinstance(data, dict) or set(data) != {"version", "station_id", "host", "port"}:
            raise GatewayError(f"{directory}/link.json: expected version, station_id, host and port")
        return cls(directory, data["station_id"], data["host"], data["port"])


def station_keys(station: Station) -> StationKeys:
    ledger_key = station.certificate("ledger").public_key()
    if not isinstance(ledger_key, ed25519.Ed25519PublicKey):
        raise GatewayError(f"station {station.station_id}: the ledger certificate does not carry an Ed25519 key")
    return StationKeys(station.station_id, ledger_key, station.token_public_key())


def station_devices(station: Station) -> tuple[dict[str, ed25519.Ed25519PublicKey], list[str]]:
    """Every terminal key the station CA vouches for (valid, not revoked), and the refusals."""
    directory = DeviceDirectory(station)
    devices, problems = {}, []
    for terminal in station.terminals:
        key = directory.lookup(terminal)
        if isinstance(key, str):
            problems.append(f"terminal {terminal}: {key}")
        else:
            devices[terminal] = key
    return devices, problems


def register_station(central: Central, station_dir: Path) -> tuple[str, list[str], list[str]]:
    """Register (or refresh) a station; returns its id, the devices added and any refusals."""
    try:
        station = Station.open(Path(station_dir))
        check_station_id(station.station_id)
        if station.station_id.startswith(WORKER_PREFIX) or station.station_id == BROKER_NAME:
            raise GatewayError(f"station id {station.station_id} is reserved for the central office")
        if station.election().manifest.base_hash != central.election().manifest.base_hash:
            raise GatewayError(f"station {station.station_id} is installed with another election")
        keys = station_keys(station)
        devices, problems = station_devices(station)
    except (HubError, PkiError, ElectionError) as error:
        raise GatewayError(f"station {station_dir}: {error}") from error
    store = central.store()
    try:
        added = store.register_station(keys, devices)
    finally:
        store.close()
    _write_link(central, station)
    return station.station_id, added, problems


def _write_link(central: Central, station: Station) -> None:
    link = station.directory / LINK_DIR
    link.mkdir(exist_ok=True)
    if not central.cert_file(station.station_id).exists():
        central.issue(station.station_id, Role.LEDGER)
    shutil.copyfile(central.ca_file, link / "ca.pem")
    shutil.copyfile(central.cert_file(station.station_id), link / "hub.pem")
    _write_private(link / "hub.key", central.key_file(station.station_id).read_bytes())
    data = {"version": CENTRAL_VERSION, "station_id": station.station_id, "host": central.host, "port": central.port}
    (link / "link.json").write_text(json.dumps(data, indent=1) + "\n")
    if not station.cert_file(FORWARDER_NAME).exists():
        ca = StationCA.load(station.directory / "ca")
        key = ed25519.Ed25519PrivateKey.generate()
        write_certificate(station.cert_file(FORWARDER_NAME), ca.issue(key.public_key(), FORWARDER_NAME, Role.LEDGER))
        _write_private(station.key_file(FORWARDER_NAME), _private_pem(key))
