"""Production mode refuses simulators, demo keys, test certificates and SSH, each with its reason."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from deploy_root import make_target_root
from install import InstallOptions, install

from appliance.card.authenticator import AuthMode
from appliance.card.testca import TestCa
from appliance.production import ObservedSystem, main, observe, production_refusals
from infra.pki import CA_CERT_FILE, StationCA

CLEAN = ObservedSystem(
    config_mode="production", reader_kind="pcsc", serial_ports=("/dev/ttyACM0",), companion_kind="pico",
    installed_packages=frozenset({"pcscd", "chromium"}), vpcd_driver_files=(), pcsc_readers=("ACS ACR122U 00 00",),
    demo_key_files=(), certificates=(), ssh_enabled=(),
)  # fmt: skip


def test_a_clean_terminal_is_accepted() -> None:
    assert production_refusals(CLEAN) == []


@pytest.mark.parametrize(
    ("change", "code", "reason"),
    [
        ({"config_mode": "training"}, "not_production_mode", "mode = 'training'"),
        ({"installed_packages": frozenset({"vsmartcard-vpcd"})}, "vpcd_installed", "apt-get purge vsmartcard-vpcd"),
        ({"pcsc_readers": ("Virtual PCD 00 00",)}, "virtual_reader_present", "Virtual PCD 00 00"),
        ({"reader_kind": "emulator"}, "simulated_device", "reader is configured as kind 'emulator'"),
        ({"companion_kind": "virtual"}, "simulated_device", "companion board is configured as kind 'virtual'"),
        ({"serial_ports": ("/dev/pts/4",)}, "simulated_device", "/dev/pts/4 is a pseudo-terminal"),
        ({"ssh_enabled": ("multi-user.target.wants/ssh.service",)}, "ssh_enabled", "systemctl mask"),
        ({"failpoint": "booth-after-commit"}, "failpoint_armed", "POLLING_STATION_FAILPOINT=booth-after-commit"),
    ],
)
def test_each_deviation_is_refused_with_its_reason(change: dict, code: str, reason: str) -> None:
    refusals = production_refusals(dataclasses.replace(CLEAN, **change))
    assert [refusal.code for refusal in refusals] == [code]
    assert reason in refusals[0].reason


@pytest.fixture(scope="module")
def jpki_test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa.create(tmp_path_factory.mktemp("jpki") / "ca")


@pytest.fixture
def terminal(tmp_path: Path) -> Path:
    """A booth installed by the real installer into a temporary root, in production mode."""
    root = make_target_root(tmp_path / "root")
    install(InstallOptions(root=root, role="booth", hub_host="192.168.50.1", skip_pip=True, skip_apt=True))
    StationCA.create(tmp_path / "station-ca", "station-12")
    trust = root / "etc/polling-station/trust"
    trust.mkdir()
    (trust / "station-ca.pem").write_bytes((tmp_path / "station-ca" / CA_CERT_FILE).read_bytes())
    return root


def codes(root: Path) -> list[str]:
    state = observe(root / "etc/polling-station/booth.toml", root, ask_pcscd=False)
    return [refusal.code for refusal in production_refusals(state)]


def test_the_installed_terminal_passes(terminal: Path) -> None:
    state = observe(terminal / "etc/polling-station/booth.toml", terminal, ask_pcscd=False)
    assert production_refusals(state) == []
    assert [c.path for c in state.certificates] == ["/etc/polling-station/trust/station-ca.pem"]


def test_refuses_the_test_jpki_ca_as_trust_anchor(terminal: Path, jpki_test_ca: TestCa) -> None:
    pem = jpki_test_ca.ca_certificate(AuthMode.AUTH).public_bytes(Encoding.PEM)
    (terminal / "etc/polling-station/trust/jpki-auth-ca.pem").write_bytes(pem)
    state = observe(terminal / "etc/polling-station/booth.toml", terminal, ask_pcscd=False)
    (refusal,) = production_refusals(state)
    assert refusal.code == "test_certificate"
    assert "/etc/polling-station/trust/jpki-auth-ca.pem is a test certificate" in refusal.reason
    assert "(TEST)" in refusal.reason


def test_refuses_demo_keys(terminal: Path, jpki_test_ca: TestCa) -> None:
    card = jpki_test_ca.issue_card()
    data = terminal / "var/lib/polling-station/booth"
    card.save(data / "training-card.json")
    (data / "auth-ca-key.pem").write_bytes((jpki_test_ca.directory / "auth-ca-key.pem").read_bytes())
    state = observe(terminal / "etc/polling-station/booth.toml", terminal, ask_pcscd=False)
    assert sorted(state.demo_key_files) == [
        "/var/lib/polling-station/booth/auth-ca-key.pem",
        "/var/lib/polling-station/booth/training-card.json",
    ]
    assert codes(terminal).count("demo_key") == 2


def test_refuses_vpcd_installed_and_its_driver(terminal: Path) -> None:
    status = terminal / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: pcscd\nStatus: install ok installed\nVersion: 2.0.0-1\n\n"
        "Package: vsmartcard-vpcd\nStatus: install ok installed\nVersion: 0.9-1\n\n"
        "Package: telnet\nStatus: deinstall ok config-files\n"
    )
    driver = terminal / "etc/reader.conf.d/vpcd"
    driver.parent.mkdir(parents=True)
    driver.write_text("DEVICENAME /dev/null:0x8C7B\n")
    assert codes(terminal) == ["vpcd_installed", "vpcd_driver_present"]


def test_refuses_simulated_reader_in_the_config(terminal: Path) -> None:
    config = terminal / "etc/polling-station/booth.toml"
    config.write_text(config.read_text().replace('kind = "pcsc"', 'kind = "emulator"\nport = "/dev/pts/7"'))
    assert codes(terminal) == ["simulated_device", "simulated_device"]


def test_refuses_a_production_install_switched_to_training(terminal: Path) -> None:
    config = terminal / "etc/polling-station/booth.toml"
    config.write_text(config.read_text().replace('mode = "production"', 'mode = "training"'))
    assert codes(terminal) == ["not_production_mode"]


def test_refuses_ssh_enabled(terminal: Path) -> None:
    system = terminal / "etc/systemd/system"
    (system / "ssh.service").unlink()  # unmask
    (system / "multi-user.target.wants/ssh.service").symlink_to("/usr/lib/systemd/system/ssh.service")
    flag = terminal / "boot/firmware/ssh"
    flag.parent.mkdir(parents=True)
    flag.touch()
    assert codes(terminal) == ["ssh_enabled", "ssh_enabled"]


def test_masked_ssh_is_not_enabled(terminal: Path) -> None:
    system = terminal / "etc/systemd/system"
    os.symlink("/usr/lib/systemd/system/ssh.service", system / "multi-user.target.wants/ssh.service")
    assert codes(terminal) == []  # the installer masked ssh.service: the wants link cannot start it


def test_command_line_exit_codes(terminal: Path, capsys) -> None:
    config = terminal / "etc/polling-station/booth.toml"
    assert main(["--config", str(config), "--root", str(terminal), "--no-pcscd"]) == 0
    assert "production mode: ok (1 certificates checked)" in capsys.readouterr().out
    config.write_text(config.read_text().replace('mode = "production"', 'mode = "training"'))
    assert main(["--config", str(config), "--root", str(terminal), "--no-pcscd"]) == 1
    assert "production mode REFUSES: not_production_mode" in capsys.readouterr().out
    config.write_text("mode = [unterminated")
    assert main(["--config", str(config), "--root", str(terminal), "--no-pcscd"]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
