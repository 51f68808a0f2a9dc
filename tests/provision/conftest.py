"""Fixtures: a station CA, an election package, and a virtual companion board."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.simulators.companion_board import VirtualCompanionBoard
from infra.pki import StationCA


@pytest.fixture
def station_ca(tmp_path: Path) -> StationCA:
    return StationCA.create(tmp_path / "ca", "S001")


@pytest.fixture
def election_package(tmp_path: Path) -> Path:
    package = tmp_path / "election-pkg"
    (package / "contests").mkdir(parents=True)
    (package / "manifest.json").write_text('{"election": "test-2026"}\n')
    (package / "contests" / "mayor.json").write_text('{"choices": ["A", "B"]}\n')
    return package


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
