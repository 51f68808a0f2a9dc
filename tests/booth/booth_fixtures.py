"""Helpers for the booth tests: a station with a roll of test cards, a terminal data dir."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.card import AuthMode
from appliance.card.testca import CardFile, TestCa
from appliance.provision import CONFIG_SCHEMA, election_package_hash
from infra.broker import free_port
from infra.mqtt import HubClient
from station_hub.ledger_store import attach_pool
from station_hub.operator import change_polls
from station_hub.station import Station

ROLL_SALT = bytes.fromhex("b007" * 16)
PIN = "1234"


@dataclass(frozen=True)
class Voters:
    ca: TestCa
    eligible: tuple[CardFile, ...]
    outsider: CardFile  # valid card, not on the roll
    revoked: CardFile


def make_voters(directory: Path, count: int) -> Voters:
    ca = TestCa.create(directory)
    eligible = tuple(ca.issue_card(pin=PIN, password="PASS2024") for _ in range(count))
    roll = ca.roll(ROLL_SALT, AuthMode.AUTH)
    outsider = ca.issue_card(pin=PIN, password="PASS2024")
    revoked = ca.issue_card(pin=PIN, password="PASS2024")
    ca.revoke(revoked.card_id)
    roll_file = directory / "roll.json"
    roll_file.write_text(json.dumps(roll))
    return Voters(ca, eligible, outsider, revoked)


def terminal_data_dir(station: Station, voters: Voters, terminal: str, target: Path, reader: str) -> Path:
    """What flash.sh leaves on a terminal, plus the booth's own configuration keys."""
    device = target / "device"
    device.mkdir(parents=True)
    shutil.copyfile(station.key_file(terminal), device / "device.key")
    shutil.copyfile(station.cert_file(terminal), device / "device.pem")
    shutil.copyfile(station.ca_file, device / "ca.pem")
    shutil.copyfile(station.crl_file, device / "crl.pem")
    shutil.copyfile(station.token_public_file, device / "token.pem")
    shutil.copytree(station.directory / "election", target / "election")
    card = target / "card"
    card.mkdir()
    shutil.copyfile(voters.ca.directory / "auth-ca.pem", card / "auth-ca.pem")
    shutil.copyfile(voters.ca.crl_path(AuthMode.AUTH), card / "auth-crl.pem")
    config = {
        "schema": CONFIG_SCHEMA,
        "station": station.station_id,
        "terminal": terminal,
        "broker": f"{station.host}:{station.port}",
        "companion_port": None,
        "election": {"path": "election", "sha256": election_package_hash(target / "election")},
        "reader": {"kind": "pcsc", "name": reader},
        "ui_port": free_port(),
        "card": {
            "mode": "auth",
            "trust_anchors": ["card/auth-ca.pem"],
            "crls": ["card/auth-crl.pem"],
        },
        "timeouts": {"voting": 120, "result": 30},
    }
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target / "config.json"


def open_polls(station: Station) -> None:
    """Open the polls the operator's way: once both services are online, wait for both to switch."""
    with HubClient(station, "op1") as operator:
        operator.connect()
        change_polls(operator, "open", timeout=20)


def ledger_reader(station: Station) -> sqlite3.Connection:
    """A read-only look at the ledger's files: the chain, and its pool attached as ``intake``."""
    db = sqlite3.connect(f"file:{station.ledger_db}?mode=ro", uri=True)
    attach_pool(db, station.ledger_db, read_only=True)
    return db


@dataclass(frozen=True)
class LedgerRow:
    """A ballot the station's ledger holds: ``batch`` is None while it waits in the pool."""

    ballot_hash: bytes
    kind: str
    stored: bytes  # the sealed ballot, or for a spoiled one {"ballot", "opening"}
    batch: int | None


def ledger_rows(station: Station) -> list[LedgerRow]:
    """Every ballot the ledger holds, chained or still in its pool (a batch forms only once the
    pool holds the manifest's ``batch_min``), read in one transaction so that a batch committed
    meanwhile is neither lost nor counted twice."""
    db = ledger_reader(station)
    try:
        rows = db.execute(
            "SELECT ballot_hash, kind, ballot, batch FROM entries"
            " UNION ALL SELECT ballot_hash, kind, ballot, NULL FROM intake.pool"
        ).fetchall()
    finally:
        db.close()
    return [LedgerRow(*row) for row in rows]


def ledger_statement(station: Station, terminal: str) -> tuple[int, bytes, bytes] | None:
    """(sealed, commitment, signature) of the latest device statement the ledger keeps for
    ``terminal``."""
    db = ledger_reader(station)
    try:
        query = "SELECT sealed, commitment, signature FROM intake.device_statements WHERE device_id = ?"
        row = db.execute(query, (terminal,)).fetchone()
    finally:
        db.close()
    return None if row is None else (row[0], row[1], row[2])


def booth_set(outbox: Path) -> list[bytes]:
    """The ballot hashes a booth has sealed and sent (its outbox's set)."""
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT ballot_hash FROM sealed")]
    finally:
        db.close()
