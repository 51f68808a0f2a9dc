#!/usr/bin/python3
"""Turn a stock Raspberry Pi OS Lite into a locked-down booth terminal or station hub.

    sudo python3 deploy/install.py --role booth --hub 192.168.50.1
    sudo python3 deploy/install.py --role hub --hub 192.168.50.1 --station-net 192.168.50.0/24 \\
        --central 203.0.113.10

What it lays down under ``--root`` (``/`` on the device; a temporary directory in tests):
the product in a virtualenv under /opt/polling-station, installed from its built wheel (never
from the checkout, so the booth runs exactly what a wheel ships), dedicated system users
(sysusers.d), persistent data paths (tmpfiles.d) under /var/lib/polling-station, sandboxed
systemd units, the hardware watchdog, an nftables ruleset for the role, time from the hub,
SSH masked. Safe to run twice: it rewrites what it owns, never an existing booth.toml, and
the system tools it calls are idempotent. Standard library only: it runs before the
virtualenv exists. Procedures: docs/operations.md; why each rule exists: docs/threat-model.md.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
PROJECT = HERE.parent
PREFIX = "/opt/polling-station"
STATION_DIR = "/var/lib/polling-station/hub"
SYSUSERS_CONF = "/usr/lib/sysusers.d/polling-station.conf"
TMPFILES_CONF = "/usr/lib/tmpfiles.d/polling-station.conf"
CHRONY_CONF = "/etc/chrony/conf.d/polling-station.conf"
DOCS = ("operations.md", "threat-model.md", "audit-log.md")
ROLES = ("booth", "hub")
MODES = ("production", "training")
# Reader kind -> (device cgroup classes the booth may open, groups that own those devices).
READERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pcsc": ((), ()),  # pcscd owns the USB reader; the booth only uses its socket
    "pn532-uart": (("char-ttyAMA", "char-ttyS"), ("dialout",)),
    "pn532-i2c": (("char-i2c",), ("i2c",)),
    "pn532-spi": (("char-spi",), ("spi",)),
}
COMPANION_DEVICES = ("char-ttyACM",)  # the companion board on USB serial
COMPANION_GROUPS = ("dialout",)
DEBIAN_PACKAGES = {
    "booth": ("python3-venv", "pcscd", "cage", "chromium", "fonts-noto-cjk", "nftables", "chrony"),
    "hub": ("python3-venv", "mosquitto", "nftables", "chrony"),
}
ENTRY_POINTS = {"booth": ("booth", "audit-log", "python"), "hub": ("station-hub", "audit-log", "python")}
CHROMIUM_FLAGS = (
    "--kiosk --ozone-platform=wayland --incognito --no-first-run --no-default-browser-check "
    "--noerrdialogs --disable-session-crashed-bubble --disable-translate --disable-features=Translate "
    "--disable-pinch --overscroll-history-navigation=0 --disable-sync --disable-background-networking "
    "--disable-component-update --password-store=basic --user-data-dir=/run/polling-station-kiosk/chromium"
)
HUB_SERVICES = {"ledger": ("roll", "sealed ballots, hash chain"), "roll": ("ledger", "eligible voters, check-ins")}
PINMAP = PROJECT / "hw" / "schematics" / "pinmap.json"  # the wiring's one source of truth
# What never goes into the wheel's build tree: a copy without these builds the same wheel on
# any checkout, and setuptools' build/ leftovers of a previous run cannot slip into it.
NOT_BUILT = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "tests", "test-artifacts", "*.whl")
MASKED_ALWAYS = ("ssh.service", "ssh.socket", "sshd.service")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


class InstallError(Exception):
    """A bad option or a failed step, with what to do about it."""


@dataclass(frozen=True)
class InstallOptions:
    root: Path
    role: str
    hub_host: str
    mode: str = "production"
    reader: str = "pcsc"
    hub_port: int = 8883
    ui_port: int = 8080
    station_net: str | None = None
    central_host: str | None = None
    central_port: int = 8883
    ssh_from: str | None = None
    source: Path = PROJECT
    skip_pip: bool = False
    skip_apt: bool = False
    venv_under_root: bool = False
    """Build the virtualenv under a --root other than /: to check an install in a scratch
    root (its scripts then name their path under that root, so it is no image for a device)."""

    def validate(self) -> None:
        if self.role not in ROLES:
            raise InstallError(f"--role must be one of {ROLES}")
        if self.mode not in MODES:
            raise InstallError(f"--mode must be one of {MODES}")
        if self.reader not in READERS:
            raise InstallError(f"--reader must be one of {sorted(READERS)}")
        _ipv4(self.hub_host, "--hub")
        for port, name in (
            (self.hub_port, "--hub-port"),
            (self.ui_port, "--ui-port"),
            (self.central_port, "--central-port"),
        ):
            if not 1 <= port <= 65535:
                raise InstallError(f"{name} {port} is not a TCP port")
        if self.role == "hub":
            if self.station_net is None or self.central_host is None:
                raise InstallError("a hub needs --station-net (the terminals' LAN) and --central (the central broker)")
            network = _ipv4_network(self.station_net, "--station-net")
            _ipv4(self.central_host, "--central")
            if ipaddress.IPv4Address(self.hub_host) not in network:
                raise InstallError(f"--hub {self.hub_host} is not inside --station-net {self.station_net}")
        if self.ssh_from is not None:
            _ipv4_network(self.ssh_from, "--ssh-from")
            if self.mode == "production":
                raise InstallError("--ssh-from is for training/staging only: production refuses SSH")
        if not self.skip_pip and self.root.resolve() != Path("/") and not self.venv_under_root:
            raise InstallError("the virtualenv can only be built on the device itself (--root /); use --skip-pip")
        if not self.skip_pip and not (self.source.is_dir() or self.source.suffix == ".whl"):
            raise InstallError(f"--source {self.source}: expected the project directory or a built wheel (.whl)")


def _ipv4(text: str, option: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InstallError(f"{option} must be an IPv4 address (no names: the firewall allows no DNS)") from None


def _ipv4_network(text: str, option: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise InstallError(f"{option} must be an IPv4 network such as 192.168.50.0/24") from None


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; a placeholder without a value is a bug, so it raises."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise InstallError(f"template placeholder {{{{{name}}}}} has no value")
        return values[name]

    return _PLACEHOLDER.sub(value, template)


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def reader_settings(reader: str) -> str:
    """The booth.toml lines a reader kind needs beyond its kind, from the pin map.

    The booth requires a serial port for pn532-uart, so it is written out (the Pi's UART as
    wired in hw/schematics/pinmap.json); every other pin and bus stays in the pin map alone,
    which the booth reads from its installed package.
    """
    if reader == "pn532-uart":
        try:
            port = json.loads(PINMAP.read_text(encoding="utf-8"))["pn532"]["uart"]["port"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InstallError(f"cannot read the PN532 UART port from {PINMAP}: {error}") from None
        return f'port = "{port}"          # the serial port it is wired to (hw/schematics/pinmap.json)'
    if reader == "pcsc":
        return '# name = "…"                # a PC/SC reader name; default: the first reader pcscd lists'
    variant = reader.removeprefix("pn532-")
    return f"# bus and pins: pn532.{variant} in hw/schematics/pinmap.json (shipped with the booth)"


def _values(options: InstallOptions) -> dict[str, str]:
    devices, groups = READERS[options.reader]
    booth_groups = sorted({*groups, *COMPANION_GROUPS})
    ssh_rule = ""
    if options.ssh_from:
        ssh_rule = f'\t\tip saddr {options.ssh_from} tcp dport 22 accept comment "SSH for staging only"'
    production_check = ""
    if options.mode == "production":
        production_check = (
            f"ExecStartPre={PREFIX}/venv/bin/python -m appliance.production --config /etc/polling-station/booth.toml"
        )
    return {
        "prefix": PREFIX,
        "station_dir": STATION_DIR,
        "mode": options.mode,
        "reader": options.reader,
        "reader_settings": reader_settings(options.reader) if options.role == "booth" else "",
        "hub_host": options.hub_host,
        "hub_port": str(options.hub_port),
        "ui_port": str(options.ui_port),
        "station_net": options.station_net or "",
        "central_host": options.central_host or "",
        "central_port": str(options.central_port),
        "ssh_rule": ssh_rule,
        "booth_groups": " ".join(booth_groups),
        "booth_memberships": "\n".join(f"m ps-booth {group}" for group in booth_groups),
        "device_allow": "\n".join(f"DeviceAllow={device} rw" for device in sorted({*devices, *COMPANION_DEVICES})),
        "production_check": production_check,
        "chromium_flags": CHROMIUM_FLAGS,
        "hardening_common": _template("hardening-common.conf").strip(),
        "hardening": (_template("hardening-common.conf") + _template("hardening-service.conf")).strip(),
    }


@dataclass(frozen=True)
class PlannedFile:
    path: str  # absolute path on the device
    content: str
    mode: int = 0o644
    keep_existing: bool = False  # configuration the technician or flash.sh may have edited


def plan_files(options: InstallOptions) -> list[PlannedFile]:
    """Every file the installer writes for this role, rendered (pure: no I/O but reading templates)."""
    values = _values(options)
    units = "/etc/systemd/system"
    files = [
        PlannedFile("/etc/systemd/system.conf.d/50-polling-station-watchdog.conf", _template("watchdog.conf")),
        PlannedFile(SYSUSERS_CONF, render(_template(f"sysusers-{options.role}.conf"), values)),
        PlannedFile(TMPFILES_CONF, render(_template(f"tmpfiles-{options.role}.conf"), values)),
        PlannedFile("/etc/nftables.conf", render(_template(f"nftables-{options.role}.nft"), values), 0o755),
        PlannedFile(
            "/etc/chrony/conf.d/polling-station.conf", render(_template(f"chrony-{options.role}.conf"), values)
        ),
    ]
    if options.role == "booth":
        files += [
            PlannedFile(f"{units}/polling-station-booth.service", render(_template("booth.service"), values)),
            PlannedFile(f"{units}/polling-station-kiosk.service", render(_template("kiosk.service"), values)),
            PlannedFile("/etc/pam.d/polling-station-kiosk", _template("pam-kiosk")),
            PlannedFile(f"{PREFIX}/libexec/wait-for-http", (HERE / "wait_for_http.py").read_text(), 0o755),
            PlannedFile("/etc/polling-station/booth.toml", render(_template("booth.toml"), values), 0o640, True),
        ]
    else:
        files.append(
            PlannedFile(f"{units}/polling-station-broker.service", render(_template("broker.service"), values))
        )
        for service, (other, purpose) in HUB_SERVICES.items():
            service_values = {**values, "service": service, "other": other, "purpose": purpose}
            content = render(_template("hub-service.service"), service_values)
            files.append(PlannedFile(f"{units}/polling-station-{service}.service", content))
        forwarder = render(_template("forwarder.service"), values)
        files.append(PlannedFile(f"{units}/polling-station-forwarder.service", forwarder))
        for unit in ("crl-renew.service", "crl-renew.timer"):
            files.append(PlannedFile(f"{units}/polling-station-{unit}", render(_template(unit), values)))
    return files


def units_to_enable(role: str) -> list[str]:
    if role == "booth":
        return ["polling-station-booth.service", "polling-station-kiosk.service", "nftables.service"]
    return [
        "polling-station-broker.service",
        *(f"polling-station-{service}.service" for service in HUB_SERVICES),
        "polling-station-forwarder.service",  # starts once the station is linked (its condition)
        "polling-station-crl-renew.timer",
        "nftables.service",
    ]


def units_to_mask(options: InstallOptions) -> list[str]:
    masked = [] if options.ssh_from else list(MASKED_ALWAYS)
    if options.role == "hub":
        masked.append("mosquitto.service")  # Debian's own instance, with its default configuration
    return masked


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _write(target: Path, content: str | bytes, mode: int) -> None:
    """Write atomically (temp file + rename) so a power cut never leaves half a unit file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_bytes(content.encode() if isinstance(content, str) else content)
    temp.chmod(mode)
    temp.replace(target)


