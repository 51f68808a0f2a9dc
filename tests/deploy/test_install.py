"""The installer into a temporary root: units, users, permissions, firewall, idempotence.

The product really is installed: the installer builds its virtualenv under the temporary root
(``venv_under_root``) from the product's wheel, exactly as it does on a device.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_root import DEBIAN_EXECUTABLES, REPO, make_target_root
from install import InstallError, InstallOptions, install, main

from appliance.config import READER_KINDS

BOOTH_UNITS = ("polling-station-booth.service", "polling-station-kiosk.service")
HUB_UNITS = (
    "polling-station-broker.service", "polling-station-ledger.service", "polling-station-roll.service",
    "polling-station-forwarder.service",
)  # fmt: skip
HUB = "192.168.50.1"
VENV = "opt/polling-station/venv"


def booth_options(root: Path, wheel: Path, **overrides) -> InstallOptions:
    return InstallOptions(
        root=root, role="booth", hub_host=HUB, source=wheel, venv_under_root=True, skip_apt=True, **overrides
    )


def hub_options(root: Path, wheel: Path, **overrides) -> InstallOptions:
    return InstallOptions(
        root=root, role="hub", hub_host=HUB, station_net="192.168.50.0/24", central_host="203.0.113.10",
        source=wheel, venv_under_root=True, skip_apt=True, **overrides,
    )  # fmt: skip


def installed_python(root: Path, code: str) -> str:
    """Run `code` with the installed virtualenv's Python, from outside the checkout."""
    done = subprocess.run(
        [str(root / VENV / "bin/python"), "-c", code], capture_output=True, text=True, timeout=120, cwd=root
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def booth_root(tmp_path_factory: pytest.TempPathFactory, product_wheel: Path) -> Path:
    root = make_target_root(tmp_path_factory.mktemp("booth") / "root")
    install(booth_options(root, product_wheel, reader="pn532-uart"))
    return root


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory, product_wheel: Path) -> Path:
    root = make_target_root(tmp_path_factory.mktemp("hub") / "root")
    station = root / "var/lib/polling-station/hub"
    for name in (
        "ledger/ledger.db",
        "roll/roll.db",
        "keys/ledger.key",
        "keys/roll.key",
        "keys/broker.key",
        "ca/ca.key",
    ):
        (station / name).parent.mkdir(parents=True, exist_ok=True)
        (station / name).write_text("provisioned by station-hub init\n")
        (station / name).chmod(0o600)
    install(hub_options(root, product_wheel))
    return root


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every line of a unit file; keys may repeat, as systemd allows."""
    section, result = "", []
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            result.append((section, key, value))
    return result


def values(unit: Path, key: str) -> list[str]:
    return [value for _, name, value in directives(unit) if name == key]


def passwd(root: Path) -> dict[str, tuple[int, int, str]]:
    entries = {}
    for line in (root / "etc/passwd").read_text().splitlines():
        name, _, uid, gid, _, _, shell = line.split(":")
        entries[name] = (int(uid), int(gid), shell)
    return entries


def group_members(root: Path, group: str) -> set[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, members = line.split(":")
        if name == group:
            return set(filter(None, members.split(",")))
    raise AssertionError(f"no group {group}")


def verify(root: Path, units: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True, timeout=120
    )


def test_every_hub_service_unit_is_type_notify_with_a_watchdog(hub_root: Path) -> None:
    """Ledger, roll and forwarder tell systemd when they are ready and keep pinging its watchdog
    while their main loop turns (infra/service.py); a stalled loop gets the unit restarted."""
    for unit in HUB_UNITS[1:]:
        path = hub_root / "etc/systemd/system" / unit
        assert values(path, "Type") == ["notify"], unit
        assert values(path, "NotifyAccess") == ["main"], unit
        assert values(path, "WatchdogSec") == ["30s"], unit
        assert values(path, "Restart") == ["always"], unit


def exposure(root: Path, unit: str) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", unit],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize(("fixture", "units"), [("booth_root", BOOTH_UNITS), ("hub_root", HUB_UNITS)])
def test_systemd_analyze_verify_passes_without_a_warning(request, fixture: str, units: tuple[str, ...]) -> None:
    root = request.getfixturevalue(fixture)
    result = verify(root, units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_verify_would_catch_a_broken_unit(booth_root: Path, tmp_path: Path) -> None:
    """The check above can fail: a unit whose program is missing is refused."""
    unit = booth_root / "etc/systemd/system/polling-station-booth.service"
    original = unit.read_text()
    try:
        unit.write_text(original.replace("/venv/bin/booth run", "/venv/bin/no-such-booth run"))
        result = verify(booth_root, ("polling-station-booth.service",))
        assert result.returncode != 0 and "no-such-booth" in result.stderr
    finally:
        unit.write_text(original)


@pytest.mark.parametrize(
    ("fixture", "unit", "ceiling"),
    [
        ("booth_root", "polling-station-booth.service", 2.0),
        ("booth_root", "polling-station-kiosk.service", 5.0),
        ("hub_root", "polling-station-broker.service", 2.0),
        ("hub_root", "polling-station-ledger.service", 2.0),
        ("hub_root", "polling-station-roll.service", 2.0),
        ("hub_root", "polling-station-forwarder.service", 2.0),
    ],
)
def test_sandbox_exposure_stays_low(request, fixture: str, unit: str, ceiling: float) -> None:
    """`systemd-analyze security` scores 0 (locked) to 10 (open); ours stay in its "OK" band."""
    assert exposure(request.getfixturevalue(fixture), unit) <= ceiling


def test_booth_users_groups_and_permissions(booth_root: Path) -> None:
    users = passwd(booth_root)
    assert users["ps-booth"][2] == users["ps-kiosk"][2] == "/usr/sbin/nologin"
    assert "ps-booth" in group_members(booth_root, "dialout")  # companion board and PN532 UART
    assert {"ps-kiosk"} <= group_members(booth_root, "video") & group_members(booth_root, "input")
    data = (booth_root / "var/lib/polling-station/booth").stat()
    assert (data.st_mode & 0o777, data.st_uid) == (0o700, users["ps-booth"][0])
    config = (booth_root / "etc/polling-station/booth.toml").stat()
    assert (config.st_mode & 0o777, config.st_uid, config.st_gid) == (0o640, 0, users["ps-booth"][1])
    site = tomllib.loads((booth_root / "etc/polling-station/booth.toml").read_text())
    pinmap = json.loads((REPO / "hw/schematics/pinmap.json").read_text())
    assert site["reader"] == {"kind": "pn532-uart", "port": pinmap["pn532"]["uart"]["port"]}


def test_the_product_is_installed_from_its_wheel_with_its_files(booth_root: Path, product_wheel: Path) -> None:
    """The installed virtualenv holds the wheel's product, kiosk page, pin map and firmware — no checkout."""
    code = (
        "import json, appliance, importlib.metadata as m\n"
        "from appliance.ui.server import static_dir\n"
        "from appliance.drivers.pinmap import load_pinmap\n"
        "from appliance.drivers.companion import firmware_sources\n"
        "print(json.dumps([appliance.__file__, str(static_dir()), str(load_pinmap().source),"
        " [str(p) for p in firmware_sources().values()],"
        " m.distribution('polling-station').read_text('direct_url.json')]))"
    )
    module, static, pinmap, firmware, direct_url = json.loads(installed_python(booth_root, code))
    venv = str(booth_root / VENV)
    for path in (module, static, pinmap, *firmware):
        assert path.startswith(venv) and Path(path).exists(), path
    assert json.loads(direct_url)["url"].endswith(product_wheel.name)  # from the wheel, not an editable checkout
    for command in ("booth", "audit-log"):
        done = subprocess.run([str(booth_root / VENV / "bin" / command), "--help"], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_hub_has_its_forwarder_unit(hub_root: Path) -> None:
    unit = hub_root / "etc/systemd/system/polling-station-forwarder.service"
    station = "/var/lib/polling-station/hub"
    assert values(unit, "ExecStart") == [f"/opt/polling-station/venv/bin/station-hub forward {station}"]
    assert values(unit, "ConditionPathExists") == [f"{station}/central/link.json"]
    assert values(unit, "ReadWritePaths") == [f"{station}/forward {station}/ledger"]
    hidden = values(unit, "InaccessiblePaths")[0].split()
    assert {f"-{station}/keys/ledger.key", f"-{station}/roll", f"-{station}/ca/ca.key"} <= set(hidden)
    assert values(unit, "IPAddressAllow") == [f"localhost {HUB} 203.0.113.10"]
    assert (hub_root / "etc/systemd/system/multi-user.target.wants/polling-station-forwarder.service").is_symlink()
    forward = (hub_root / station.lstrip("/") / "forward").stat()
    assert (forward.st_mode & 0o777, forward.st_uid) == (0o700, passwd(hub_root)["ps-ledger"][0])
    assert (hub_root / VENV / "bin/station-hub").is_file()


def test_booth_unit_sandbox_and_devices(booth_root: Path) -> None:
    unit = booth_root / "etc/systemd/system/polling-station-booth.service"
    assert values(unit, "ExecStart") == [
        "/opt/polling-station/venv/bin/booth run --config /etc/polling-station/booth.toml"
    ]
    assert values(unit, "User") == ["ps-booth"]
    for key, expected in {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
        "CapabilityBoundingSet": "", "DevicePolicy": "closed", "Restart": "always",
        "ReadWritePaths": "/var/lib/polling-station/booth", "IPAddressAllow": f"localhost {HUB}",
    }.items():  # fmt: skip
        assert values(unit, key) == [expected], key
    assert sorted(values(unit, "DeviceAllow")) == ["char-ttyACM rw", "char-ttyAMA rw", "char-ttyS rw"]
    assert values(unit, "ExecStartPre") == [
        "/opt/polling-station/venv/bin/python -m appliance.production --config /etc/polling-station/booth.toml"
    ]


def test_kiosk_waits_for_the_booth_and_restarts(booth_root: Path) -> None:
    unit = booth_root / "etc/systemd/system/polling-station-kiosk.service"
    assert values(unit, "Requires") == ["polling-station-booth.service"]
    assert "polling-station-booth.service" in values(unit, "After")[0].split()
    assert values(unit, "ExecStartPre") == [
        "/opt/polling-station/libexec/wait-for-http http://127.0.0.1:8080/ --timeout 120"
    ]
    (start,) = values(unit, "ExecStart")
    assert start.startswith("/usr/bin/cage -d -- /usr/bin/chromium --kiosk ")
    assert start.endswith(" http://127.0.0.1:8080/")
    assert values(unit, "Restart") == ["always"]
    assert values(unit, "Conflicts") == ["getty@tty1.service"]
    assert values(unit, "IPAddressAllow") == ["localhost"]


def test_boot_wiring_watchdog_and_no_ssh(booth_root: Path) -> None:
    system = booth_root / "etc/systemd/system"
    for unit in BOOTH_UNITS:
        assert (system / "multi-user.target.wants" / unit).is_symlink()
    assert (system / "sysinit.target.wants/nftables.service").is_symlink()
    for unit in ("ssh.service", "ssh.socket", "sshd.service"):
        assert (system / unit).readlink() == Path("/dev/null")
    watchdog = (booth_root / "etc/systemd/system.conf.d/50-polling-station-watchdog.conf").read_text()
    assert "RuntimeWatchdogSec=14s" in watchdog


def test_hub_units_keep_ledger_and_roll_apart(hub_root: Path) -> None:
    system = hub_root / "etc/systemd/system"
    station = "/var/lib/polling-station/hub"
    for service, other in (("ledger", "roll"), ("roll", "ledger")):
        unit = system / f"polling-station-{service}.service"
        assert values(unit, "User") == [f"ps-{service}"]
        assert values(unit, "ExecStart") == [f"/opt/polling-station/venv/bin/station-hub {service} {station}"]
        assert values(unit, "ReadWritePaths") == [f"{station}/{service}"]
        assert values(unit, "InaccessiblePaths") == [
            f"-{station}/{other} -{station}/keys/{other}.key -{station}/ca/ca.key"
        ]
    broker = system / "polling-station-broker.service"
    assert values(broker, "ExecStart") == [f"/usr/sbin/mosquitto -c {station}/broker/mosquitto.conf"]
    assert (system / "mosquitto.service").readlink() == Path("/dev/null")


def test_hub_data_belongs_to_one_service_each(hub_root: Path) -> None:
    users = passwd(hub_root)
    station = hub_root / "var/lib/polling-station/hub"
    expected = {
        "ledger": (0o700, "ps-ledger"), "ledger/ledger.db": (0o600, "ps-ledger"),
        "roll": (0o700, "ps-roll"), "roll/roll.db": (0o600, "ps-roll"),
        "keys/ledger.key": (0o400, "ps-ledger"), "keys/roll.key": (0o400, "ps-roll"),
        "keys/broker.key": (0o400, "mosquitto"), "ca/ca.key": (0o400, "root"),
    }  # fmt: skip
    uid_of = {name: entry[0] for name, entry in users.items()} | {"root": 0}
    for name, (mode, owner) in expected.items():
        status = (station / name).stat()
        assert (status.st_mode & 0o777, status.st_uid) == (mode, uid_of[owner]), name


@pytest.mark.slow
def test_second_run_changes_nothing_and_keeps_the_edited_config(target_root: Path, product_wheel: Path) -> None:
    install(booth_options(target_root, product_wheel))
    config = target_root / "etc/polling-station/booth.toml"
    config.write_text(config.read_text().replace("port = 8080", "port = 8090"))
    venv = target_root / VENV

    def files() -> dict[Path, bytes]:
        # The virtualenv is reinstalled from the wheel (same files; pip stamps fresh bytecode).
        return {
            path: path.read_bytes()
            for path in target_root.rglob("*")
            if path.is_file() and not path.is_symlink() and not path.is_relative_to(venv)
        }

    snapshot = files()
    install(booth_options(target_root, product_wheel))
    after = files()
    record = target_root / "opt/polling-station/INSTALLED.json"
    assert {path: data for path, data in after.items() if path != record} == {
        path: data for path, data in snapshot.items() if path != record
    }
    edited_hash = hashlib.sha256(config.read_bytes()).hexdigest()
    assert json.loads(record.read_text())["files"]["/etc/polling-station/booth.toml"] == edited_hash
    assert installed_python(target_root, "import appliance.cli; print('ok')") == "ok"


@pytest.mark.slow
def test_the_wheel_is_built_from_the_project_directory(target_root: Path) -> None:
    """--source DIR (the default): a wheel is built from a clean copy, then installed like any wheel."""
    done = install(booth_options(target_root, REPO))
    assert any(line.endswith("-py3-none-any.whl") for line in done if line.startswith("product installed"))
    assert not (REPO / "build").exists()  # the checkout is not built in
    assert installed_python(target_root, "import hw.schematics, sys; print(hw.schematics.__file__)").startswith(
        str(target_root / VENV)
    )


@pytest.mark.slow
def test_a_reader_kind_the_installed_booth_refuses_is_refused_before_any_unit(
    target_root: Path, product_wheel: Path
) -> None:
    """The installer offers every kind; it writes a booth.toml only for one the installed booth accepts."""
    for reader in ("pn532-i2c", "pn532-spi"):  # the second run reuses the virtualenv
        if reader in READER_KINDS:
            install(booth_options(target_root, product_wheel, reader=reader))
            site = tomllib.loads((target_root / "etc/polling-station/booth.toml").read_text())
            assert site["reader"]["kind"] == reader
            (target_root / "etc/polling-station/booth.toml").unlink()
            continue
        with pytest.raises(InstallError, match=f"--reader {reader}: the installed booth accepts only"):
            install(booth_options(target_root, product_wheel, reader=reader))
        assert not (target_root / "etc/polling-station").exists()
        assert not (target_root / "etc/systemd/system/polling-station-booth.service").exists()


@pytest.mark.slow
def test_training_mode_and_staging_ssh(target_root: Path, product_wheel: Path) -> None:
    install(booth_options(target_root, product_wheel, mode="training", ssh_from="192.168.50.0/28"))
    unit = target_root / "etc/systemd/system/polling-station-booth.service"
    assert values(unit, "ExecStartPre") == []
    assert values(unit, "DeviceAllow") == ["char-ttyACM rw"]  # pcsc reader: pcscd opens the USB device
    assert not (target_root / "etc/systemd/system/ssh.service").exists()
    assert "ip saddr 192.168.50.0/28 tcp dport 22 accept" in (target_root / "etc/nftables.conf").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "hub", "--hub", HUB, "--central", "203.0.113.10"], "a hub needs --station-net"),
        (
            ["--role", "hub", "--hub", "10.0.0.1", "--station-net", "192.168.50.0/24", "--central", "203.0.113.10"],
            "is not inside --station-net",
        ),
        (["--role", "booth", "--hub", "hub.local"], "must be an IPv4 address"),
        (["--role", "booth", "--hub", HUB, "--ssh-from", "192.168.50.0/24"], "production refuses SSH"),
        (["--role", "booth", "--hub", HUB, "--ui-port", "70000"], "is not a TCP port"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(target_root: Path, capsys, args, message) -> None:
    before = sorted(target_root.rglob("*"))
    assert main([*args, "--root", str(target_root), "--skip-pip", "--skip-apt"]) == 1
    assert message in capsys.readouterr().err
    assert sorted(target_root.rglob("*")) == before


def test_the_virtualenv_is_built_only_on_the_device(target_root: Path, capsys) -> None:
    assert main(["--role", "booth", "--hub", HUB, "--root", str(target_root), "--skip-apt"]) == 1
    assert "only be built on the device itself" in capsys.readouterr().err


def test_units_only_run_programs_the_installer_or_debian_provides(booth_root: Path, hub_root: Path) -> None:
    programs = set()
    for root, units in ((booth_root, BOOTH_UNITS), (hub_root, HUB_UNITS)):
        for unit in units:
            for _, key, value in directives(root / "etc/systemd/system" / unit):
                if key.startswith("Exec"):
                    words = value.split()
                    programs.add(words[0].lstrip("+-@!:"))  # systemd's prefixes: "+" runs unsandboxed
                    if "--" in words:  # a compositor running a program
                        programs.add(words[words.index("--") + 1])
    assert {p for p in programs if not p.startswith("/opt/polling-station/")} == set(DEBIAN_EXECUTABLES)


@pytest.fixture
def ui_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/no-such-page"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_for_http_returns_once_the_ui_answers(booth_root: Path, ui_server: str) -> None:
    waiter = booth_root / "opt/polling-station/libexec/wait-for-http"
    result = subprocess.run([str(waiter), ui_server, "--timeout", "30"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_wait_for_http_gives_up_after_its_timeout(booth_root: Path, ui_server: str) -> None:
    waiter = booth_root / "opt/polling-station/libexec/wait-for-http"
    closed = "http://127.0.0.1:9/"  # discard port: nothing listens there
    result = subprocess.run([str(waiter), closed, "--timeout", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "did not answer within 1 s" in result.stderr


def test_installed_docs_are_the_repository_docs(booth_root: Path) -> None:
    for name in ("operations.md", "threat-model.md", "audit-log.md"):
        installed = booth_root / "opt/polling-station/docs" / name
        assert installed.read_bytes() == (REPO / "docs" / name).read_bytes()
