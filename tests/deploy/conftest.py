from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from deploy_root import REPO, make_target_root
from install import build_wheel


@pytest.fixture
def target_root(tmp_path: Path) -> Path:
    return make_target_root(tmp_path / "root")


@pytest.fixture(scope="session")
def product_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's wheel, built once per session the way deploy/install.py builds it."""
    started = time.monotonic()
    wheel = build_wheel(REPO, tmp_path_factory.mktemp("wheel"), sys.executable)
    print(f"\nbuilt {wheel.name} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return wheel
