"""The product as a booth gets it: its wheel, installed non-editable into a fresh virtualenv.

Everything below runs the installed commands from a working directory outside the checkout,
with nothing of the checkout on the import path, so a file the wheel does not ship (the kiosk
page, the pin map, the companion firmware) fails here instead of on a terminal. Stand-ins are
the usual ones: a real Mosquitto with the station's TLS, the PN532 emulator on a
pseudo-terminal, and the virtual companion board (the installed firmware in the MicroPython
unix port, started from the installed package).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_root import REPO, Installed
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(REPO / "tests" / "hub"))
sys.path.insert(0, str(REPO / "tests" / "booth"))

from booth_fixtures import make_voters, terminal_data_dir
from hub_fixtures import write_election

from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from infra.broker import Broker, free_port
from station_hub.station import Station, init_station

pytestmark = pytest.mark.slow  # a virtualenv, a real install, a broker and Chromium: about a minute

ARTIFACTS = REPO / "test-artifacts" / "deploy"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
RUNTIME_FILES = (
    "appliance/ui/static/index.html", "appliance/ui/static/app.js", "appliance/ui/static/app.css",
    "hw/schematics/pinmap.json",
    "companion/firmware/board.py", "companion/firmware/link.py", "companion/firmware/main.py",
    "companion/firmware/unix/boot_virtual.py", "companion/firmware/unix/machine.py",
)  # fmt: skip
# Started with the installed Python: the factory image of the board is the installed firmware.
VIRTUAL_BOARD = """
import sys
from pathlib import Path
from appliance.simulators.companion_board import VirtualCompanionBoard, install_factory_firmware
root, link = Path(sys.argv[1]), Path(sys.argv[2])
install_factory_firmware(root)
with VirtualCompanionBoard(root, port_link=link):
    print("ready", flush=True)
    sys.stdin.read()
