"""The booth holds no roll salt: check-ins are card-proven and only the roll derives voter keys,
so a configuration that still names one is refused (a salt on the booth's disk maps every voter
key back to a card serial)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from booth_fixtures import ROLL_SALT, Voters, terminal_data_dir

from appliance.config import ConfigError, load_config
from station_hub.station import Station


def test_a_config_without_a_roll_salt_loads(station: Station, voters: Voters, tmp_path: Path) -> None:
    config = load_config(terminal_data_dir(station, voters, "t1", tmp_path / "t1", "reader"))
    assert not hasattr(config, "roll_salt")


def test_a_config_with_a_roll_salt_is_refused(station: Station, voters: Voters, tmp_path: Path) -> None:
    path = terminal_data_dir(station, voters, "t1", tmp_path / "t1", "reader")
    data = json.loads(path.read_text())
    data["card"]["roll_salt"] = ROLL_SALT.hex()
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="roll salt"):
        load_config(path)
