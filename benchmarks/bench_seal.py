"""Median time to seal one ballot (encryption, every proof, device signature) and to verify it,
and — in the same run, on the same machine — ElectionGuard 1.4 (Python) sealing and verifying
the same ballot shape, with the ratios (issue 18: ≥ 25× for sealing, ≥ 40× for verification).

    python benchmarks/bench_seal.py --contests 5 --selections 5
    python benchmarks/bench_seal.py --no-eg                 # our figures only
    python benchmarks/bench_seal.py --eg-ballots 20 --eg-venv /tmp/eg-venv

ElectionGuard is never a dependency of the project: the first run creates a separate virtualenv
(cached, default ~/.cache/polling-station-bench/eg-venv) with PyPI `electionguard` pinned below,
and runs `benchmarks/eg_seal_probe.py` in it as a subprocess. EG 1.4.0 declares Python ≥ 3.9.5
but does not import on 3.11+ (a dataclass with a mutable default), so the venv is made from a
3.9/3.10 interpreter found on the machine (or `--eg-python`). If none can be made, the reason is
printed and only our figures are shown.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import DeviceSigner, SealedBallot, seal_ballot
from election.encoding import canonical_bytes, parse_json
from election.keyceremony import joint_public_key, run_local_ceremony
from election.manifest import sample_manifest

EG_REQUIREMENT = "electionguard==1.4.0"  # newest 1.4.x on PyPI (checked with `pip index versions electionguard`)
EG_SERIES = "1.4."
EG_PROBE = Path(__file__).with_name("eg_seal_probe.py")
EG_VENV_MARKER = "polling-station-eg-venv"
DEFAULT_EG_VENV = Path.home() / ".cache" / "polling-station-bench" / "eg-venv"
SEAL_GOAL, VERIFY_GOAL = 25.0, 40.0


class EGUnavailable(Exception):
    """The ElectionGuard virtualenv could not be made or the probe failed (reason in the message)."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_ours(contests: int, selections: int, limit: int, rounds: int) -> tuple[float, float]:
    manifest = sample_manifest(contests, selections, limit)
    _, publics = run_local_ceremony(["t1", "t2", "t3"], 2, manifest.base_hash)
    key = joint_public_key(publics)
    signer = DeviceSigner("bench", Ed25519PrivateKey.generate())
    choices = {c.id: set(c.selection_ids()[: c.limit]) for c in manifest.contests}
    seal_times, verify_times = [], []
    for index in range(rounds):
        started = time.perf_counter()
        ballot, _ = seal_ballot(manifest, key, choices, signer)
        sealed = time.perf_counter()
        wire = canonical_bytes(ballot.to_json())
        checked_at = time.perf_counter()
        received = SealedBallot.from_json(parse_json(wire), manifest)  # every point validated
        ok = received.signature_valid(signer.public_key) and not received.proof_failures(manifest, key)
        verified = time.perf_counter()
        assert ok
        seal_times.append(sealed - started)
        verify_times.append(verified - checked_at)
        if (index + 1) % 10 == 0 or index + 1 == rounds:
            progress(f"  [ours] {index + 1}/{rounds} ballots")
    return statistics.median(seal_times), statistics.median(verify_times)


# --- ElectionGuard side -------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """The environment for the EG venv: nothing of ours leaks in, and EG's real group is used."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PRIME_OPTION"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _python_version(python: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor, micro = (int(part) for part in out.stdout.split())
    return major, minor, micro


def _eg_capable(version: tuple[int, int, int] | None) -> bool:
    return version is not None and (3, 9, 5) <= version < (3, 11, 0)


