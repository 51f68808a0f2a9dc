from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from election.manifest import sample_manifest
from election.pool import CHUNK
from election.record import RecordWriter
from election.simulation import simulate


@pytest.fixture(scope="session")
def simulated_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete small record (2 contests, one of them 2-of-3; 3 of 5 trustees decrypt)."""
    root = tmp_path_factory.mktemp("record") / "record"
    manifest = sample_manifest(contests=2, selections=3, limit=2)
    outcome = simulate(manifest, RecordWriter(root), 12, trustee_count=5, quorum=3, spoil_rate=0.3, seed=7)
    assert outcome.spoiled > 0, "the fixture must include challenged ballots"
    return root


@pytest.fixture
def record_copy(simulated_record: Path, tmp_path: Path) -> Path:
    target = tmp_path / "record"
    shutil.copytree(simulated_record, target)
    return target


@pytest.fixture(scope="session")
def many_ballots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough ballots for several chunks per worker."""
    root = tmp_path_factory.mktemp("many") / "record"
    simulate(sample_manifest(contests=1, selections=2, limit=1), RecordWriter(root), 3 * CHUNK + 5,
             trustee_count=3, quorum=2, spoil_rate=0.1, seed=11)  # fmt: skip
    return root
