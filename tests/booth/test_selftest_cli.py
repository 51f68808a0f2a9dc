"""`booth self-test`: what a technician sees, on a provisioned terminal and on a site booth.toml."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from booth_fixtures import Voters, terminal_data_dir

from appliance.config import load_config
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from station_hub.station import Station


@pytest.fixture
def pn532() -> Iterator[PtyPn532]:
    pty = PtyPn532(Pn532Emulator(None))
    try:
        yield pty
    finally:
        pty.close()


@pytest.fixture
def terminal(station: Station, voters: Voters, pn532: PtyPn532, tmp_path: Path) -> Path:
    config = terminal_data_dir(station, voters, "t2", tmp_path / "t2", "unused")
    data = json.loads(config.read_text())
    data["reader"] = {"kind": "pn532-uart", "port": pn532.port}
    config.write_text(json.dumps(data))
    return config


def self_test(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "self-test", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_provisioned_terminal_passes_and_says_what_it_checked(terminal: Path, hub) -> None:
    done = self_test(terminal)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("[ok] card reader: pn532-uart", "[ok] station broker", "[ok] election package valid",
                 "[ok] production mode: training mode", "self-test: all checks passed"):  # fmt: skip
        assert line in done.stdout


def test_an_unreachable_hub_fails_the_self_test(terminal: Path) -> None:
    data = json.loads(terminal.read_text())
    data["broker"] = "127.0.0.1:1"
    terminal.write_text(json.dumps(data))
    done = self_test(terminal)
    assert done.returncode == 1
    assert "[FAIL] station broker: 127.0.0.1:1 unreachable" in done.stdout
    assert "SELF-TEST FAILED" in done.stdout


def test_site_booth_toml_overrides_and_production_mode_refuses_simulators(
    terminal: Path, station: Station, pn532: PtyPn532, tmp_path: Path
) -> None:
    site = tmp_path / "booth.toml"
    site.write_text(
        f'mode = "production"\ndata_dir = "{terminal.parent}"\n'
        f'[reader]\nkind = "pn532-uart"\nport = "{pn532.port}"\n'
        f'[hub]\nhost = "{station.host}"\nport = {station.port}\n[ui]\nport = 8099\n'
    )
    config = load_config(site)
    assert (config.mode, config.ui_port, config.reader_name) == ("production", 8099, pn532.port)
    assert config.terminal_id == "t2" and config.site_file == site
    done = self_test(site)
    assert done.returncode == 1
    # The emulated PN532 sits on a pseudo-terminal: production mode names it.
    assert "[FAIL] production mode: simulated_device" in done.stdout


def test_a_bad_site_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    site = tmp_path / "booth.toml"
    site.write_text('mode = "production"\n')
    done = self_test(site)
    assert done.returncode != 0
    assert "data_dir must name the terminal's data directory" in done.stderr
