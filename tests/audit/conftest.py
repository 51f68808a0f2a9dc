from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_day import LOG_ID, fixed_clock
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.keys import create_signing_key, load_signing_key
from audit.store import AuditLog


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    create_signing_key(path)
    return path


@pytest.fixture
def signing_key(key_file: Path) -> Ed25519PrivateKey:
    return load_signing_key(key_file)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "booth.log"


@pytest.fixture
def audit_log(log_path: Path, signing_key: Ed25519PrivateKey) -> Iterator[AuditLog]:
    with AuditLog.open(log_path, signing_key, LOG_ID, clock=fixed_clock) as opened:
        yield opened