def _run(command: list[str]) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise InstallError(f"{command[0]} is not installed") from None
    if result.returncode != 0:
        raise InstallError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")


def build_wheel(project: Path, out_dir: Path, python: str = sys.executable) -> Path:
    """Build the product's wheel from a clean copy of the project; returns the .whl.

    The copy leaves out what is no part of the product (NOT_BUILT), so the wheel depends only
    on the sources and pyproject.toml, and the checkout is not written to (setuptools would
    leave build/ and egg-info behind in it). `python` must have pip (the target virtualenv's).
    """
    with tempfile.TemporaryDirectory(prefix="polling-station-build-") as scratch:
        tree, wheels = Path(scratch) / "src", Path(scratch) / "wheels"
        shutil.copytree(project, tree, ignore=shutil.ignore_patterns(*NOT_BUILT))
        _run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(tree)])
        built = list(wheels.glob("polling_station-*.whl"))
        if len(built) != 1:
            raise InstallError(f"pip wheel built {[w.name for w in built]}, expected one polling_station wheel")
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(built[0], out_dir / built[0].name))


def _install_product(options: InstallOptions) -> str:
    """The product into PREFIX/venv from its wheel; returns what was installed."""
    venv = _inside(options.root, PREFIX) / "venv"
    if options.skip_pip:
        for name in ENTRY_POINTS[options.role]:
            message = f"{name}: placeholder laid out with --skip-pip; run the installer on the device"
            stub = f"#!/bin/sh\necho '{message}' >&2\nexit 1\n"
            _write(venv / "bin" / name, stub, 0o755)
        return "placeholders (--skip-pip)"
    python = str(venv / "bin" / "python")
    if not Path(python).exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    with tempfile.TemporaryDirectory(prefix="polling-station-wheel-") as scratch:
        wheel = options.source
        if wheel.suffix != ".whl":
            wheel = build_wheel(options.source, Path(scratch), python)
        # The product first, replacing any install of the same version (a rebuilt wheel keeps
        # its version number), then whatever its own metadata requires.
        _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)])
        _run([python, "-m", "pip", "install", "--quiet", str(wheel)])
    if options.role == "booth":
        _check_reader_supported(python, options.reader)
    return wheel.name


