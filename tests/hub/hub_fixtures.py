"""Helpers shared by the hub tests (imported by conftest and the test modules)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from appliance.card.authenticator import AuthMode
from appliance.card.testca import CardFile, TestCa
from election.chain import ChainEntry
from election.manifest import sample_manifest
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from infra.broker import free_port
from station_hub.ledger_service import LedgerService
from station_hub.ledger_store import LedgerStore
from station_hub.monitor import MonitorLink, MonitorState
from station_hub.roll_service import RollService
from station_hub.station import Station

STATION_ID = "st-1"
TERMINALS = ["t1", "t2"]
VOTERS = 12


def write_election(directory: Path, election_id: str = "sample") -> Path:
    manifest = sample_manifest(contests=2, selections=3, limit=1)
    data = manifest.to_json()
    data["election_id"] = election_id
    manifest = type(manifest).from_json(data)
    _trustees, publics, context = ceremony(manifest, 3, 2)
    write_election_package(RecordWriter(directory), manifest, context, publics)
    return directory


def copy_station(template: Path, target: Path) -> Station:
    shutil.copytree(template, target)
    config = json.loads((target / "station.json").read_text())
    config["port"] = free_port()
    (target / "station.json").write_text(json.dumps(config))
    station = Station.open(target)
    station.broker_config.write_text(station.mosquitto_config())
    return station


@dataclass(frozen=True)
class SoftCard:
    """A test voter card in software: its JPKI certificate and the key the real card would keep."""

    certificate_der: bytes
    key: rsa.RSAPrivateKey

    @classmethod
    def of(cls, card: CardFile, mode: AuthMode = AuthMode.AUTH) -> SoftCard:
        credential = card.credential(mode)
        return cls(credential.certificate.public_bytes(serialization.Encoding.DER), credential.private_key)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def make_electorate(directory: Path, count: int) -> TestCa:
    """A JPKI test CA with ``count`` voter cards (for ``init_station(jpki_anchors=..., jpki_crls=...)``)."""
    ca = TestCa.create(directory)
    for _ in range(count):
        ca.issue_card(pin="1234", password="PASSWORD1")
    return ca


def jpki_files(ca: TestCa) -> dict[str, list[Path]]:
    """The keyword arguments of init_station that install ``ca``'s auth CA and CRL."""
    return {"jpki_anchors": [ca.directory / "auth-ca.pem"], "jpki_crls": [ca.crl_path(AuthMode.AUTH)]}


def roll_of(ca: TestCa, salt: bytes) -> list[str]:
    return ca.roll(salt, AuthMode.AUTH)["voter_keys"]  # type: ignore[return-value]


def cards_of(ca: TestCa) -> list[SoftCard]:
    return [SoftCard.of(card) for card in ca.issued_cards()]


@dataclass
class Hub:
    """The two services running in threads of this process."""

    station: Station
    ledger: LedgerService | None = None
    roll: RollService | None = None
    threads: tuple[threading.Thread, ...] = ()

    def start(self, **ledger_options: object) -> Hub:
        self.ledger = LedgerService(self.station, checkpoint_interval=0.2, **ledger_options)
        self.roll = RollService(self.station)
        self.threads = tuple(threading.Thread(target=service.run, daemon=True) for service in (self.ledger, self.roll))
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for service in (self.ledger, self.roll):
            if service:
                service.stop()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), "a service did not stop"
        self.threads = ()


def file_digests(station: Station) -> dict[str, str]:
    """SHA-256 of each database file (after the services closed them)."""
    digests = {}
    for path in (station.ledger_db, station.roll_db):
        for candidate in path.parent.iterdir():
            if candidate.name.startswith(path.stem) and not candidate.name.endswith("-shm"):
                digests[candidate.name] = hashlib.sha256(candidate.read_bytes()).hexdigest()
    return digests


def held_of(station: Station) -> set[bytes]:
    """The hash of every ballot the ledger holds, chained or still in its pool."""
    store = LedgerStore(station.ledger_db)
    try:
        return set(store.load(station.genesis, station.election().manifest.base_hash).held)
    finally:
        store.close()


def chain_of(station: Station) -> list[ChainEntry]:
    store = LedgerStore(station.ledger_db)
    try:
        return [entry for entry, _ in store.ballots()]
    finally:
        store.close()


def pump_until(link: MonitorLink, state: MonitorState, done: Callable[[], bool], what: str, bound: float) -> None:
    """Feed the monitor's state from its link until ``done()``, or fail naming ``what`` and the alerts."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        link.pump(state)
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"the monitor did not show {what} within {bound} s: {state.alerts(time.time())}")