def _candidate_pythons() -> list[str]:
    found = [sys.executable]
    for name in ("python3.10", "python3.9"):
        if path := shutil.which(name):
            found.append(path)
    for pattern in (
        "~/.pyenv/versions/3.10*/bin/python",
        "~/.pyenv/versions/3.9*/bin/python",
        "/usr/bin/python3.10",
        "/usr/bin/python3.9",
        "/usr/local/bin/python3.10",
        "/usr/local/bin/python3.9",
    ):
        found.extend(sorted(glob.glob(os.path.expanduser(pattern)), reverse=True))
    return list(dict.fromkeys(found))


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed_eg(venv: Path) -> str | None:
    """The electionguard version importable in the venv, or None."""
    python = _venv_python(venv)
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import electionguard, importlib.metadata as m; print(m.version('electionguard'))"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_eg_venv(venv: Path, python: str | None) -> Path:
    """Return the venv's interpreter, creating the venv (once) with electionguard 1.4.x if needed."""
    installed = _installed_eg(venv)
    if installed and installed.startswith(EG_SERIES):
        progress(f"ElectionGuard {installed}: cached virtualenv {venv}")
        return _venv_python(venv)
    if python:
        version = _python_version(python)
        if not _eg_capable(version):
            shown = ".".join(map(str, version)) if version else "unusable"
            raise EGUnavailable(f"--eg-python {python} is Python {shown}; electionguard 1.4 needs 3.9.5–3.10")
    else:
        python = next((c for c in _candidate_pythons() if _eg_capable(_python_version(c))), None)
        if python is None:
            raise EGUnavailable(
                "no Python 3.9.5–3.10 interpreter found (electionguard 1.4.0 fails to import on 3.11+); "
                "install one (e.g. `pyenv install 3.10`, or `uv python install 3.10`) and pass --eg-python"
            )
    if venv.exists() and any(venv.iterdir()):
        if not (venv / EG_VENV_MARKER).exists():  # never delete a directory this script did not make
            raise EGUnavailable(f"{venv} exists without a working electionguard 1.4; pass another --eg-venv")
        progress(f"removing stale ElectionGuard virtualenv {venv}")
        shutil.rmtree(venv)
    version = ".".join(map(str, _python_version(python) or ()))
    progress(f"creating ElectionGuard virtualenv {venv} with {python} (Python {version}) …")
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(_venv_python(venv)), "-m", "pip", "install", "--quiet", EG_REQUIREMENT],
    ]
    for step in steps:
        if step[-1] == EG_REQUIREMENT:
            progress(f"  pip install {EG_REQUIREMENT} (gmpy2, pydantic, … ; about 30 s) …")
        out = subprocess.run(step, capture_output=True, text=True, env=_clean_env())
        if out.returncode != 0:
            lines = (out.stdout + out.stderr).splitlines()
            tail = "\n".join(line for line in lines if "is ignored" not in line)[-2000:]
            hint = ""
            if "gmpy2" in tail and ("gmp.h" in tail or "error:" in tail):
                hint = " (gmpy2 built from source needs gcc and `apt-get install libgmp-dev libmpfr-dev libmpc-dev`)"
            raise EGUnavailable(f"`{' '.join(step[-3:])}` failed{hint}:\n{tail}")
        if step[1:3] == ["-m", "venv"]:
            (venv / EG_VENV_MARKER).write_text(f"made by {Path(__file__).name}\n")
    installed = _installed_eg(venv)
    if not (installed and installed.startswith(EG_SERIES)):
        raise EGUnavailable(f"electionguard installed in {venv} but does not import")
    progress(f"ElectionGuard {installed} ready in {venv}")
    return _venv_python(venv)


def measure_eg(python: Path, contests: int, selections: int, limit: int, ballots: int) -> dict:
    command = [
        str(python),
        str(EG_PROBE),
        "--contests",
        str(contests),
        "--selections",
        str(selections),
        "--limit",
        str(limit),
        "--ballots",
        str(ballots),
    ]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=_clean_env())  # stderr: live progress
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise EGUnavailable(f"{EG_PROBE.name} exited with {out.returncode}: {out.stdout[-1000:]}")
    return json.loads(lines[-1])


