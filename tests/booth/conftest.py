"""Booth fixtures: a real hub (Mosquitto + ledger + roll) per module, the session's pcscd."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))

from booth_fixtures import ROLL_SALT, Voters, make_voters, open_polls
from hub_fixtures import Hub, write_election

from appliance.card.authenticator import AuthMode
from infra.broker import Broker, free_port
from station_hub.roll import RollStore, read_voter_keys
from station_hub.station import Station, init_station

VOTERS = 6


@pytest.fixture(scope="session")
def voters(tmp_path_factory: pytest.TempPathFactory) -> Voters:
    return make_voters(tmp_path_factory.mktemp("jpki-ca"), VOTERS)


@pytest.fixture(scope="module")
def station(voters: Voters, tmp_path_factory: pytest.TempPathFactory) -> Station:
    root = tmp_path_factory.mktemp("booth-station")
    election = write_election(root / "election-package")
    station = init_station(root / "station", "st-1", election, ["t1", "t2"], ["op1"], port=free_port(),
                           roll_salt=ROLL_SALT, jpki_anchors=[voters.ca.directory / "auth-ca.pem"],
                           jpki_crls=[voters.ca.crl_path(AuthMode.AUTH)])  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys((voters.ca.directory / "roll.json").read_bytes()))
    store.close()
    return station


@pytest.fixture(scope="module")
def broker(station: Station, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(station, tmp_path_factory.mktemp("broker-log") / "mosquitto.log") as running:
        yield running


@pytest.fixture(scope="module")
def hub(station: Station, broker: Broker) -> Iterator[Hub]:
    running = Hub(station).start()
    try:
        open_polls(station)
        yield running
    finally:
        running.stop()
