"""`booth self-test`: what works on this terminal, check by check.

Each check is a small function taking the terminal's `SelfTestContext` and returning a
`CheckResult`; `DEFAULT_CHECKS` is the ordered list run by `run_selftest()`. More checks
(reader, display, broker) are added by appending to that list. A check never raises: any
problem becomes a failed result with a sentence a technician can act on.

Run it:  python -m appliance.selftest --data-dir /var/lib/polling-station [--board PORT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from appliance.drivers.companion import (
    CompanionBoard,
    CompanionError,
    LinkRestored,
    firmware_sources,
    local_firmware_hash,
)
from appliance.drivers.pinmap import PinMapError, load_pinmap
from appliance.provision import TerminalFiles, election_package_hash
from appliance.ui.server import static_dir
from infra.pki import PkiError, Role, load_certificate, load_crl, verify_certificate

EARLIEST_SANE_CLOCK = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
BOARD_TIMEOUT = 5.0


@dataclass(frozen=True)
class SelfTestContext:
    files: TerminalFiles
    board_port: str | None  # None: no companion board on this terminal
    now: dt.datetime


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


Check = Callable[[SelfTestContext], CheckResult]


@dataclass(frozen=True)
class SelfTestReport:
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def text(self) -> str:
        lines = [f"  [{'ok' if r.ok else 'FAIL'}] {r.name}: {r.detail}" for r in self.results]
        verdict = "all checks passed" if self.ok else "SELF-TEST FAILED"
        return "\n".join(["self-test:", *lines, f"self-test: {verdict}"])


def check_companion_board(context: SelfTestContext) -> CheckResult:
    name = "companion board"
    if context.board_port is None:
        return CheckResult(
            name, True, "none configured (flash.sh --no-board): WARNING no keypad, no tamper monitoring — training only"
        )
    expected = local_firmware_hash()
    try:
        with CompanionBoard(context.board_port) as board:
            hello = board.wait_for(LinkRestored, timeout=BOARD_TIMEOUT)
    except CompanionError as error:
        return CheckResult(name, False, f"not reachable on {context.board_port}: {error}")
    if hello.firmware_hash != expected:
        return CheckResult(
            name,
            False,
            f"runs firmware {hello.firmware_hash[:16]}…, expected {expected[:16]}…: reflash it",
        )
    return CheckResult(name, True, f"firmware {hello.firmware_version} ({expected[:16]}…) answers")


def check_installed_files(context: SelfTestContext) -> CheckResult:
    """The files the product reads at run time are in the installed packages (importlib.resources).

    A booth installed without them starts, then shows a blank kiosk or cannot flash its board;
    this says so before a voter does.
    """
    name = "installed files"
    try:
        page = static_dir() / "index.html"
        pinmap = load_pinmap()
        missing = [str(path) for path in firmware_sources().values() if not path.is_file()]
    except (PinMapError, RuntimeError, ModuleNotFoundError) as error:
        return CheckResult(name, False, str(error))
    if missing:
        return CheckResult(name, False, f"companion firmware missing: {', '.join(missing)}")
    where = page.parents[3]  # .../appliance/ui/static/index.html: the folder holding the packages
    return CheckResult(name, True, f"kiosk page, pin map ({pinmap.source.name}) and companion firmware in {where}")


def check_certificates(context: SelfTestContext) -> CheckResult:
    name = "certificates"
    files = context.files
    try:
        ca = load_certificate(files.ca_certificate)
        device = load_certificate(files.device_certificate)
        crl = load_crl(files.crl) if files.crl.exists() else None
        verify_certificate(device, ca, crl=crl, role=Role.TERMINAL, at=context.now)
        key = serialization.load_pem_private_key(files.device_key.read_bytes(), None)
    except (PkiError, OSError, ValueError) as error:
        return CheckResult(name, False, str(error))
    if key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) != device.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw):
        return CheckResult(name, False, "the device certificate is for another key")
    remaining = device.not_valid_after_utc - context.now
    return CheckResult(name, True, f"valid against the station CA for {remaining.days} more days")


def check_clock(context: SelfTestContext) -> CheckResult:
    name = "clock"
    if context.now < EARLIEST_SANE_CLOCK:
        return CheckResult(name, False, f"reads {context.now:%Y-%m-%d}: set the time (RTC/NTP)")
    try:
        ca = load_certificate(context.files.ca_certificate)
    except PkiError:
        return CheckResult(name, True, f"{context.now:%Y-%m-%d %H:%M} UTC")
    if not ca.not_valid_before_utc <= context.now <= ca.not_valid_after_utc:
        return CheckResult(name, False, f"{context.now:%Y-%m-%d} is outside the CA's validity")
    return CheckResult(name, True, f"{context.now:%Y-%m-%d %H:%M} UTC")


def check_election_package(context: SelfTestContext) -> CheckResult:
    name = "election package"
    try:
        config = context.files.read_config()
        recorded = config["election"]["sha256"]
        actual = election_package_hash(context.files.election_package)
    except (OSError, KeyError, TypeError, ValueError) as error:
        return CheckResult(name, False, f"missing or unreadable: {error}")
    if actual != recorded:
        return CheckResult(name, False, "differs from the one provisioned: re-run flash.sh")
    return CheckResult(name, True, f"present, sha256 {actual[:16]}…")


def check_booth_configuration(context: SelfTestContext) -> CheckResult:
    """What `booth run` loads before it serves anyone: the configuration (reader settings, card
    trust anchors and CRLs, roll key), the election package, the card trust store, the device key.
    A failure here is a booth that would exit at start."""
    from appliance.card import TrustStore
    from appliance.config import ConfigError, load_config
    from appliance.runner import load_election, load_signer

    name = "booth configuration"
    try:
        config = load_config(context.files.config)
        election = load_election(config)
        load_signer(config)
        TrustStore.from_files([str(p) for p in config.trust_anchors], [str(p) for p in config.crls])
    except ConfigError as error:
        return CheckResult(name, False, f"`booth run` would exit: {error}")
    except Exception as error:  # a check never raises: the trust store's own errors, unreadable files
        return CheckResult(name, False, f"`booth run` would exit: card trust: {error}")
    reader = config.reader_kind + (f" {config.reader_name}" if config.reader_name else "")
    return CheckResult(
        name,
        True,
        f"reader {reader}, {len(config.trust_anchors)} card CA(s), {len(config.crls)} CRL(s), roll key, "
        f"election {election.manifest.election_id}",
    )


DEFAULT_CHECKS: tuple[Check, ...] = (
    check_clock,
    check_installed_files,
    check_certificates,
    check_election_package,
    check_booth_configuration,
    check_companion_board,
)


def run_selftest(context: SelfTestContext, checks: Sequence[Check] = DEFAULT_CHECKS) -> SelfTestReport:
    return SelfTestReport(tuple(check(context) for check in checks))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="booth self-test", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the terminal's data dir")
    parser.add_argument("--board", help="companion board port (default: from config.json)")
    args = parser.parse_args(argv)
    files = TerminalFiles(args.data_dir)
    port = args.board
    if port is None:
        try:
            port = files.read_config().get("companion_port")
        except (OSError, ValueError):
            port = None
    report = run_selftest(SelfTestContext(files, port, dt.datetime.now(dt.UTC)))
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
