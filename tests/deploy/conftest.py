from __future__ import annotations

from pathlib import Path

import pytest
from deploy_root import make_target_root


@pytest.fixture
def target_root(tmp_path: Path) -> Path:
    return make_target_root(tmp_path / "root")
