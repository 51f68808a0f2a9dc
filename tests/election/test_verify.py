"""The verifier re-checks a whole record; any flipped bit fails with the right check number."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from election.encoding import canonical_bytes
from election.record import DirectoryRecord
from election.verify import CHECKS, verify_record


def flip_hex_bit(text: str, byte: int = 0, bit: int = 0) -> str:
    raw = bytearray(bytes.fromhex(text))
    raw[byte] ^= 1 << bit
    return raw.hex()


def first(folder: Path) -> Path:
    return sorted(folder.glob("*.json"))[0]


def edit(path: Path, change) -> None:
    data = json.loads(path.read_bytes())
    change(data)
    path.write_bytes(canonical_bytes(data))


def selection(data: dict) -> dict:
    return data["contests"][0]["selections"][0]


# (what is flipped, file, change, the check that must catch it; a flipped bit in a point or
# key may or may not leave a valid encoding, so those name the check for either case)
TAMPERING = [
    ("manifest name", "manifest.json", lambda d: d["name"].update(en="Other"), 2),
    ("joint key", "context.json", lambda d: d.update(joint_public_key=flip_hex_bit(d["joint_public_key"], 0, 1)), 4),
    (
        "trustee commitment",
        "trustees",
        lambda d: d["commitments"].__setitem__(1, flip_hex_bit(d["commitments"][1], 3)),
        3,
    ),
    (
        "trustee proof",
        "trustees",
        lambda d: d["proofs"][0].update(response=flip_hex_bit(d["proofs"][0]["response"])),
        3,
    ),
    (
        "device key",
        "devices.json",
        lambda d: d["devices"][0].update(public_key=flip_hex_bit(d["devices"][0]["public_key"], 5)),
        (5, 7),
    ),
    (
        "ciphertext",
        "ballots",
        lambda d: selection(d)["ciphertext"].update(alpha=flip_hex_bit(selection(d)["ciphertext"]["alpha"], 4)),
        (6, 7),
    ),
    (
        "proof response",
        "ballots",
        lambda d: selection(d)["proof"]["responses"].__setitem__(
            0, flip_hex_bit(selection(d)["proof"]["responses"][0])
        ),
        10,
    ),
    (
        "contest proof",
        "ballots",
        lambda d: d["contests"][1]["proof"]["challenges"].__setitem__(
            0, flip_hex_bit(d["contests"][1]["proof"]["challenges"][0])
        ),
        11,
    ),
    ("device signature", "ballots", lambda d: d.update(signature=flip_hex_bit(d["signature"], 10)), 7),
    ("device statement count", "device_statements", lambda d: d.update(sealed=d["sealed"] + 1), 8),
    (
        "spoiled opening nonce",
        "spoiled",
        lambda d: d["opening"]["contests"][0]["selections"][0].update(
            nonce=flip_hex_bit(d["opening"]["contests"][0]["selections"][0]["nonce"])
        ),
        12,
    ),
    (
        "tally ciphertext",
        "tally.json",
        lambda d: selection(d)["ciphertext"].update(beta=flip_hex_bit(selection(d)["ciphertext"]["beta"], 2)),
        13,
    ),
    ("tally count", "tally.json", lambda d: d.update(ballot_count=d["ballot_count"] - 1), 13),
    ("decryption share", "decryption", lambda d: selection(d).update(share=flip_hex_bit(selection(d)["share"], 1)), 14),
    (
        "decryption proof",
        "decryption",
        lambda d: selection(d)["proof"].update(challenge=flip_hex_bit(selection(d)["proof"]["challenge"])),
        14,
    ),
    ("result", "results.json", lambda d: selection(d).update(total=selection(d)["total"] + 1), 15),
]


def test_the_untouched_record_passes_every_check(simulated_record: Path) -> None:
    report = verify_record(DirectoryRecord(simulated_record))
    assert report.passed, {n: o.problems for n, o in report.outcomes.items() if not o.passed}
    assert report.ballots_checked > 12  # cast and spoiled
    assert [c.number for c in CHECKS] == list(range(1, 21))


@pytest.mark.parametrize(("what", "target", "change", "check"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_fails_the_named_check(record_copy: Path, what, target, change, check) -> None:
    path = record_copy / target
    edit(first(path) if path.is_dir() else path, change)
    report = verify_record(DirectoryRecord(record_copy))
    assert not report.passed
    expected = check if isinstance(check, tuple) else (check,)
    assert set(expected) & set(report.failed_checks()), (what, report.failed_checks())


def test_a_removed_ballot_breaks_the_device_statement_the_chain_and_the_tally(record_copy: Path) -> None:
    first(record_copy / "ballots").unlink()
    assert verify_record(DirectoryRecord(record_copy)).failed_checks() == [8, 13, 17]


def test_a_spoiled_ballot_counted_as_cast_is_caught(record_copy: Path) -> None:
    spoiled = first(record_copy / "spoiled")
    data = json.loads(spoiled.read_bytes())
    (record_copy / "ballots" / spoiled.name).write_bytes(canonical_bytes(data["ballot"]))
    failed = verify_record(DirectoryRecord(record_copy)).failed_checks()
    assert 9 in failed and 13 in failed


def test_too_few_decryption_shares_fail(record_copy: Path) -> None:
    first(record_copy / "decryption").unlink()
    failed = verify_record(DirectoryRecord(record_copy)).failed_checks()
    assert 14 in failed and 15 in failed


def test_garbage_files_give_reasons_not_crashes(record_copy: Path) -> None:
    first(record_copy / "ballots").write_bytes(b"\x00garbage{")
    (record_copy / "results.json").write_bytes(b'{"version": 1.0}')
    report = verify_record(DirectoryRecord(record_copy))
    assert any("not valid JSON" in p for p in report.outcomes[6].problems)
    assert any("integer" in p for p in report.outcomes[15].problems)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "election.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_simulate_then_verify_and_exit_status(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    made = run_cli("simulate", "--ballots", "8", "--out", str(record), "--seed", "1")
    assert made.returncode == 0, made.stderr
    assert "decrypted totals equal the simulated voters' choices" in made.stdout
    ok = run_cli("verify", str(record))
    assert ok.returncode == 0
    assert "[PASS] 15." in ok.stdout and "verification passed" in ok.stdout
    edit(first(record / "ballots"), lambda d: d.update(signature=flip_hex_bit(d["signature"])))
    bad = run_cli("verify", str(record))
    assert bad.returncode == 1
    assert "[FAIL]  7." in bad.stdout and "VERIFICATION FAILED" in bad.stdout


def test_cli_ceremony_writes_package_and_private_key_files(tmp_path: Path) -> None:
    done = run_cli("ceremony", "--trustees", "3", "--quorum", "2", "--out", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "c/package/trustees").iterdir()) == [
        "trustee-1.json", "trustee-2.json", "trustee-3.json"
    ]  # fmt: skip
    key_file = tmp_path / "c/secrets/trustee-1.json"
    assert key_file.stat().st_mode & 0o077 == 0
    bad = run_cli("ceremony", "--trustees", "2", "--quorum", "3", "--out", str(tmp_path / "d"))
    assert bad.returncode != 0 and "quorum" in bad.stderr


def chain_file(record: Path) -> Path:
    return record / "stations" / "station-1" / "chain.jsonl"


def test_an_altered_chain_entry_breaks_the_station_chain(record_copy: Path) -> None:
    lines = chain_file(record_copy).read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["ballot_hash"] = flip_hex_bit(entry["ballot_hash"])
    lines[2] = canonical_bytes(entry) + b"\n"
    chain_file(record_copy).write_bytes(b"".join(lines))
    failed = verify_record(DirectoryRecord(record_copy)).failed_checks()
    assert 16 in failed


def test_a_dropped_last_entry_is_caught_by_the_signed_checkpoint(record_copy: Path) -> None:
    lines = chain_file(record_copy).read_bytes().splitlines(keepends=True)
    chain_file(record_copy).write_bytes(b"".join(lines[:-1]))
    report = verify_record(DirectoryRecord(record_copy))
    assert 16 in report.failed_checks()
    assert any("in no station's chain" in p for p in report.outcomes[17].problems)


def test_a_ballot_added_to_the_record_without_a_chain_entry_is_caught(record_copy: Path) -> None:
    spoiled = json.loads(first(record_copy / "spoiled").read_bytes())
    # Present a challenged ballot as cast: it is chained as spoiled and carries no token.
    (record_copy / "ballots" / first(record_copy / "spoiled").name).write_bytes(canonical_bytes(spoiled["ballot"]))
    report = verify_record(DirectoryRecord(record_copy))
    assert {17, 18} <= set(report.failed_checks())


def test_a_token_from_another_roll_and_a_token_on_a_spoiled_ballot_are_caught(
    record_copy: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from election.stations import StationKeys

    station = record_copy / "stations" / "station-1" / "station.json"
    keys = StationKeys.from_json(json.loads(station.read_bytes()))
    other_roll = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    station.write_bytes(canonical_bytes(StationKeys(keys.station_id, keys.ledger_key, other_roll).to_json()))
    report = verify_record(DirectoryRecord(record_copy))
    assert any("not signed by station station-1's roll" in p for p in report.outcomes[18].problems)

    station.write_bytes(canonical_bytes(keys.to_json()))
    cast = json.loads(first(record_copy / "ballots").read_bytes())
    edit(first(record_copy / "spoiled"), lambda d: d["ballot"].update(token=cast["token"]))
    report = verify_record(DirectoryRecord(record_copy))
    assert any("must not carry the voter's token" in p for p in report.outcomes[18].problems)


def test_cli_finds_a_tracking_code_in_the_record(simulated_record: Path) -> None:
    from election.stations import parse_chain_lines

    entries = list(parse_chain_lines(chain_file(simulated_record).read_bytes()))
    spoiled = next(e for e in entries if e.kind == "spoiled")
    found = run_cli("lookup", str(simulated_record), spoiled.tracking_code.lower().replace("-", " "))
    assert found.returncode == 0
    assert f"station station-1, batch {spoiled.batch}, challenged and spoiled" in found.stdout
    missing = run_cli("lookup", str(simulated_record), "AAAA-AAAA-AAAA-AAAA")
    assert missing.returncode == 1 and "not in this record" in missing.stdout


def test_cli_finds_the_code_a_booth_shows_at_once_from_the_ballot_itself(simulated_record: Path) -> None:
    from election.chain import tracking_code
    from election.encoding import sha256

    ballot = first(simulated_record / "ballots")
    code = tracking_code(sha256(ballot.read_bytes()))  # the booth knows it before any batch exists
    found = run_cli("lookup", str(simulated_record), code)
    assert found.returncode == 0, found.stdout
    assert found.stdout.startswith(f"{code}: station station-1, batch "), found.stdout


def test_cli_finds_a_code_typed_full_width_and_names_characters_no_code_has(simulated_record: Path) -> None:
    from election.stations import parse_chain_lines

    entry = next(parse_chain_lines(chain_file(simulated_record).read_bytes()))
    typed = entry.tracking_code.lower()
    full_width = "".join(chr(ord(ch) + 0xFEE0) if ch.isalnum() else "ー" for ch in typed)
    for text in (typed, full_width):
        found = run_cli("lookup", str(simulated_record), text)
        assert found.returncode == 0, (text, found.stdout)
        assert found.stdout.startswith(f"{entry.tracking_code}: station"), found.stdout
    typo = run_cli("lookup", str(simulated_record), "0" + entry.tracking_code[1:-1] + "ｉ")  # full-width i
    assert typo.returncode == 2, typo.stdout
    assert "a tracking code never contains 0, I" in typo.stderr and "not in this record" not in typo.stdout


# --- issue 11: the verifier accepts nothing that a verifier written from the docs refuses ---


def failed(record: Path) -> dict[int, list[str]]:
    report = verify_record(DirectoryRecord(record))
    return {n: o.problems for n, o in report.outcomes.items() if not o.passed}


@pytest.mark.parametrize(
    ("where", "kind", "check"),
    [
        ("stray.txt", "file", 19),
        ("extra", "folder", 19),
        ("ballots/notes.txt", "file", 6),
        ("ballots/0123.json.bak", "file", 6),
        ("ballots/sub", "folder", 6),
        ("spoiled/README", "file", 6),
        ("device_statements/notes.txt", "file", 8),
        ("device_statements/Terminal 1.json", "file", 8),
        ("trustees/Trustee-9.json", "file", 3),
        ("decryption/old", "folder", 14),
        ("stations/readme.md", "file", 16),
        ("stations/station-1/notes.txt", "file", 16),
        ("stations/.hidden", "folder", 16),
    ],
)
def test_stray_files_and_folders_fail_the_check_owning_the_folder(record_copy: Path, where, kind, check) -> None:
    path = record_copy / where
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"{}")
    problems = failed(record_copy)
    assert check in problems, problems
    assert any("stray" in p for p in problems[check])
    assert set(problems) <= {check, 2}  # a stray trustees/*.json also differs from the context (2)


def test_a_symbolic_link_in_the_record_is_stray(record_copy: Path) -> None:
    (record_copy / "ballots" / "link.json").symlink_to(first(record_copy / "ballots"))
    assert 6 in failed(record_copy)


@pytest.mark.parametrize(
    ("folder", "check"), [("spoiled", 6), ("decryption", 14), ("trustees", 3), ("device_statements", 8)]
)
def test_mandatory_folders_must_exist(record_copy: Path, folder: str, check: int) -> None:
    shutil.rmtree(record_copy / folder)
    problems = failed(record_copy)
    assert any("mandatory folder" in p for p in problems[check]), problems


def test_an_empty_mandatory_folder_is_fine_but_a_missing_station_file_is_not(record_copy: Path) -> None:
    (record_copy / "stations" / "station-1" / "checkpoint.json").unlink()
    assert any("checkpoint.json is missing" in p for p in failed(record_copy)[16])


def test_the_optional_nist_report_is_not_stray(record_copy: Path) -> None:
    (record_copy / "results-nist.json").write_bytes(b"{}")
    assert failed(record_copy) == {}


def test_a_share_with_a_wrong_ballot_count_is_not_used_for_the_results(record_copy: Path) -> None:
    shares = sorted((record_copy / "decryption").glob("*.json"))
    assert len(shares) == 3  # exactly the quorum: one bad share leaves too few
    edit(shares[0], lambda d: d.update(ballot_count=d["ballot_count"] + 1))
    problems = failed(record_copy)
    assert set(problems) == {14, 15}, problems
    assert any("another election or tally" in p for p in problems[14])
    assert any("not checked" in p for p in problems[15])


def test_with_more_shares_than_the_quorum_a_bad_one_is_left_out_and_named(record_copy: Path, tmp_path: Path) -> None:
    """Check 15 passes on the valid shares only when results.json names exactly those."""
    shares = sorted((record_copy / "decryption").glob("*.json"))
    edit(shares[0], lambda d: d.update(base_hash="00" * 32))
    problems = failed(record_copy)
    assert 14 in problems


def test_two_rows_with_the_same_id_up_to_a_trailing_newline_fail(record_copy: Path) -> None:
    edit(record_copy / "manifest.json", lambda d: d["contests"][0]["selections"][1].update(id="candidate-1\n"))
    problems = failed(record_copy)
    assert 1 in problems and any("candidate-1" in p for p in problems[1])


@pytest.mark.parametrize(
    ("target", "check"),
    [
        ("manifest.json", 1),
        ("context.json", 2),
        ("trustees", 3),
        ("devices.json", 5),
        ("device_statements", 8),
        ("ballots", 6),
        ("spoiled", 6),
        ("tally.json", 13),
        ("decryption", 14),
        ("results.json", 15),
        ("stations/station-1/station.json", 16),
        ("stations/station-1/checkpoint.json", 16),
    ],
)
def test_version_true_is_refused_in_every_record_file(record_copy: Path, target: str, check: int) -> None:
    path = record_copy / target
    path = first(path) if path.is_dir() else path
    path.write_bytes(re.sub(rb'"version":[12]([,}])', rb'"version":true\1', path.read_bytes(), count=1))
    problems = failed(record_copy)
    assert check in problems, problems
    assert any("version" in p for p in problems[check])


def test_a_chain_line_with_version_true_fails_check_16(record_copy: Path) -> None:
    lines = chain_file(record_copy).read_bytes().replace(b'"version":2', b'"version":true', 1)
    chain_file(record_copy).write_bytes(lines)
    assert 16 in failed(record_copy)


@pytest.mark.parametrize("change", [b"\n", b" "], ids=["trailing newline", "trailing space"])
def test_a_record_file_that_is_not_canonical_fails(record_copy: Path, change: bytes) -> None:
    path = first(record_copy / "ballots")
    path.write_bytes(path.read_bytes() + change)
    problems = failed(record_copy)
    assert any("canonical" in p for p in problems[6]), problems


def test_a_lone_surrogate_or_a_huge_integer_in_a_record_file_is_a_reason_not_a_crash(record_copy: Path) -> None:
    path = first(record_copy / "ballots")
    path.write_bytes(path.read_bytes().replace(b'"device_id":"', b'"device_id":"\\ud800', 1))
    (record_copy / "tally.json").write_bytes(b'{"ballot_count":' + b"9" * 5000 + b"}")
    problems = failed(record_copy)
    assert any("surrogate" in p for p in problems[6])
    assert any("digits" in p for p in problems[13])


def test_a_trustee_out_of_its_context_order_fails_check_3(record_copy: Path) -> None:
    edit(record_copy / "context.json", lambda d: d["trustee_ids"].reverse())
    problems = failed(record_copy)
    assert any("place in context.trustee_ids" in p for p in problems[3]), problems


def test_the_empty_chain_verifies_with_a_checkpoint_at_its_genesis(tmp_path: Path) -> None:
    from election.manifest import sample_manifest
    from election.record import RecordWriter
    from election.simulation import simulate

    root = tmp_path / "record"
    simulate(sample_manifest(1, 2, 1), RecordWriter(root), 2, trustee_count=1, quorum=1, station_count=2,
             device_count=1, spoil_rate=0.0, seed=3)  # fmt: skip
    empty = root / "stations" / "station-2"
    assert (empty / "chain.jsonl").read_bytes() == b""
    checkpoint = json.loads((empty / "checkpoint.json").read_bytes())
    assert checkpoint["position"] == 0
    assert failed(root) == {}
    (empty / "chain.jsonl").write_bytes(b"\n")  # one empty line is not the empty chain
    assert 16 in failed(root)
    (empty / "chain.jsonl").unlink()
    assert 16 in failed(root)
