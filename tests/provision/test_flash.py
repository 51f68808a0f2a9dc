"""flash.sh end to end: the station package from a real hub, real mpremote against the virtual
companion board, enrolment by `station-hub enroll`; and every refusal leaves the terminal as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from provision_fixtures import REPO, Flash, enroll, station_hub, tree_hash

from appliance.drivers.companion import CompanionBoard, LinkRestored, firmware_sources, local_firmware_hash
from appliance.outbox import Outbox
from appliance.simulators.companion_board import VirtualCompanionBoard, install_factory_firmware
from station_hub.station import DeviceDirectory, Station

pytestmark = pytest.mark.timeout(300)
READER = ("--reader", "pcsc")


def board_hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}


def wanted_hashes() -> dict[str, str]:
    return {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in firmware_sources().items()}


def provision_fully(flash: Flash, hub: Station, package: Path, data: Path, *board: str) -> None:
    """The documented path: flash.sh (request), station-hub enroll, flash.sh --certificate."""
    first = flash("--package", str(package), *board, *READER, data_dir=data)
    assert first.returncode == 3, first.stdout + first.stderr
    certificate = enroll(hub, data, package.parent / "T01.pem")
    second = flash("--package", str(package), "--certificate", str(certificate), data_dir=data)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "self-test: all checks passed" in second.stdout


def test_flash_requests_a_certificate_then_installs_it_and_self_tests(
    tmp_path: Path, hub: Station, package: Path, flash: Flash, virtual_board, board_root: Path
):
    data = tmp_path / "terminal"
    first = flash("--package", str(package), "--board", virtual_board.port, *READER)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "certificate: waiting" in first.stdout and "WAITING FOR THE CERTIFICATE" in first.stdout
    assert "companion firmware: created" in first.stdout
    assert "[1/8] device key: created" in first.stdout  # progress, step by step
    assert board_hashes(board_root) == wanted_hashes()
    key = data / "device" / "device.key"
    assert key.stat().st_mode & 0o077 == 0
    secret = key.read_bytes().splitlines()[1]
    assert all(secret not in p.read_bytes() for p in hub.directory.rglob("*") if p.is_file())
    directory = DeviceDirectory(hub)  # as the running ledger and roll hold it
    before = directory.lookup("T01")  # init's training certificate, if init made one, else unknown

    certificate = enroll(hub, data, tmp_path / "stick" / "T01.pem")
    assert not hub.key_file("T01").exists(), "after enrolment no key of T01 is on the hub"
    second = flash("--package", str(package), "--certificate", str(certificate))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "certificate: installed" in second.stdout
    assert "companion firmware: unchanged" in second.stdout  # --board kept from the first run
    assert "self-test: all checks passed" in second.stdout and "booth configuration" in second.stdout
    assert not (data / "device" / "request.csr").exists()
    config = json.loads((data / "config.json").read_text())
    assert config["reader"] == {"kind": "pcsc", "name": None}
    assert config["companion_port"] == virtual_board.port
    assert config["broker"] == f"{hub.host}:{hub.port}"
    assert config["token_key"] == "device/token.pem" and (data / "device" / "token.pem").is_file()
    assert config["card"]["trust_anchors"] == ["card/auth-ca.pem"]
    assert "roll_salt" not in config["card"], "the roll salt stays with the roll"
    # the hub trusts the key the terminal made (the same directory instance: no restart) and no
    # longer a training key it made itself
    trusted = directory.lookup("T01")
    assert not isinstance(trusted, str) and trusted != before
    assert trusted.public_bytes_raw() == _terminal_public_key(data)
    assert not hasattr(trusted, "keys") or len(trusted.keys) == 1
    with CompanionBoard(virtual_board.port) as driver:
        assert driver.wait_for(LinkRestored, timeout=5).firmware_hash == local_firmware_hash()


def _terminal_public_key(data: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((data / "device" / "device.key").read_bytes(), None)
    return key.public_key().public_bytes_raw()  # type: ignore[union-attr]


def test_a_rerun_changes_nothing_and_keeps_site_settings(
    tmp_path: Path, hub: Station, package: Path, flash: Flash, virtual_board, board_root: Path
):
    data = tmp_path / "terminal"
    provision_fully(flash, hub, package, data, "--board", virtual_board.port)
    config = json.loads((data / "config.json").read_text())
    config |= {"ui_port": 8123, "timeouts": {"voting": 90, "result": 20}, "site_note": "booth 3, left wall"}
    (data / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    before, board_before = tree_hash(data), tree_hash(board_root)

    again = flash("--package", str(package))  # no --board, --reader, --certificate: all kept
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing changed" in again.stdout
    assert again.stdout.count(": unchanged") == 7  # key, certificate, 2 trusts, election, config, board
    assert "self-test: all checks passed" in again.stdout
    assert tree_hash(data) == before
    assert tree_hash(board_root) == board_before

    # the hub revokes another terminal: the new package carries the new CRL; site settings stay
    assert station_hub("revoke", str(hub.directory), "T02").returncode in (0, 1)
    assert station_hub("export-package", str(hub.directory), str(package)).returncode == 0
    updated = flash("--package", str(package))
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "station trust: updated — CRL" in updated.stdout
    kept = json.loads((data / "config.json").read_text())
    assert kept["ui_port"] == 8123 and kept["site_note"] == "booth 3, left wall"
    assert kept["timeouts"] == {"voting": 90, "result": 20}


def _ballot_in_outbox(data: Path) -> None:
    """A cast ballot not yet acknowledged, as the booth leaves it (schema from appliance.outbox)."""
    Outbox(data / "outbox" / "outbox.db").close()
    db = sqlite3.connect(data / "outbox" / "outbox.db")
    db.execute(
        "INSERT INTO outbox (kind, ballot_hash, payload_hash, payload) VALUES ('cast', ?, ?, ?)",
        (b"\x01" * 32, b"\x02" * 32, b"{}"),
    )
    db.commit()
    db.close()


def test_an_election_swap_is_refused_while_the_outbox_holds_ballots(
    tmp_path: Path, hub: Station, package: Path, flash: Flash, other_election_hub_template: Path
):
    data = tmp_path / "terminal"
    provision_fully(flash, hub, package, data, "--no-board")
    _ballot_in_outbox(data)
    other = tmp_path / "other-package.json"
    assert station_hub("export-package", str(other_election_hub_template), str(other)).returncode == 0
    before = tree_hash(data)
    swap = flash("--package", str(other))
    assert swap.returncode == 1
    assert "refusing to change the election" in swap.stderr and "outbox holds 1" in swap.stderr
    assert tree_hash(data) == before, "nothing changed"

    # once the hub acknowledged everything, the swap goes ahead and keeps the old (empty) outbox aside
    db = sqlite3.connect(data / "outbox" / "outbox.db")
    db.execute("DELETE FROM outbox")
    db.commit()
    db.close()
    allowed = flash("--package", str(other))
    assert allowed.returncode == 3, allowed.stdout + allowed.stderr  # another station: enrol again
    assert "outbox: archived" in allowed.stdout and "election package: updated" in allowed.stdout
    assert not (data / "outbox").exists() and list(data.glob("outbox.before-*"))


def test_a_terminal_the_station_does_not_know_is_refused(tmp_path: Path, hub: Station, package: Path, flash: Flash):
    fresh = flash("--package", str(package), "--no-board", *READER, terminal="T99")
    assert fresh.returncode == 1
    assert "does not know terminal 'T99'" in fresh.stderr and "T01, T02" in fresh.stderr
    assert not (tmp_path / "terminal").exists()
    data = tmp_path / "terminal"
    provision_fully(flash, hub, package, data, "--no-board")
    before = tree_hash(data)
    again = flash("--package", str(package), terminal="T99")
    assert again.returncode == 1 and "does not know terminal" in again.stderr
    assert tree_hash(data) == before


def test_a_failing_board_stops_before_anything_is_written(tmp_path: Path, hub: Station, package: Path, flash: Flash):
    data = tmp_path / "terminal"
    missing = flash("--package", str(package), "--board", "/dev/ttyNOPE", *READER)
    assert missing.returncode == 1
    assert "/dev/ttyNOPE" in missing.stderr and "nothing was changed" in missing.stderr
    assert not data.exists()
    provision_fully(flash, hub, package, data, "--no-board")
    before = tree_hash(data)
    dead = tmp_path / "ttyDEAD"  # a serial device with no board behind it: mpremote gets no answer
    dead.symlink_to("/dev/null")
    again = flash("--package", str(package), "--board", "/dev/ttyNOPE")
    assert again.returncode == 1 and tree_hash(data) == before
    silent = flash("--package", str(package), "--board", str(dead))
    assert silent.returncode == 1 and "does not answer mpremote" in silent.stderr
    assert tree_hash(data) == before


def test_a_certificate_for_another_key_or_terminal_is_refused(
    tmp_path: Path, hub: Station, package: Path, flash: Flash
):
    data, other = tmp_path / "terminal", tmp_path / "other-terminal"
    assert flash("--package", str(package), "--no-board", *READER, data_dir=data).returncode == 3
    assert flash("--package", str(package), "--no-board", *READER, data_dir=other).returncode == 3
    foreign = enroll(hub, other, tmp_path / "other.pem")  # T01's name, the other device's key
    before = tree_hash(data)
    refused = flash("--package", str(package), "--certificate", str(foreign), data_dir=data)
    assert refused.returncode == 1 and "certifies another key" in refused.stderr
    assert tree_hash(data) == before


def test_dry_run_writes_nothing_and_leaves_the_board_alone(
    tmp_path: Path, package: Path, flash: Flash, virtual_board, board_root: Path
):
    result = flash("--package", str(package), "--board", virtual_board.port, *READER, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would create" in result.stdout and "would check" in result.stdout
    assert not (tmp_path / "terminal").exists()
    assert list(board_root.iterdir()) == []


@pytest.mark.slow
def test_a_flash_cut_off_midway_says_so_and_keeps_the_old_firmware(
    tmp_path: Path, package: Path, flash: Flash, board_root: Path
):
    install_factory_firmware(board_root)
    main = board_root / "main.py"
    main.write_text(main.read_text().replace('FIRMWARE_VERSION = "1.0.0"', 'FIRMWARE_VERSION = "0.9.0"'))
    old = board_hashes(board_root)
    board = VirtualCompanionBoard(board_root, port_link=tmp_path / "ttyCOMPANION").start()
    try:
        board.unplug_after(600, once_seen=b"main.py.new")  # cable pulled during the copy
        result = flash("--package", str(package), "--board", board.port, *READER)
        assert board.unplugged.is_set()
    finally:
        board.stop()
    assert result.returncode == 1
    assert "No firmware file was replaced" in result.stderr and "previous firmware" in result.stderr
    after = board_hashes(board_root)
    assert {name: after[name] for name in old} == old  # every old file intact
    with VirtualCompanionBoard(board_root, port_link=tmp_path / "ttyCOMPANION") as board:
        with CompanionBoard(board.port) as driver:
            assert driver.wait_for(LinkRestored, timeout=5).firmware_version == "0.9.0"
        rerun = flash("--package", str(package), "--board", board.port)
        assert rerun.returncode == 3, rerun.stdout + rerun.stderr
        assert "companion firmware: updated" in rerun.stdout
    assert board_hashes(board_root) == wanted_hashes()


def test_clear_errors_for_bad_arguments(tmp_path: Path, package: Path, flash: Flash):
    missing = flash("--package", str(tmp_path / "no-such-package.json"), "--no-board", *READER)
    assert missing.returncode == 1 and "station package" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_bytes(package.read_bytes().replace(b'"version":1', b'"version":true'))
    refused = flash("--package", str(broken), "--no-board", *READER)
    assert refused.returncode == 1 and "refused" in refused.stderr
    no_reader = flash("--package", str(package), "--no-board")
    assert no_reader.returncode == 1 and "--reader" in no_reader.stderr
    no_board = flash("--package", str(package), *READER)
    assert no_board.returncode == 1 and "--board PORT" in no_board.stderr
    uart = flash("--package", str(package), "--no-board", "--reader", "pn532-uart")
    assert uart.returncode == 1 and "--reader-port" in uart.stderr
    assert not (tmp_path / "terminal").exists()
    unknown = subprocess.run(["bash", str(REPO / "flash.sh"), "--frobnicate"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown option" in unknown.stderr
    usage = subprocess.run(["bash", str(REPO / "flash.sh"), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--package" in usage.stdout and "station-hub enroll" in usage.stdout


def test_pn532_readers_are_configured_with_their_settings(tmp_path: Path, package: Path, flash: Flash):
    for kind, extra, expected in [
        ("pn532-uart", ["--reader-port", "/dev/serial0"], {"kind": "pn532-uart", "port": "/dev/serial0"}),
        ("pn532-i2c", ["--reader-address", "0x24"], {"kind": "pn532-i2c", "address": 36}),
        ("pn532-spi", [], {"kind": "pn532-spi"}),
    ]:
        data = tmp_path / kind
        result = flash("--package", str(package), "--no-board", "--reader", kind, *extra, data_dir=data)
        assert result.returncode == 3, result.stdout + result.stderr
        assert json.loads((data / "config.json").read_text())["reader"] == expected
        shutil.rmtree(data)
