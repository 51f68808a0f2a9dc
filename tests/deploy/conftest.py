from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from deploy_root import REPO, Installed, clean_env, make_target_root
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


@pytest.fixture(scope="session")
def installed(product_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed non-editable into a fresh virtualenv, once per session (shared by
    the wheel-install and technician-path tests)."""
    base = tmp_path_factory.mktemp("booth-install")
    assert not base.is_relative_to(REPO)
    venv, workdir = base / "venv", base / "work"
    workdir.mkdir()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    made = time.monotonic()
    done = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", str(product_wheel)],
        capture_output=True, text=True, timeout=900, cwd=workdir, env=clean_env(venv),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(
        f"\nvirtualenv in {made - started:.1f} s, wheel and dependencies installed in {time.monotonic() - made:.1f} s",
        file=sys.stderr,
    )
    return Installed(venv, workdir, clean_env(venv))