"""
WHERE_FROM = """
import json, sys
import appliance, hw.schematics, companion.firmware
from appliance.ui.server import static_dir
from appliance.drivers.pinmap import load_pinmap
from appliance.drivers.companion import firmware_sources, local_firmware_hash
print(json.dumps({
    "modules": [appliance.__file__, hw.schematics.__file__, companion.firmware.__file__],
    "kiosk": str(static_dir()), "pinmap": str(load_pinmap().source),
    "firmware": [str(path) for path in firmware_sources().values()],
    "firmware_hash": local_firmware_hash(), "sys_path": sys.path,
}))
"""


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Station:
    root = tmp_path_factory.mktemp("wheel-station")
    election = write_election(root / "election-package")
    return init_station(root / "station", "st-1", election, ["t1"], ["op1"], port=free_port())


@pytest.fixture(scope="module")
def broker(station: Station, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(station, tmp_path_factory.mktemp("wheel-broker") / "mosquitto.log") as running:
        yield running


@pytest.fixture(scope="module")
def pn532() -> Iterator[PtyPn532]:
    pty = PtyPn532(Pn532Emulator(None))
    try:
        yield pty
    finally:
        pty.close()


@pytest.fixture(scope="module")
def companion_board(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The virtual board, run by the installed package; yields the port the booth opens."""
    base = tmp_path_factory.mktemp("wheel-board")
    link = base / "ttyACM-virtual"
    board = subprocess.Popen(
        [installed.bin("python"), "-c", VIRTUAL_BOARD, str(base / "board"), str(link)],
        cwd=installed.workdir, env=installed.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert board.stdout is not None and board.stdout.readline().strip() == "ready"
        yield str(link)
    finally:
        assert board.stdin is not None
        board.stdin.close()
        try:
            board.wait(timeout=20)
        except subprocess.TimeoutExpired:
            board.kill()
            board.wait(timeout=10)


@pytest.fixture(scope="module")
def terminal(
    station: Station, broker: Broker, pn532: PtyPn532, companion_board: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A provisioned terminal using the PN532 over UART and a companion board."""
    base = tmp_path_factory.mktemp("wheel-terminal")
    voters = make_voters(base / "jpki-ca", 1)
    config = terminal_data_dir(station, voters, "t1", base / "t1", "unused")
    data = json.loads(config.read_text())
    data["reader"] = {"kind": "pn532-uart", "port": pn532.port}
    data["companion_port"] = companion_board
    config.write_text(json.dumps(data))
    return config


def site_packages(installed: Installed) -> Path:
    (found,) = (installed.venv / "lib").glob("python3*/site-packages")
    return found


def test_the_wheel_ships_every_file_the_product_reads(product_wheel: Path) -> None:
    with zipfile.ZipFile(product_wheel) as wheel:
        names = set(wheel.namelist())
        for name in RUNTIME_FILES:
            assert name in names, f"{name} is not in {product_wheel.name}"
            source = REPO / name
            assert wheel.read(name) == source.read_bytes(), f"{name} differs from its source"
        assert not [n for n in names if n.startswith(("tests/", "build/")) or "__pycache__" in n]


def test_the_installed_product_reads_its_files_from_the_virtualenv(installed: Installed) -> None:
    done = installed.run(installed.bin("python"), "-c", WHERE_FROM)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    packages = site_packages(installed)
    for path in (*found["modules"], found["kiosk"], found["pinmap"], *found["firmware"]):
        assert Path(path).is_relative_to(packages), f"{path} is not from the installed package"
        assert Path(path).exists()
    assert not [entry for entry in found["sys_path"] if entry and Path(entry).is_relative_to(REPO)]
    assert Path(found["pinmap"]).read_bytes() == (REPO / "hw/schematics/pinmap.json").read_bytes()
    shipped = sorted(p.name for p in (REPO / "appliance/ui/static").iterdir() if p.is_file())
    assert {"app.css", "app.js", "index.html"} <= set(shipped)
    assert sorted(Path(found["kiosk"]).iterdir()) == sorted(packages / "appliance/ui/static" / n for n in shipped)
    assert (installed.venv / "bin/micropython").exists()  # the virtual board's runtime came along


def test_booth_self_test_passes_from_the_installed_package(installed: Installed, terminal: Path) -> None:
    done = installed.run(installed.bin("booth"), "self-test", "--config", str(terminal))
    assert done.returncode == 0, done.stdout + done.stderr
    where = site_packages(installed)
    assert f"[ok] installed files: kiosk page, pin map (pinmap.json) and companion firmware in {where}" in done.stdout
    for line in ("[ok] companion board: firmware", "[ok] card reader: pn532-uart", "[ok] certificates",
                 "[ok] station broker", "self-test: all checks passed"):  # fmt: skip
        assert line in done.stdout, done.stdout


def kiosk_url(log: Path, booth: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """The URL `booth run` announces once its kiosk page is served."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and booth.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if "kiosk page on " in line:
                return line.split("kiosk page on ", 1)[1].strip()
        time.sleep(0.2)
    raise AssertionError(f"booth run announced no kiosk page:\n{log.read_text(errors='replace')}")


def test_the_installed_booth_serves_its_kiosk_page_to_chromium(
    installed: Installed, terminal: Path, tmp_path: Path
) -> None:
    log = tmp_path / "booth.log"
    with log.open("wb") as output:
        booth = subprocess.Popen(
            [installed.bin("booth"), "run", "--config", str(terminal)],
            cwd=installed.workdir, env=installed.env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = kiosk_url(log, booth)
        assert url.startswith("http://127.0.0.1:")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        statuses: dict[str, int] = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("response", lambda response: statuses.__setitem__(response.url, response.status))
                page.goto(url)
                expect(page.locator("#screen[data-screen]")).to_be_attached(timeout=20_000)  # app.js ran
                assert page.evaluate("document.styleSheets[0].cssRules.length") > 0  # app.css applied
                page.screenshot(path=str(ARTIFACTS / "installed-booth-kiosk.png"))
            finally:
                browser.close()
        assert statuses.get(url) == 200, statuses
        for name in ("app.js", "app.css"):
            assert statuses.get(f"{url}static/{name}") == 200, statuses
    finally:
        booth.send_signal(signal.SIGTERM)
        try:
            booth.wait(timeout=30)
        except subprocess.TimeoutExpired:
            booth.kill()
            booth.wait(timeout=10)
    assert booth.returncode == 0, log.read_text(errors="replace")
