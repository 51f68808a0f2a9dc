"""Fixtures: one station template per session, copied per test with its own broker port."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_fixtures import (
    STATION_ID,
    TERMINALS,
    VOTERS,
    Hub,
    SoftCard,
    cards_of,
    copy_station,
    jpki_files,
    make_electorate,
    roll_of,
    write_election,
)

from infra.broker import Broker
from station_hub.roll import VOTER_KEYS_FORMAT, RollStore, read_voter_keys
from station_hub.station import Station, init_station


@pytest.fixture(scope="session")
def station_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SoftCard], SoftCard]:
    """A station whose roll lists the ``VOTERS`` cards of a JPKI test CA (check-ins are card-proven)."""
    root = tmp_path_factory.mktemp("template")
    election = write_election(root / "election-package")
    electorate = make_electorate(root / "jpki", VOTERS)
    salt = secrets.token_bytes(32)
    voter_file = root / "voters.json"
    voter_file.write_text(json.dumps({"format": VOTER_KEYS_FORMAT, "voter_keys": roll_of(electorate, salt)}))
    station = init_station(root / "station", STATION_ID, election, TERMINALS, ["op1"], port=1, roll_salt=salt,
                           **jpki_files(electorate))  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys(voter_file.read_bytes()))
    store.close()
    on_roll = cards_of(electorate)
    stranger = SoftCard.of(electorate.issue_card())  # a genuine card, issued after the roll was made
    return root / "station", on_roll, stranger


@pytest.fixture
def voters(station_template: tuple[Path, list[SoftCard], SoftCard]) -> list[SoftCard]:
    """The roll's voters' cards (each a SoftCard: certificate + the card's key)."""
    return station_template[1]


@pytest.fixture
def stranger(station_template: tuple[Path, list[SoftCard], SoftCard]) -> SoftCard:
    """A genuine JPKI test card whose holder is not on this station's roll."""
    return station_template[2]


@pytest.fixture
def station(station_template: tuple[Path, list[SoftCard], SoftCard], tmp_path: Path) -> Station:
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
