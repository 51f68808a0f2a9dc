"""Helpers for the provisioning tests: a hub made the documented way, flash.sh and station-hub
run as a technician runs them, and a hash of a whole folder (to show nothing changed)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.card import AuthMode
from appliance.card.testca import TestCa
from election.manifest import Manifest
from election.simulation import ceremony_to_files
from station_hub.station import Station, init_station

REPO = Path(__file__).resolve().parents[2]
TERMINALS = ["T01", "T02"]
Flash = Callable[..., subprocess.CompletedProcess[str]]


def small_manifest(election_id: str = "test-2026") -> Manifest:
    return Manifest.from_json(
        {
            "version": 2,
            "election_id": election_id,
            "name": {"en": election_id, "ja": election_id},
            "batch_min": 2,
            "mode": "rehearsal",
            "contests": [
                {
                    "id": "mayor",
                    "name": {"en": "Mayor", "ja": "市長"},
                    "limit": 1,
                    "selections": [
                        {"id": "a", "name": {"en": "A", "ja": "A"}},
                        {"id": "b", "name": {"en": "B", "ja": "B"}},
                    ],
                }
            ],
        }
    )


def make_hub(root: Path, station_id: str = "S001", election_id: str = "test-2026") -> Station:
    """A station made the documented way (init_station is what `station-hub init` calls)."""
    ceremony_to_files(small_manifest(election_id), 1, 1, root / "election-pkg", root / "trustees")
    cards = TestCa.create(root / "jpki")
    return init_station(
        root / "hub", station_id, root / "election-pkg", TERMINALS, ["op1"], "127.0.0.1", 8883,
        jpki_anchors=[cards.directory / "auth-ca.pem"], jpki_crls=[cards.crl_path(AuthMode.AUTH)],
    )  # fmt: skip


def station_hub(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "station_hub.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def enroll(hub: Station, data_dir: Path, out: Path) -> Path:
    result = station_hub("enroll", str(hub.directory), str(data_dir / "device" / "request.csr"), str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def tree_hash(directory: Path) -> dict[str, str]:
    """Every file and folder under ``directory``: mode, content hash, mtime ({} if absent)."""
    if not directory.exists():
        return {}
    entries = {}
    for path in sorted(directory.rglob("*")):
        mode = path.lstat().st_mode
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        entries[str(path.relative_to(directory))] = f"{mode:o} {content} {path.lstat().st_mtime_ns}"
    return entries
