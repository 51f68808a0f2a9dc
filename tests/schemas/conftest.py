"""Fixtures: a station template for a real hub (Mosquitto + ledger + roll), made with the hub
tests' own helpers (tests/hub/hub_fixtures.py): its roll lists the cards of a JPKI test CA, and
every check-in is card-proven."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from hub_fixtures import (
    STATION_ID,
    TERMINALS,
    VOTERS,
    SoftCard,
    cards_of,
    jpki_files,
    make_electorate,
    roll_of,
    write_election,
)
from schema_tools import SchemaTemplate

from station_hub.roll import VOTER_KEYS_FORMAT, RollStore, read_voter_keys
from station_hub.station import init_station

OPERATORS = ["op1", "op2"]
"""op1 opens and closes the polls; op2 only watches (one MQTT identity per connection)."""


@pytest.fixture(scope="session")
def schema_station_template(tmp_path_factory: pytest.TempPathFactory) -> SchemaTemplate:
    root = tmp_path_factory.mktemp("schema-template")
    election = write_election(root / "election-package")
    electorate = make_electorate(root / "jpki", VOTERS)
    salt = secrets.token_bytes(32)
    voter_file = root / "voters.json"
    voter_file.write_text(json.dumps({"format": VOTER_KEYS_FORMAT, "voter_keys": roll_of(electorate, salt)}))
    station = init_station(root / "station", STATION_ID, election, TERMINALS, OPERATORS, port=1, roll_salt=salt,
                           **jpki_files(electorate))  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys(voter_file.read_bytes()))
    store.close()
    voters = cards_of(electorate)
    stranger = SoftCard.of(electorate.issue_card())
    foreign = cards_of(make_electorate(root / "other-jpki", 1))[0]
    return SchemaTemplate(root / "station", election, voters, stranger, foreign)