def _check_reader_supported(python: str, reader: str) -> None:
    """The installed booth must accept the reader kind booth.toml will name, or it never starts."""
    code = "from appliance.config import READER_KINDS; print(' '.join(READER_KINDS))"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    kinds = result.stdout.split()
    if result.returncode != 0 or reader not in kinds:
        raise InstallError(
            f"--reader {reader}: the installed booth accepts only {kinds or result.stderr.strip()}; "
            "choose one of those (nothing else was written)"
        )


def _copy_docs(options: InstallOptions) -> None:
    project = options.source if options.source.is_dir() else PROJECT
    for name in DOCS:
        source = project / "docs" / name
        if source.is_file():
            _write(_inside(options.root, f"{PREFIX}/docs/{name}"), source.read_bytes(), 0o644)


def install(options: InstallOptions) -> list[str]:
    """Install the role under ``options.root``; returns what was done, one line each."""
    options.validate()
    root = options.root
    done = []
    if root.resolve() == Path("/") and not options.skip_apt:
        packages = list(DEBIAN_PACKAGES[options.role])
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages])
        done.append(f"installed Debian packages {' '.join(packages)}")
    # The product first: a failed pip or an unsupported reader leaves no unit or config behind.
    installed = _install_product(options)
    manifest = {}
    for planned in plan_files(options):
        target = _inside(root, planned.path)
        if planned.keep_existing and target.exists():
            done.append(f"kept existing {planned.path}")
        else:
            _write(target, planned.content, planned.mode)
            done.append(f"wrote {planned.path}")
        manifest[planned.path] = hashlib.sha256(target.read_bytes()).hexdigest()
    _copy_docs(options)
    done.append(f"product installed in {PREFIX}/venv: {installed}")
    root_option = f"--root={root}"
    _run(["systemd-sysusers", root_option, str(_inside(root, SYSUSERS_CONF))])
    _run(["systemd-tmpfiles", "--create", root_option, str(_inside(root, TMPFILES_CONF))])
    done.append("created system users and data directories")
    _run(["systemctl", root_option, "enable", *units_to_enable(options.role)])
    masked = units_to_mask(options)
    if masked:
        _run(["systemctl", root_option, "mask", *masked])
    done.append(f"enabled {', '.join(units_to_enable(options.role))}; masked {', '.join(masked) or 'nothing'}")
    record = {"role": options.role, "mode": options.mode, "files": manifest}
    _write(_inside(root, f"{PREFIX}/INSTALLED.json"), json.dumps(record, indent=1, sort_keys=True) + "\n", 0o644)
    return done


