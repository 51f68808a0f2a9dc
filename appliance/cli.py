"""``booth run --config FILE`` and ``booth self-test --config FILE``."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

import click

from appliance.config import BoothConfig, ConfigError, load_config
from appliance.production import ProductionCheckError, observe, production_refusals
from appliance.runner import BoothRunner, load_election, open_reader
from appliance.selftest import DEFAULT_CHECKS, CheckResult, SelfTestContext, SelfTestReport, run_selftest
from infra.logs import configure_logging

BROKER_TIMEOUT = 3.0


def _load(path: Path) -> BoothConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        click.echo(f"booth: {error}", err=True)
        sys.exit(2)


@click.group(help="The booth terminal: the voter's session, kiosk UI, outbox and hub link.")
def main() -> None:
    pass


@main.command("run", help="Serve voters until SIGTERM/SIGINT.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help="DATA/config.json")
@click.option("-v", "--verbose", is_flag=True)
def run_command(config_path: Path, verbose: bool) -> None:
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    config = _load(config_path)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runner = BoothRunner(config).start()
    except (ConfigError, OSError, RuntimeError) as error:
        click.echo(f"booth: cannot start: {error}", err=True)
        sys.exit(1)
    click.echo(f"booth {config.terminal_id}: kiosk page on {runner.ui.url if runner.ui else '?'}", err=True)
    try:
        stop.wait()
    finally:
        runner.stop()


def check_reader(config: BoothConfig) -> CheckResult:
    name = "card reader"
    try:
        reader = open_reader(config)
    except Exception as error:  # any driver failure is a failed check, never a crash
        return CheckResult(name, False, f"{config.reader_kind} reader not usable: {error}")
    try:
        listed = getattr(reader, "readers", lambda: [config.reader_name])()
        if config.reader_name and config.reader_name not in listed:
            return CheckResult(name, False, f"{config.reader_name!r} not found (readers: {listed})")
        if not listed:
            return CheckResult(name, False, "no reader connected")
        detail = f"{config.reader_kind}: {config.reader_name or listed[0]}"
        if any("Virtual PCD" in str(r) for r in listed):
            detail += " — WARNING: vsmartcard-vpcd is installed (training machines only)"
        return CheckResult(name, True, detail)
    except Exception as error:
        return CheckResult(name, False, str(error))
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()


def check_broker(config: BoothConfig) -> CheckResult:
    name = "station broker"
    try:
        with socket.create_connection((config.broker_host, config.broker_port), timeout=BROKER_TIMEOUT):
            pass
    except OSError as error:
        return CheckResult(name, False, f"{config.broker_host}:{config.broker_port} unreachable: {error}")
    return CheckResult(name, True, f"{config.broker_host}:{config.broker_port} accepts connections")


def check_production(config: BoothConfig) -> list[CheckResult]:
    """In production mode, one failed line per simulator, test credential or open door found."""
    name = "production mode"
    if config.mode != "production":
        return [CheckResult(name, True, "training mode: simulators and test credentials are allowed")]
    if config.site_file is None:
        return [CheckResult(name, False, "production mode is configured in the site booth.toml; start from it")]
    try:
        refusals = production_refusals(observe(config.site_file))
    except ProductionCheckError as error:
        return [CheckResult(name, False, f"cannot check: {error}")]
    if not refusals:
        return [CheckResult(name, True, "no simulator, virtual reader, demo key, test certificate or SSH found")]
    return [CheckResult(f"{name}: {refusal.code}", False, refusal.reason) for refusal in refusals]


def check_election_valid(config: BoothConfig) -> CheckResult:
    name = "election package valid"
    try:
        election = load_election(config)
    except ConfigError as error:
        return CheckResult(name, False, str(error))
    contests = len(election.manifest.contests)
    return CheckResult(name, True, f"{election.manifest.election_id}: {contests} contests, roll key loaded")


@main.command("self-test", help="Check reader, companion board, certificates, clock, broker, election.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help="DATA/config.json")
def selftest_command(config_path: Path) -> None:
    config = _load(config_path)
    checks = [
        *(c for c in DEFAULT_CHECKS if config.companion_port or c.__name__ != "check_companion_board"),
        lambda _context: check_election_valid(config),
        lambda _context: check_reader(config),
        lambda _context: check_broker(config),
    ]
    context = SelfTestContext(config.files, config.companion_port, dt.datetime.now(dt.UTC))
    report = run_selftest(context, checks)
    report = SelfTestReport((*report.results, *check_production(config)))
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
