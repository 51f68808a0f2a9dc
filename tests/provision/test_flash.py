"""flash.sh end to end: real mpremote against the virtual companion board."""

import hashlib
import os
import subprocess
from pathlib import Path

from appliance.drivers.companion import (
    CompanionBoard,
    LinkRestored,
    firmware_sources,
    local_firmware_hash,
)
from appliance.simulators.companion_board import VirtualCompanionBoard, install_factory_firmware

REPO = Path(__file__).resolve().parents[2]


def flash(tmp_path, station_ca, election_package, port, *extra):
    command = [
        "bash", str(REPO / "flash.sh"),
        "--terminal", "T01",
        "--ca", str(station_ca.directory),
        "--election", str(election_package),
        "--data-dir", str(tmp_path / "terminal"),
        "--board", port,
        *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def board_hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}


def wanted_hashes() -> dict[str, str]:
    return {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in firmware_sources().items()}


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}


def test_flash_provisions_copies_verifies_and_self_tests(
    tmp_path, station_ca, election_package, virtual_board, board_root
):
    result = flash(tmp_path, station_ca, election_package, virtual_board.port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "companion firmware: created" in result.stdout
    assert "self-test: all checks passed" in result.stdout
    assert board_hashes(board_root) == wanted_hashes()
    key = tmp_path / "terminal" / "device" / "device.key"
    assert key.stat().st_mode & 0o077 == 0
    secret = key.read_bytes().splitlines()[1]
    assert all(secret not in p.read_bytes() for p in station_ca.directory.iterdir())
    # the board restarted into the new firmware and answers the driver
    with CompanionBoard(virtual_board.port) as driver:
        assert driver.wait_for(LinkRestored, timeout=5).firmware_hash == local_firmware_hash()


def test_second_run_changes_nothing_and_says_so(tmp_path, station_ca, election_package, virtual_board, board_root):
    first = flash(tmp_path, station_ca, election_package, virtual_board.port)
    assert first.returncode == 0, first.stdout + first.stderr
    terminal_before = snapshot(tmp_path / "terminal")
    board_before = snapshot(board_root)
    second = flash(tmp_path, station_ca, election_package, virtual_board.port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing changed" in second.stdout
    assert second.stdout.count(": unchanged") == 5
    assert snapshot(tmp_path / "terminal") == terminal_before
    assert snapshot(board_root) == board_before


def test_dry_run_writes_nothing_and_leaves_the_board_alone(
    tmp_path, station_ca, election_package, virtual_board, board_root
):
    result = flash(tmp_path, station_ca, election_package, virtual_board.port, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would create" in result.stdout and "would check" in result.stdout
    assert not (tmp_path / "terminal").exists()
    assert list(board_root.iterdir()) == []


def test_a_flash_cut_off_midway_says_so_and_keeps_the_old_firmware(tmp_path, station_ca, election_package, board_root):
    install_factory_firmware(board_root)
    main = board_root / "main.py"
    main.write_text(main.read_text().replace('FIRMWARE_VERSION = "1.0.0"', 'FIRMWARE_VERSION = "0.9.0"'))
    old = board_hashes(board_root)
    board = VirtualCompanionBoard(board_root, port_link=tmp_path / "ttyCOMPANION").start()
    try:
        board.unplug_after(600, once_seen=b"main.py.new")  # cable pulled during the copy
        result = flash(tmp_path, station_ca, election_package, board.port)
        assert board.unplugged.is_set()
    finally:
        board.stop()
    assert result.returncode == 1
    assert "No firmware file was replaced" in result.stderr
    assert "previous firmware" in result.stderr
    after = board_hashes(board_root)
    assert {name: after[name] for name in old} == old  # every old file intact
    # powered up again, the board runs the old firmware; a re-run completes the flash
    with VirtualCompanionBoard(board_root, port_link=tmp_path / "ttyCOMPANION") as board:
        with CompanionBoard(board.port) as driver:
            assert driver.wait_for(LinkRestored, timeout=5).firmware_version == "0.9.0"
        rerun = flash(tmp_path, station_ca, election_package, board.port)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "companion firmware: updated" in rerun.stdout
    assert board_hashes(board_root) == wanted_hashes()


def test_clear_errors_for_bad_arguments(tmp_path, station_ca, election_package):
    missing = flash(tmp_path, station_ca, tmp_path / "no-such-package", os.devnull)
    assert missing.returncode == 1
    assert "election package" in missing.stderr and "does not exist" in missing.stderr
    no_ca = subprocess.run(
        ["bash", str(REPO / "flash.sh"), "--terminal", "T01", "--ca", str(tmp_path),
         "--election", str(election_package), "--data-dir", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert no_ca.returncode == 1 and "station CA" in no_ca.stderr
    unknown = subprocess.run(
        ["bash", str(REPO / "flash.sh"), "--frobnicate"], capture_output=True, text=True, check=False
    )
    assert unknown.returncode == 2 and "unknown option" in unknown.stderr
    usage = subprocess.run(["bash", str(REPO / "flash.sh"), "--help"], capture_output=True, text=True, check=False)
    assert usage.returncode == 0 and "--dry-run" in usage.stdout