# --- report -------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contests", type=int, default=5)
    parser.add_argument("--selections", type=int, default=5)
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=50, help="our ballots (median)")
    parser.add_argument(
        "--eg",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure ElectionGuard 1.4 in its own virtualenv (default: on)",
    )
    parser.add_argument("--eg-ballots", type=int, default=10, help="ElectionGuard ballots (median; ~1.3 s each)")
    parser.add_argument("--eg-venv", type=Path, default=DEFAULT_EG_VENV, help="where the EG virtualenv is cached")
    parser.add_argument("--eg-python", default=None, help="interpreter (3.9.5–3.10) to create the EG virtualenv")
    args = parser.parse_args()

    shape = f"{args.contests}×{args.selections} ballot (limit {args.limit})"
    progress(f"ours: sealing and verifying {args.rounds} {shape} ballots …")
    seal_s, verify_s = measure_ours(args.contests, args.selections, args.limit, args.rounds)
    print(f"seal_ms={seal_s * 1e3:.2f} verify_ms={verify_s * 1e3:.2f}", flush=True)
    if not args.eg:
        return

    try:
        python = ensure_eg_venv(args.eg_venv.expanduser(), args.eg_python)
        progress(f"ElectionGuard: sealing and verifying {args.eg_ballots} {shape} ballots (one after ours) …")
        eg = measure_eg(python, args.contests, args.selections, args.limit, args.eg_ballots)
    except (EGUnavailable, OSError, subprocess.SubprocessError) as error:
        print(f"ElectionGuard comparison skipped — {error}\n(our figures above only; --no-eg to skip this step)")
        return

    seal_ratio, verify_ratio = eg["seal_s"] / seal_s, eg["verify_s"] / verify_s
    parse_ratio = eg["parse_verify_s"] / verify_s

    def verdict(ratio: float, goal: float) -> str:
        return f"≥ {goal:.0f}×  {'met' if ratio >= goal else 'NOT met'}"

    print()
    print(f"{shape}, median per ballot, same machine, one after the other")
    print(f"  ours: {args.rounds} ballots, Python {sys.version.split()[0]}")
    print(
        f"  EG:   electionguard {eg['electionguard']} (gmpy2 {eg['gmpy2']}), {eg['ballots']} ballots, "
        f"Python {eg['python']}, 4096-bit group, {eg['placeholders_per_contest']} placeholder(s)/contest"
    )
    print(f"  {'':34} {'ours':>12} {'ElectionGuard':>14} {'ours faster':>12}   goal")
    print(
        f"  {'seal (encrypt + proofs)':34} {_ms(seal_s)} {_ms(eg['seal_s']):>14} {seal_ratio:11.1f}×   "
        f"{verdict(seal_ratio, SEAL_GOAL)}"
    )
    print(
        f"  {'verify (EG: proofs, in memory)':34} {_ms(verify_s)} {_ms(eg['verify_s']):>14} {verify_ratio:11.1f}×   "
        f"{verdict(verify_ratio, VERIFY_GOAL)}"
    )
    print(
        f"  {'verify (EG: parse JSON + proofs)':34} {_ms(verify_s)} {_ms(eg['parse_verify_s']):>14} "
        f"{parse_ratio:11.1f}×"
    )
    print("  ours: seal includes the Ed25519 device signature; verify starts from wire bytes (parse, every point")
    print("  validated, signature, every proof). EG: EncryptionMediator.encrypt without self-check;")
    print("  ballot_is_valid_for_election (disjunctive CP per selection and placeholder, constant CP per contest)")
    print(
        f"eg_seal_ms={eg['seal_s'] * 1e3:.2f} eg_verify_ms={eg['verify_s'] * 1e3:.2f} "
        f"seal_ratio={seal_ratio:.1f} verify_ratio={verify_ratio:.1f}"
    )


if __name__ == "__main__":
    main()
