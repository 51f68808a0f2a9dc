"""A stand-in target root for the installer tests, and the import path of deploy/install.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "deploy") not in sys.path:
    sys.path.insert(0, str(REPO / "deploy"))

# What the Debian packages the installer apt-gets on the device provide and the units run.
DEBIAN_EXECUTABLES = (
    "/usr/bin/cage", "/usr/bin/chromium", "/usr/sbin/mosquitto", "/usr/bin/kill", "/usr/bin/systemd-tmpfiles",
)  # fmt: skip
HOST_UNITS = Path("/lib/systemd/system")


def base_interpreters() -> tuple[str, ...]:
    """The Python a virtualenv built here links to (Debian's /usr/bin/python3 on the device)."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    return tuple(sorted({str(base), str(base.resolve())}))


def make_target_root(root: Path) -> Path:
    """A stock Raspberry Pi OS root as far as the units care: systemd's units, the Debian programs,
    and the interpreter the installed virtualenv's ``python`` links to."""
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for program in (*DEBIAN_EXECUTABLES, *base_interpreters()):
        stub = root / program.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return root


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path  # outside the checkout: nothing is found relative to the repository
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a booth: its own virtualenv first, nothing of the checkout anywhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and not Path(p).is_relative_to(REPO)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    return env
