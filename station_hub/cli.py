"""``station-hub``: set up a station, run its services, open/close the polls, watch it."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click

from audit.errors import AuditError, AuditLogBusy
from audit.keys import load_or_create_signing_key
from audit.store import AuditLog
from election.encoding import canonical_bytes, sha256
from station_hub.errors import HubError
from station_hub.logs import configure_logging
from station_hub.mqtt import HubClient
from station_hub.operator import change_polls
from station_hub.pki import PkiError, StationCA, load_certificate
from station_hub.roll import RollStore, read_voter_keys
from station_hub.roll_service import roll_audit_paths, roll_log_id
from station_hub.station import Station, init_station

STATION_DIR = click.argument("directory", type=click.Path(path_type=Path, file_okay=False))


def _open(directory: Path) -> Station:
    try:
        return Station.open(directory)
    except HubError as error:
        raise click.ClickException(str(error)) from error


@click.group(help="Polling-station hub: ledger, roll, broker and monitoring.")
@click.option("-v", "--verbose", is_flag=True, help="Log every decision.")
def main(verbose: bool) -> None:
    configure_logging(logging.INFO if verbose else logging.WARNING)


@main.command(help="Create a station in DIRECTORY: CA, certificates, broker config, election.")
@STATION_DIR
@click.option("--station", "station_id", required=True, help="Station id (topic prefix).")
@click.option("--election", "election_dir", required=True, type=click.Path(path_type=Path))
@click.option("--terminal", "terminals", multiple=True, help="Terminal id (repeatable).")
@click.option("--operator", "operators", multiple=True, help="Operator console id (repeatable).")
@click.option("--voters", type=click.Path(path_type=Path, dir_okay=False), help="Voter-key file.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8883, show_default=True)
def init(directory: Path, station_id: str, election_dir: Path, terminals: tuple[str, ...],
         operators: tuple[str, ...], voters: Path | None, host: str, port: int) -> None:  # fmt: skip
    try:
        station = init_station(directory, station_id, election_dir, list(terminals), list(operators), host, port)
        if voters:
            _import(station, voters)
    except (HubError, PkiError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"station {station_id} created in {directory}")


def _open_roll_audit(station: Station) -> AuditLog:
    log_path, key_path = roll_audit_paths(station)
    try:
        return AuditLog.open(log_path, load_or_create_signing_key(key_path), roll_log_id(station))
    except AuditLogBusy:
        raise HubError(
            "the roll service is running and writes the roll's audit log; stop it to import voters"
        ) from None
    except AuditError as error:
        raise HubError(f"the roll's audit log: {error}") from error


def _import(station: Station, voters: Path) -> None:
    """Add voters; the roll's audit log records the change (the file's hash, never a key)."""
    content = voters.read_bytes()
    keys = read_voter_keys(content)
    modulus = (station.token_public_key().key_size + 7) // 8
    with _open_roll_audit(station) as audit:
        store = RollStore(station.roll_db, modulus)
        try:
            added = store.import_voters(keys)
        finally:
            store.close()
        if added:
            audit.append("configuration_changed", setting="roll.voters", sha256=sha256(content).hex())
    click.echo(f"{added} voters added ({len(keys) - added} already on the roll)")


@main.command("import-voters", help="Add the voter keys in FILE to the roll (before opening).")
@STATION_DIR
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def import_voters(directory: Path, file: Path) -> None:
    try:
        _import(_open(directory), file)
    except HubError as error:
        raise click.ClickException(str(error)) from error


@main.command(help="Revoke the certificate of NAME (a terminal, say); the ledger refuses it.")
@STATION_DIR
@click.argument("name")
def revoke(directory: Path, name: str) -> None:
    station = _open(directory)
    try:
        certificate = load_certificate(station.cert_file(name))
        StationCA.load(directory / "ca").revoke(certificate.serial_number)
    except PkiError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"revoked {name}; restart the broker so it refuses new connections too")


@main.command(help="Run the ledger service alone (until SIGTERM).")
@STATION_DIR
@click.option("--no-proofs", is_flag=True, help="Skip ZK proof checks (benchmarks only).")
@click.option("--checkpoint-interval", default=2.0, show_default=True)
def ledger(directory: Path, no_proofs: bool, checkpoint_interval: float) -> None:
    from station_hub.ledger_service import serve

    serve(_open(directory), check_proofs=not no_proofs, checkpoint_interval=checkpoint_interval)


@main.command(help="Run the roll service alone (until SIGTERM).")
@STATION_DIR
def roll(directory: Path) -> None:
    from station_hub.roll_service import serve

    serve(_open(directory))


@main.command(help="Forward the chain to the central office (after `gateway register-station`).")
@STATION_DIR
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the centre's confirm.")
@click.option("--batch", default=200, show_default=True, help="Chain entries per message.")
def forward(directory: Path, timeout: float, batch: int) -> None:
    from station_hub.forwarder import serve

    serve(_open(directory), timeout=timeout, batch_entries=batch)


@main.command(help="Start Mosquitto (unless --attach) and the services (and the forwarder once registered).")
@STATION_DIR
@click.option("--attach", is_flag=True, help="Use an already running broker.")
def run(directory: Path, attach: bool) -> None:
    from station_hub.broker import Broker

    station = _open(directory)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    broker = None if attach else Broker(station, directory / "broker" / "mosquitto.log")
    command = [sys.executable, "-m", "station_hub.cli"]
    names = ["ledger", "roll"] + (["forward"] if (directory / "central" / "link.json").exists() else [])
    services = [subprocess.Popen([*command, name, str(directory)]) for name in names]
    click.echo(f"station {station.station_id}: broker on {station.host}:{station.port}, running")
    try:
        while not stop.wait(0.5):
            for service in services:
                if service.poll() is not None:
                    raise click.ClickException(f"a service exited with {service.returncode}")
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(10)
        if broker:
            broker.stop()


@main.command(help="Open or close the polls; prints the signed zero or closing report.")
@STATION_DIR
@click.argument("command", type=click.Choice(["open", "close"]))
@click.option("--operator", required=True, help="Operator id whose certificate to use.")
@click.option("--timeout", default=10.0, show_default=True)
def polls(directory: Path, command: str, operator: str, timeout: float) -> None:
    station = _open(directory)
    try:
        with HubClient(station, operator).connect() as client:
            report = change_polls(client, command, timeout)
    except HubError as error:
        raise click.ClickException(str(error)) from error
    click.echo(canonical_bytes(report).decode())


@main.command(help="Live console: terminals, services, chain head, alerts.")
@STATION_DIR
@click.option("--operator", required=True, help="Operator id whose certificate to use.")
def monitor(directory: Path, operator: str) -> None:
    from station_hub.monitor import run_monitor

    run_monitor(_open(directory), operator)


if __name__ == "__main__":
    main()
