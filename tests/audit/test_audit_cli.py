"""`audit-log`: export and verify with one command each, and clear errors for bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from audit_day import LOG_ID, fixed_clock, write_day
from click.testing import CliRunner

from audit.cli import main
from audit.keys import public_key_path
from audit.store import AuditLog


@pytest.fixture
def day_log(log_path: Path, signing_key) -> Path:
    with AuditLog.open(log_path, signing_key, LOG_ID, clock=fixed_clock) as audit_log:
        write_day(audit_log)
    return log_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_verify_and_export_through_the_installed_command(day_log: Path, key_file: Path, tmp_path: Path) -> None:
    command = shutil.which("audit-log", path=str(Path(sys.executable).parent))
    assert command is not None, "the audit-log console script is not installed"
    exported = tmp_path / "handover.log"
    subprocess.run([command, "export", str(day_log), "--out", str(exported)], check=True, timeout=60)
    assert exported.read_bytes() == day_log.read_bytes()
    verified = subprocess.run(
        [command, "verify", str(exported), "--key", str(public_key_path(key_file))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"ok: 18 entries of log '{LOG_ID}', head ")


def test_verify_reports_the_position_and_fails(day_log: Path, key_file: Path) -> None:
    lines = day_log.read_bytes().splitlines(keepends=True)
    day_log.write_bytes(b"".join(lines[:9] + lines[10:]))
    code, output = run("verify", str(day_log), "--key", str(public_key_path(key_file)))
    assert code == 1
    assert "PROBLEM line 10: entry seq 10: expected seq 9, 1 entry missing before it" in output
    assert "does NOT verify: 2 problem(s)" in output


def test_verify_against_a_recorded_head_catches_a_cut_tail(day_log: Path, key_file: Path) -> None:
    code, output = run("verify", str(day_log), "--key", str(public_key_path(key_file)))
    head = output.rsplit("head ", 1)[1].strip()
    lines = day_log.read_bytes().splitlines(keepends=True)
    day_log.write_bytes(b"".join(lines[:-1]))
    code, output = run("verify", str(day_log), "--key", str(public_key_path(key_file)), "--expect-head", head)
    assert code == 1 and "entries cut from the end" in output


def test_export_text_and_a_torn_tail(day_log: Path, tmp_path: Path) -> None:
    with day_log.open("ab") as handle:
        handle.write(b'{"data":')
    out = tmp_path / "dump.txt"
    code, output = run("export", str(day_log), "--format", "text", "--out", str(out))
    assert code == 0
    assert "left out 8 bytes of an incomplete last line" in output
    rows = out.read_text().splitlines()
    assert len(rows) == 18
    assert rows[-1].split() == ["17", "2026-11-25T08:30Z", "polls_closed", "station=station-12"]


def test_append_from_a_shell_script(log_path: Path, key_file: Path) -> None:
    args = ["--key", str(key_file), "--log-id", "hub-3.hub"]
    code, output = run(
        "append", str(log_path), "configuration_changed", "setting=booth.toml", f"sha256={'ab' * 32}", *args
    )
    assert code == 0 and output.startswith("appended seq 1, head ")
    code, output = run("append", str(log_path), "session_ended", "outcome=cast", "voter_key=abc", *args)
    assert code == 2 and "FIELD one of ['outcome']" in output
    code, output = run("append", str(log_path), "ballots_cast", "count=x", *args)
    assert code == 1 and "'x' is not a non-negative integer" in output
    code, output = run("verify", str(log_path), "--key", str(public_key_path(key_file)))
    assert code == 0 and "2 entries" in output


def test_keygen_never_replaces_a_key(key_file: Path) -> None:
    before = key_file.read_bytes()
    code, output = run("keygen", str(key_file))
    assert code == 2 and "refusing to replace an audit key" in output
    assert key_file.read_bytes() == before
    assert key_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("key_text", "message"),
    [(b"not a key", "neither a PEM public key nor 64 hex digits"), (b"zz" * 32, "neither a PEM")],
)
def test_verify_with_an_unusable_key(day_log: Path, tmp_path: Path, key_text: bytes, message: str) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_bytes(key_text)
    code, output = run("verify", str(day_log), "--key", str(bad))
    assert code == 2 and message in output


def test_verify_a_missing_log(tmp_path: Path, key_file: Path) -> None:
    code, output = run("verify", str(tmp_path / "nope.log"), "--key", str(public_key_path(key_file)))
    assert code == 2 and "cannot read audit log" in output


def test_scan_command(day_log: Path, tmp_path: Path) -> None:
    forbidden = tmp_path / "forbidden.txt"
    forbidden.write_text("山田 花子\ncandidate-1\n")
    assert run("scan", str(day_log), str(forbidden))[0] == 0
    forbidden.write_text("station-12\n")
    code, output = run("scan", str(day_log), str(forbidden))
    assert code == 1 and "LEAK line 3: contains 'station-12'" in output
