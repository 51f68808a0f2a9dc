"""Production mode: refuse to run a real election on a terminal set up for training or tests.

`production_refusals` is a pure function over an `ObservedSystem`; `observe` is the thin probe
that gathers that state from a (possibly alternate) root directory. `booth self-test` shows
the refusals, and the booth unit runs ``python -m appliance.production`` before the booth
starts in production mode, so a refused terminal never reaches the voter screen.

What is refused, each with a reason a technician can act on (docs/threat-model.md says why):

- the configuration is not in production mode (someone switched a production install back);
- vsmartcard-vpcd installed, its pcscd driver present, or a "Virtual PCD" reader visible;
- a reader or companion board of a simulated kind, or on a pseudo-terminal (/dev/pts/…),
  which is where the PN532 emulator and the virtual companion board live;
- demo keys: virtual card files (``jpki-virtual-card/v1``, private keys in the clear) or the
  test JPKI CA's private keys (``*-ca-key.pem``) anywhere in the configuration or data;
- test certificates: any certificate whose subject or issuer has the word ``TEST`` (upper
  case, as a whole word) in one of its name attributes — the marker every test CA of this
  project carries (the test JPKI CA's OU ends in "(TEST)"); a real CA must never use it;
- SSH enabled at boot (a unit enabled and not masked, or Raspberry Pi OS's /boot ssh flag).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from infra.failpoints import FAILPOINT_ENV, armed

PRODUCTION = "production"
SIMULATED_KINDS = frozenset({"emulator", "virtual", "pn532-emulator", "vpcd", "virtual-card", "simulator"})
VIRTUAL_READER_NAME = "Virtual PCD"
VPCD_PACKAGE = "vsmartcard-vpcd"
VPCD_DRIVER_FILES = ("usr/lib/pcsc/drivers/serial/libifdvpcd.so", "etc/reader.conf.d/vpcd")
VIRTUAL_CARD_FORMAT = "jpki-virtual-card/v1"
TEST_CA_KEY_SUFFIX = "-ca-key.pem"
TEST_MARKER = re.compile(r"(?<![A-Za-z])TEST(?![A-Za-z])")
SSH_UNITS = ("ssh.service", "sshd.service", "ssh.socket")
SSH_BOOT_FLAGS = ("boot/ssh", "boot/ssh.txt", "boot/firmware/ssh", "boot/firmware/ssh.txt")
SCANNED_DIRS = ("etc/polling-station", "var/lib/polling-station")
MAX_SCANNED_FILE = 1 << 20
MAX_SCANNED_FILES = 10_000


class ProductionCheckError(Exception):
    """The state could not be observed (e.g. an unreadable configuration)."""


@dataclass(frozen=True)
class CertificateNames:
    path: str
    subject: str
    issuer: str
    marked_test: bool


@dataclass(frozen=True)
class ObservedSystem:
    """Everything production mode looks at, as gathered by `observe` (or written by a test)."""

    config_mode: str | None
    reader_kind: str | None
    serial_ports: tuple[str, ...]  # reader and companion ports from the configuration
    companion_kind: str | None
    installed_packages: frozenset[str]
    vpcd_driver_files: tuple[str, ...]
    pcsc_readers: tuple[str, ...] | None  # None: pcscd could not be asked
    demo_key_files: tuple[str, ...]
    certificates: tuple[CertificateNames, ...]
    ssh_enabled: tuple[str, ...]  # enabled SSH units and boot flags
    failpoint: str | None = None  # a fault-injection point armed in the environment


@dataclass(frozen=True)
class Refusal:
    code: str  # short identifier, also logged as the audit event production_refused.reason
    reason: str

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def production_refusals(state: ObservedSystem) -> list[Refusal]:
    """Every reason this terminal must not run a real election; empty when it may."""
    refusals = []
    if state.config_mode != PRODUCTION:
        refusals.append(Refusal("not_production_mode", f"booth.toml says mode = {state.config_mode!r}"))
    if VPCD_PACKAGE in state.installed_packages:
        refusals.append(Refusal("vpcd_installed", f"{VPCD_PACKAGE} is installed: apt-get purge {VPCD_PACKAGE}"))
    if state.vpcd_driver_files:
        files = ", ".join(state.vpcd_driver_files)
        refusals.append(Refusal("vpcd_driver_present", f"pcscd would load the virtual reader driver ({files})"))
    virtual = [name for name in state.pcsc_readers or () if VIRTUAL_READER_NAME in name]
    if virtual:
        refusals.append(Refusal("virtual_reader_present", f"pcscd offers virtual readers: {', '.join(virtual)}"))
    for what, kind in (("reader", state.reader_kind), ("companion board", state.companion_kind)):
        if kind is not None and kind.lower() in SIMULATED_KINDS:
            refusals.append(Refusal("simulated_device", f"the {what} is configured as kind {kind!r} (a simulator)"))
    for port in state.serial_ports:
        if port.startswith("/dev/pts/"):
            refusals.append(Refusal("simulated_device", f"{port} is a pseudo-terminal, where simulators live"))
    for path in state.demo_key_files:
        refusals.append(Refusal("demo_key", f"{path} holds demo/test private keys: remove it"))
    for certificate in state.certificates:
        if certificate.marked_test:
            refusals.append(
                Refusal(
                    "test_certificate",
                    f"{certificate.path} is a test certificate (subject {certificate.subject!r}, "
                    f"issuer {certificate.issuer!r})",
                )
            )
    for item in state.ssh_enabled:
        refusals.append(Refusal("ssh_enabled", f"SSH is enabled ({item}): systemctl mask ssh.service ssh.socket"))
    if state.failpoint:
        refusals.append(Refusal("failpoint_armed", f"{FAILPOINT_ENV}={state.failpoint} would stop the booth"))
    return refusals


def is_test_certificate(certificate: x509.Certificate) -> bool:
    """True when a name attribute of the subject or issuer carries the TEST marker."""
    return any(
        TEST_MARKER.search(str(attribute.value))
        for name in (certificate.subject, certificate.issuer)
        for attribute in name
    )


# ----- the probe: reads files under a root directory, never changes anything -----


def _read_config(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ProductionCheckError(f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ProductionCheckError(f"{path} is not valid TOML: {error}") from None


def installed_packages(root: Path) -> frozenset[str]:
    """Packages dpkg reports as installed (from its status file)."""
    try:
        text = (root / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    packages = set()
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            packages.add(fields["Package"])
    return frozenset(packages)


def _scanned_files(root: Path) -> Iterator[Path]:
    count = 0
    for directory in SCANNED_DIRS:
        for path in sorted((root / directory).rglob("*")):
            if path.is_file() and not path.is_symlink():
                count += 1
                if count > MAX_SCANNED_FILES:
                    return
                yield path


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _scan(root: Path) -> tuple[list[str], list[CertificateNames]]:
    demo_keys, certificates = [], []
    for path in _scanned_files(root):
        shown = "/" + str(path.relative_to(root))
        if path.name.endswith(TEST_CA_KEY_SUFFIX):
            demo_keys.append(shown)
            continue
        if path.stat().st_size > MAX_SCANNED_FILE:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if VIRTUAL_CARD_FORMAT.encode() in data:
            demo_keys.append(shown)
        for certificate in _pem_certificates(data):
            certificates.append(
                CertificateNames(
                    shown,
                    certificate.subject.rfc4514_string(),
                    certificate.issuer.rfc4514_string(),
                    is_test_certificate(certificate),
                )
            )
    return demo_keys, certificates


def _ssh_enabled(root: Path) -> list[str]:
    system = root / "etc/systemd/system"
    found = []
    for unit in SSH_UNITS:
        masked = (system / unit).is_symlink() and str((system / unit).readlink()) == "/dev/null"
        if masked:
            continue
        links = (wants / unit for wants in sorted(system.glob("*.wants")))
        found += [f"{link.parent.name}/{unit}" for link in links if link.is_symlink() or link.exists()]
    found += [f"/{flag}" for flag in SSH_BOOT_FLAGS if (root / flag).exists()]
    return found


def _pcsc_readers() -> tuple[str, ...] | None:
    try:
        from smartcard.Exceptions import SmartcardException
        from smartcard.pcsc.PCSCExceptions import BaseSCardException
        from smartcard.System import readers
    except ImportError:
        return None
    try:
        return tuple(str(reader) for reader in readers())
    except (BaseSCardException, SmartcardException, OSError):
        return None


def observe(config_path: Path, root: Path = Path("/"), ask_pcscd: bool = True) -> ObservedSystem:
    """Gather the state production mode judges. ``root`` lets it inspect an installed image."""
    config = _read_config(config_path)
    reader = config.get("reader", {})
    companion = config.get("companion", {})
    ports = tuple(str(section["port"]) for section in (reader, companion) if isinstance(section.get("port"), str))
    demo_keys, certificates = _scan(root)
    return ObservedSystem(
        config_mode=config.get("mode"),
        reader_kind=reader.get("kind"),
        serial_ports=ports,
        companion_kind=companion.get("kind"),
        installed_packages=installed_packages(root),
        vpcd_driver_files=tuple(f"/{name}" for name in VPCD_DRIVER_FILES if (root / name).exists()),
        pcsc_readers=_pcsc_readers() if ask_pcscd else None,
        demo_key_files=tuple(demo_keys),
        certificates=tuple(certificates),
        ssh_enabled=tuple(_ssh_enabled(root)),
        failpoint=armed(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.production", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("/etc/polling-station/booth.toml"))
    parser.add_argument("--root", type=Path, default=Path("/"), help="inspect this root directory instead of /")
    parser.add_argument("--no-pcscd", action="store_true", help="do not ask pcscd for its readers")
    args = parser.parse_args(argv)
    try:
        state = observe(args.config, args.root, ask_pcscd=not args.no_pcscd)
    except ProductionCheckError as error:
        print(f"production mode: cannot check: {error}", file=sys.stderr)
        return 2
    refusals = production_refusals(state)
    for refusal in refusals:
        print(f"production mode REFUSES: {refusal}")
    if state.pcsc_readers is None and not args.no_pcscd:
        print("production mode: note: pcscd could not be asked for its readers")
    if refusals:
        print(f"production mode: {len(refusals)} reason(s) to refuse; this terminal must not take votes")
        return 1
    print(f"production mode: ok ({len(state.certificates)} certificates checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