def parse_args(argv: list[str] | None = None) -> InstallOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See docs/operations.md.")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--root", type=Path, default=Path("/"), help="target root directory (default: /)")
    parser.add_argument("--hub", dest="hub_host", required=True, help="the hub's IPv4 address on the station LAN")
    parser.add_argument("--hub-port", type=int, default=8883, help="the hub's MQTT TLS port")
    parser.add_argument("--mode", choices=MODES, default="production")
    parser.add_argument("--reader", choices=sorted(READERS), default="pcsc", help="booth: the card reader kind")
    parser.add_argument("--ui-port", type=int, default=8080, help="booth: the kiosk UI port on 127.0.0.1")
    parser.add_argument("--station-net", help="hub: the terminals' LAN, e.g. 192.168.50.0/24")
    parser.add_argument("--central", dest="central_host", help="hub: the central broker's IPv4 address")
    parser.add_argument("--central-port", type=int, default=8883)
    parser.add_argument("--ssh-from", help="training/staging only: allow SSH from this IPv4 network")
    parser.add_argument(
        "--source", type=Path, default=PROJECT, help="a built wheel, or the project directory to build one from"
    )
    parser.add_argument("--skip-pip", action="store_true", help="lay out placeholder commands instead of pip install")
    parser.add_argument(
        "--venv-under-root",
        action="store_true",
        help="build the virtualenv under a --root other than / (scratch checks only: not an image for a device)",
    )
    parser.add_argument("--skip-apt", action="store_true", help="do not apt-get install the Debian packages")
    return InstallOptions(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(argv)
        if options.root.resolve() == Path("/") and os.geteuid() != 0:
            raise InstallError("installing onto / needs root (sudo)")
        for line in install(options):
            print(f"install: {line}")
    except InstallError as error:
        print(f"install: {error}", file=sys.stderr)
        return 1
    print("install: done; reboot to start the appliance" if options.root.resolve() == Path("/") else "install: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
