"""Fixtures: one station template per session, copied per test with its own broker port."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_fixtures import STATION_ID, TERMINALS, VOTERS, Hub, copy_station, write_election

from infra.broker import Broker
from station_hub.roll import VOTER_KEYS_FORMAT, RollStore, read_voter_keys
from station_hub.station import Station, init_station


@pytest.fixture(scope="session")
def station_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("template")
    election = write_election(root / "election-package")
    voters = [secrets.token_hex(32) for _ in range(VOTERS)]
    voter_file = root / "voters.json"
    voter_file.write_text(json.dumps({"format": VOTER_KEYS_FORMAT, "voter_keys": voters}))
    station = init_station(root / "station", STATION_ID, election, TERMINALS, ["op1"], port=1)
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys(voter_file.read_bytes()))
    store.close()
    return root / "station", voters


@pytest.fixture
def voters(station_template: tuple[Path, list[str]]) -> list[str]:
    return station_template[1]


@pytest.fixture
def station(station_template: tuple[Path, list[str]], tmp_path: Path) -> Station:
    return copy_station(station_template[0], tmp_path / "station")


@pytest.fixture
def broker(station: Station, tmp_path: Path) -> Iterator[Broker]:
    with Broker(station, tmp_path / "mosquitto.log") as running:
        yield running


@pytest.fixture
def hub(station: Station, broker: Broker) -> Iterator[Hub]:
    running = Hub(station).start()
    try:
        yield running
    finally:
        running.stop()
