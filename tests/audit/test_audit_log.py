"""The audit log file: chain, signatures, tamper detection, power cuts, one writer."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from audit_day import LOG_ID, fixed_clock, write_day
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import AuditChain, AuditEntry, verify_lines
from audit.errors import AuditLogBusy, AuditLogCorrupt
from audit.store import AuditLog, read_log


def _lines(path: Path) -> list[bytes]:
    lines, torn = read_log(path)
    assert not torn
    return lines


def _problems(lines: list[bytes], key: Ed25519PrivateKey) -> list[str]:
    return [str(problem) for problem in verify_lines(lines, key.public_key()).problems]


@pytest.fixture
def day_lines(log_path: Path, signing_key) -> list[bytes]:
    """The lines of a closed log holding one polling day."""
    with AuditLog.open(log_path, signing_key, LOG_ID, clock=fixed_clock) as audit_log:
        write_day(audit_log)
    return _lines(log_path)


def test_a_day_verifies_and_keeps_only_the_minute(day_lines: list[bytes], signing_key) -> None:
    result = verify_lines(day_lines, signing_key.public_key())
    assert result.ok, result.problems
    assert result.entries == len(day_lines) == 18
    first = AuditEntry.parse(day_lines[0])
    assert first.kind == "log_created" and first.log == LOG_ID
    assert {AuditEntry.parse(line).time for line in day_lines} == {"2026-11-25T08:30Z"}


def test_reopening_continues_the_chain(log_path: Path, signing_key, day_lines: list[bytes]) -> None:
    with AuditLog.open(log_path, signing_key, LOG_ID, clock=fixed_clock) as reopened:
        entry = reopened.append("software_started", role="booth", version="0.1.0")
    assert entry.seq == len(day_lines)
    assert verify_lines(_lines(log_path), signing_key.public_key()).ok


def test_detects_a_removed_entry(day_lines: list[bytes], signing_key) -> None:
    del day_lines[5]
    assert _problems(day_lines, signing_key) == [
        "line 6: entry seq 6: expected seq 5, 1 entry missing before it",
        "line 6: entry seq 6: does not link to the previous line's hash",
    ]


def test_detects_an_altered_entry(day_lines: list[bytes], signing_key) -> None:
    original = day_lines[6]
    day_lines[6] = original.replace(b'"outcome":"cast"', b'"outcome":"refused"')
    assert day_lines[6] != original
    assert _problems(day_lines, signing_key) == [
        "line 7: entry seq 6: signature does not verify (altered or forged entry)",
        "line 8: entry seq 7: does not link to the previous line's hash",
    ]


def test_detects_reordered_entries(day_lines: list[bytes], signing_key) -> None:
    day_lines[3], day_lines[4] = day_lines[4], day_lines[3]
    problems = _problems(day_lines, signing_key)
    assert "line 4: entry seq 4: expected seq 3, 1 entry missing before it" in problems
    assert "line 5: entry seq 3: expected seq 5, out of order or duplicated" in problems
    assert all(p.startswith(("line 4:", "line 5:", "line 6:")) for p in problems)


def test_detects_an_inserted_duplicate_and_a_forged_entry(day_lines: list[bytes], signing_key) -> None:
    duplicated = [*day_lines[:10], day_lines[9], *day_lines[10:]]
    assert _problems(duplicated, signing_key)[0] == "line 11: entry seq 9: expected seq 10, out of order or duplicated"

    forger = AuditChain(LOG_ID, Ed25519PrivateKey.generate())
    previous = AuditEntry.parse(day_lines[9])
    forger.head = type(forger.head)(previous.seq + 1, previous.hash)
    forged = forger.build("ballots_cast", {"count": 4}, fixed_clock()).encoded()
    inserted = [*day_lines[:10], forged, *day_lines[10:]]
    problems = _problems(inserted, signing_key)
    assert problems[0] == "line 11: entry seq 10: signature does not verify (altered or forged entry)"
    assert problems[1] == "line 12: entry seq 10: expected seq 11, out of order or duplicated"


def test_a_cut_tail_is_caught_only_against_a_recorded_head(day_lines: list[bytes], signing_key) -> None:
    recorded_head = AuditEntry.parse(day_lines[-1]).hash
    cut = day_lines[:-2]
    assert verify_lines(cut, signing_key.public_key()).ok
    result = verify_lines(cut, signing_key.public_key(), expected_head=recorded_head)
    assert [str(p) for p in result.problems] == [
        f"line {len(cut) + 1}: entry {recorded_head.hex()} is not in the log: entries cut from the end"
    ]


def test_refuses_a_log_signed_by_another_key(day_lines: list[bytes]) -> None:
    problems = _problems(day_lines, Ed25519PrivateKey.generate())
    assert problems[0].startswith("line 1: entry seq 0: signature does not verify")
    assert "line 1: the log does not start with log_created for this key" in problems


def test_torn_last_line_is_cut_and_recorded(log_path: Path, signing_key, day_lines, caplog) -> None:
    torn = b'{"data":{"ballot_id":"0000'
    with log_path.open("ab") as handle:
        handle.write(torn)
    with caplog.at_level(logging.WARNING, logger="audit.store"):
        reopened = AuditLog.open(log_path, signing_key, LOG_ID, clock=fixed_clock)
    reopened.close()
    assert "cut off a torn last line of 26 bytes" in caplog.text
    lines = _lines(log_path)
    assert lines[:-1] == day_lines
    recovered = AuditEntry.parse(lines[-1])
    assert recovered.kind == "log_recovered"
    assert recovered.data["discarded_bytes"] == len(torn)
    assert verify_lines(lines, signing_key.public_key()).ok


def test_a_torn_first_line_starts_the_log_afresh(log_path: Path, signing_key) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_bytes(b'{"data":{"lo')
    AuditLog.open(log_path, signing_key, LOG_ID).close()
    kinds = [AuditEntry.parse(line).kind for line in _lines(log_path)]
    assert kinds == ["log_created", "log_recovered"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda lines: [*lines[:6], lines[6].replace(b'"outcome":"cast"', b'"outcome":"refused"'), *lines[7:]],
        lambda lines: [*lines[:4], *lines[5:]],
        lambda lines: [*lines, b"not json at all"],
    ],
    ids=["altered", "removed", "garbage-complete-line"],
)
def test_a_complete_bad_line_is_evidence_and_never_repaired(log_path: Path, signing_key, day_lines, damage) -> None:
    damaged = b"".join(line + b"\n" for line in damage(day_lines))
    log_path.write_bytes(damaged)
    with pytest.raises(AuditLogCorrupt, match="kept untouched as evidence"):
        AuditLog.open(log_path, signing_key, LOG_ID)
    assert log_path.read_bytes() == damaged


def test_refuses_another_devices_log(log_path: Path, signing_key, day_lines) -> None:
    with pytest.raises(AuditLogCorrupt, match=r"is the log of 'terminal-07\.booth', not 'terminal-08\.booth'"):
        AuditLog.open(log_path, signing_key, "terminal-08.booth")


def test_only_one_writer(audit_log: AuditLog, signing_key) -> None:
    with pytest.raises(AuditLogBusy, match="already open for writing"):
        AuditLog.open(audit_log.path, signing_key, LOG_ID)


WRITER = """
import sys
from pathlib import Path
from audit.keys import load_signing_key
from audit.store import AuditLog
log = AuditLog.open(Path(sys.argv[1]), load_signing_key(Path(sys.argv[2])), sys.argv[3])
n = 0
while True:
    n += 1
    entry = log.append("ballots_cast", count=n)
    print(entry.seq, flush=True)
"""


def test_kill_9_mid_append_leaves_a_verifiable_log(log_path: Path, key_file: Path, signing_key) -> None:
    """Kill a writer at random moments, repeatedly; every acknowledged entry survives and verifies."""
    acknowledged = -1
    for round_number in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log_path), str(key_file), LOG_ID],
            stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        try:
            assert writer.stdout is not None
            target = acknowledged + 40 + 13 * round_number
            while acknowledged < target:
                line = writer.stdout.readline()
                assert line, "the writer died on its own"
                acknowledged = int(line)
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(timeout=10)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=10)
        with AuditLog.open(log_path, signing_key, LOG_ID) as reopened:
            assert reopened.head == AuditEntry.parse(_lines(log_path)[-1]).hash
        lines = _lines(log_path)
        result = verify_lines(lines, signing_key.public_key())
        assert result.ok, result.problems
        seqs = [json.loads(line)["seq"] for line in lines]
        assert seqs == list(range(len(lines)))
        assert max(seqs) >= acknowledged
        acknowledged = max(seqs)
