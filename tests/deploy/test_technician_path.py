"""The technician's whole path, exactly as docs/provisioning.md says, with the product installed
from its wheel (non-editable, a fresh virtualenv, run from outside the checkout):

    station-hub init (no terminal keys) → station-hub run → station-hub export-package
    → flash.sh against the virtual companion board (device key, request) → station-hub enroll
    → flash.sh --certificate → booth run → polls open → a voter casts → the hub acknowledges,

and the hub process is the one started before the terminal was enrolled: never restarted.
Stand-ins: the PN532 emulator on a pty (the booth's reader), the virtual companion board run
by the installed package, the test JPKI CA's virtual card; Mosquitto, ledger and roll are real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_root import REPO, Installed
from test_wheel_install import VIRTUAL_BOARD, kiosk_url

from appliance.card import AuthMode
from appliance.card.testca import TestCa
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.scripted_voter import ScriptedVoter
from election.manifest import Manifest
from election.simulation import ceremony_to_files
from infra.broker import free_port
from station_hub.ledger_store import LedgerStore
from station_hub.station import Station

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PIN = "1234"


def manifest() -> Manifest:
    return Manifest.from_json({
        "version": 2, "election_id": "tech-path-2026", "name": {"en": "Technician path", "ja": "技術者"},
        "contests": [{"id": "mayor", "name": {"en": "Mayor", "ja": "市長"}, "limit": 1, "selections": [
            {"id": "a", "name": {"en": "A", "ja": "A"}}, {"id": "b", "name": {"en": "B", "ja": "B"}}]}],
        "batch_min": 1, "mode": "rehearsal",
    })  # fmt: skip


def wait_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"station-hub run exited:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the station broker did not open port {port}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def pn532() -> Iterator[PtyPn532]:
    pty = PtyPn532(Pn532Emulator(None))
    try:
        yield pty
    finally:
        pty.close()


def test_a_terminal_provisioned_as_documented_gets_its_ballot_accepted(
    installed: Installed, tmp_path: Path, pn532: PtyPn532
) -> None:
    def run(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=installed.workdir, env=env or installed.env, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip

    # what the election office hands the station: the election package, JPKI trust, the roll
    ceremony_to_files(manifest(), 1, 1, tmp_path / "election", tmp_path / "trustees")
    cards = TestCa.create(tmp_path / "jpki")
    voter = cards.issue_card(pin=PIN)
    salt = tmp_path / "roll-salt.hex"
    salt.write_text(os.urandom(32).hex())
    voters = tmp_path / "voter-keys.json"
    voters.write_text(json.dumps(cards.roll(bytes.fromhex(salt.read_text()), AuthMode.AUTH)))
    hub_dir, port = tmp_path / "hub", free_port()

    # 1. the hub (docs/operations.md §2): no terminal keys are made here
    made = run(installed.bin("station-hub"), "init", str(hub_dir), "--station", "station-12",
               "--election", str(tmp_path / "election"), "--terminal", "T07", "--terminal", "T08",
               "--operator", "op1", "--voters", str(voters), "--roll-salt", str(salt),
               "--jpki-ca", str(cards.directory / "auth-ca.pem"), "--jpki-crl", str(cards.crl_path(AuthMode.AUTH)),
               "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    log = tmp_path / "hub.log"
    with log.open("wb") as output:
        hub = subprocess.Popen([installed.bin("station-hub"), "run", str(hub_dir)], cwd=installed.workdir,
                               env=installed.env, stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    board = booth = None
    try:
        wait_port(port, hub, log)
        # 2. the station package, carried to the terminal on the stick
        stick = tmp_path / "stick"
        stick.mkdir()
        exported = run(installed.bin("station-hub"), "export-package", str(hub_dir), str(stick / "package.json"))
        assert exported.returncode == 0, exported.stderr

        # 3. flash.sh on the terminal, with the installed Python; the companion board is virtual
        board = subprocess.Popen([installed.bin("python"), "-c", VIRTUAL_BOARD, str(tmp_path / "board"),
                                  str(tmp_path / "ttyACM0")], cwd=installed.workdir, env=installed.env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert board.stdout is not None and board.stdout.readline().strip() == "ready"
        data = tmp_path / "booth-data"
        flash_env = installed.env | {"PYTHON": installed.bin("python")}
        flash = ("bash", str(REPO / "flash.sh"), "--package", str(stick / "package.json"), "--terminal", "T07",
                 "--data-dir", str(data))  # fmt: skip
        first = run(*flash, "--board", str(tmp_path / "ttyACM0"), "--reader", "pn532-uart",
                    "--reader-port", pn532.port, env=flash_env)  # fmt: skip
        assert first.returncode == 3, first.stdout + first.stderr
        assert "companion firmware: unchanged" in first.stdout  # the factory image is the shipped firmware

        # 4. enrolment on the hub (which keeps running), then the certificate back to the terminal
        shutil_copy(data / "device" / "request.csr", stick / "T07.csr")
        enrolled = run(installed.bin("station-hub"), "enroll", str(hub_dir), str(stick / "T07.csr"),
                       str(stick / "T07.pem"))  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        assert not (hub_dir / "keys" / "T07.key").exists()
        second = run(*flash, "--certificate", str(stick / "T07.pem"), env=flash_env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "self-test: all checks passed" in second.stdout

        # 5. the booth unit's command, with a site booth.toml like the installer writes
        site = tmp_path / "booth.toml"
        site.write_text(f'mode = "training"\ndata_dir = "{data}"\n\n[ui]\nport = {free_port()}\n')
        checked = run(installed.bin("booth"), "self-test", "--config", str(site))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        booth_log = tmp_path / "booth.log"
        with booth_log.open("wb") as output:
            booth = subprocess.Popen([installed.bin("booth"), "run", "--config", str(site)], cwd=installed.workdir,
                                     env=installed.env, stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
        url = kiosk_url(booth_log, booth)
        opened = run(installed.bin("station-hub"), "polls", str(hub_dir), "open", "--operator", "op1",
                     "--training-cards")  # fmt: skip
        assert opened.returncode == 0, opened.stdout + opened.stderr

        # 6. a voter: card on the PN532, PIN, a choice, cast; the hub says it holds the ballot
        scripted = ScriptedVoter(url, timeout=60)
        scripted.wait_screen("idle", card_present=False)
        with pn532.lock:
            pn532.emulator.insert(VirtualJpkiCard(voter))
        scripted.wait_screen("pin")
        scripted.pin(PIN)
        scripted.wait_screen("ballot")
        scripted.vote({"mayor": ["a"]})
        scripted.seal()
        receipt = scripted.cast(wait_for_code=True)
        assert receipt["receipt"] == "held" and receipt["tracking_code"], f"not held by the hub: {receipt}"
        assert hub.poll() is None, "the hub ran throughout: never restarted"
    finally:
        for process in (booth, hub):
            if process is not None:
                stop(process)
        if board is not None and board.stdin is not None:
            board.stdin.close()
            board.wait(timeout=20)
    store = LedgerStore(Station.open(hub_dir).ledger_db)
    try:
        kinds = [entry.kind for entry, _payload in store.ballots()]
    finally:
        store.close()
    assert kinds == ["cast"], kinds


def shutil_copy(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes())
