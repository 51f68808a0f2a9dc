"""Fixtures: a station hub (its CA, election, JPKI trust), its exported station package, a
virtual companion board, and flash.sh run as a technician runs it (helpers: provision_fixtures)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from provision_fixtures import REPO, Flash, make_hub, station_hub

from appliance.simulators.companion_board import VirtualCompanionBoard
from infra.pki import StationCA
from station_hub.station import Station


@pytest.fixture(scope="session")
def hub_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hub(tmp_path_factory.mktemp("hub-template")).directory


@pytest.fixture(scope="session")
def other_election_hub_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hub(tmp_path_factory.mktemp("hub-other"), election_id="by-election-2026").directory


@pytest.fixture
def hub(tmp_path: Path, hub_template: Path) -> Station:
    shutil.copytree(hub_template, tmp_path / "hub")
    return Station.open(tmp_path / "hub")


@pytest.fixture
def station_ca(tmp_path: Path) -> StationCA:
    """A bare station CA (tests of infra.pki itself)."""
    return StationCA.create(tmp_path / "ca", "S001")


@pytest.fixture
def package(tmp_path: Path, hub: Station) -> Path:
    out = tmp_path / "stick" / "station-package.json"
    out.parent.mkdir()
    result = station_hub("export-package", str(hub.directory), str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def flash(tmp_path: Path) -> Flash:
    def run(*args: str, terminal: str = "T01", data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = ["bash", str(REPO / "flash.sh"), "--terminal", terminal,
                   "--data-dir", str(data_dir or tmp_path / "terminal"), *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)

    return run


@pytest.fixture
def board_root(tmp_path: Path) -> Path:
    root = tmp_path / "board"
    root.mkdir()
    return root


@pytest.fixture
def virtual_board(tmp_path: Path, board_root: Path) -> Iterator[VirtualCompanionBoard]:
    board = VirtualCompanionBoard(board_root, port_link=tmp_path / "ttyCOMPANION")
    board.start()
    try:
        yield board
    finally:
        board.stop()
