"""Fixtures: one election and one template per station per session; a central office per test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_fixtures import STATIONS, make_election, make_station_template, postgres_server
from hub_fixtures import SoftCard

from gateway.central import Central, init_central
from infra.broker import free_port


@pytest.fixture(scope="session")
def election_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return make_election(tmp_path_factory.mktemp("election"))


@pytest.fixture(scope="session")
def station_templates(
    tmp_path_factory: pytest.TempPathFactory, election_files: tuple[Path, list[Path]]
) -> dict[str, tuple[Path, list[SoftCard]]]:
    root = tmp_path_factory.mktemp("stations")
    return {station_id: make_station_template(root, station_id, election_files[0]) for station_id in STATIONS}


@pytest.fixture
def central(tmp_path: Path, election_files: tuple[Path, list[Path]]) -> Central:
    return init_central(tmp_path / "central", election_files[0], port=free_port())


@pytest.fixture(scope="session")
def postgres_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A short path under /tmp (the server's Unix socket path is limited to 107 bytes), unique to
    # this run: another run on the same machine must not share or delete it.
    with postgres_server(Path(tempfile.mkdtemp(prefix="gw-pg-", dir="/tmp"))) as url:
        yield url
