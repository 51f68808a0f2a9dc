"""``gateway``: the central office — set up, register stations, ingest, export, tally, look up."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from election.cli import ProgressLine
from gateway.central import Central, init_central, register_station, worker_name
from gateway.errors import GatewayError
from infra.errors import SiteError
from infra.files import write_atomically
from infra.logs import configure_logging

CENTRAL_DIR = click.argument("directory", type=click.Path(path_type=Path, file_okay=False))


def _open(directory: Path) -> Central:
    try:
        return Central.open(directory)
    except GatewayError as error:
        raise click.ClickException(str(error)) from error


@click.group(help="Central office: receives every station's chain, verifies, stores, exports, tallies.")
@click.option("-v", "--verbose", is_flag=True, help="Log every batch.")
def main(verbose: bool) -> None:
    configure_logging(logging.INFO if verbose else logging.WARNING)


@main.command(help="Create the central office in DIRECTORY: CA, broker config, election package, store.")
@CENTRAL_DIR
@click.option("--election", "election_dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8884, show_default=True)
@click.option("--database", default="", help="PostgreSQL URL (default: SQLite DIRECTORY/gateway.db).")
@click.option("--workers", default=2, show_default=True, help="Worker identities to certify.")
def init(directory: Path, election_dir: Path, host: str, port: int, database: str, workers: int) -> None:
    try:
        init_central(directory, election_dir, host=host, port=port, database=database, workers=workers)
    except (GatewayError, SiteError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"central office created in {directory}")


@main.command(
    "register-station",
    help="Register a station from its REGISTRATION file (`station-hub registration`) and write "
    "the LINK grant to hand back to it (`station-hub link`).",
)
@CENTRAL_DIR
@click.argument("registration", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("link", type=click.Path(path_type=Path, dir_okay=False))
def register(directory: Path, registration: Path, link: Path) -> None:
    try:
        station_id, added, problems, grant = register_station(_open(directory), registration.read_bytes())
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(link, grant.encode())
    for problem in problems:
        click.echo(f"warning: {problem} (not registered)", err=True)
    click.echo(f"station {station_id} registered; terminals added: {', '.join(added) or 'none'}; link grant in {link}")


@main.command(help="Run the central Mosquitto broker (until SIGTERM).")
@CENTRAL_DIR
@click.option("--workers", default=2, show_default=True)
def broker(directory: Path, workers: int) -> None:
    from infra.broker import Broker
    from infra.pki import StationCA

    central = _open(directory)
    central.write_broker_files(workers)
    renewed = StationCA.load(directory / "ca").renew_crl_if_due()  # a stale CRL refuses every hub
    if renewed is not None:
        click.echo(f"central CRL re-signed, next update {renewed.next_update_utc:%Y-%m-%d} UTC")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Broker(central, directory / "broker" / "mosquitto.log"):  # type: ignore[arg-type]
        click.echo(f"central broker on {central.host}:{central.port}")
        stop.wait()


@main.command("renew-crl", help="Re-sign the central CRL (same revocations, new dates); the broker reloads it.")
@CENTRAL_DIR
@click.option("--if-due", is_flag=True, help="Only when it has less than 7 days left (for a daily timer).")
def renew_crl(directory: Path, if_due: bool) -> None:
    from infra.broker import renew_site_crl
    from infra.pki import PkiError

    try:
        crl, reloaded = renew_site_crl(_open(directory), directory / "ca", if_due=if_due)  # type: ignore[arg-type]
    except PkiError as error:
        raise click.ClickException(str(error)) from error
    if crl is None:
        click.echo("the central CRL is good for more than 7 days: nothing to do")
        return
    click.echo(f"central CRL re-signed, next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC"
               + ("; broker reloaded" if reloaded else "; no central broker runs here"))  # fmt: skip


@main.command(help="Run one ingest worker (run several: they share the load).")
@CENTRAL_DIR
@click.option("--name", default=worker_name(1), show_default=True, help="Worker identity (certificate CN).")
@click.option("--database", default=None, help="Override the store (PostgreSQL URL or SQLite path).")
def run(directory: Path, name: str, database: str | None) -> None:
    from gateway.worker import serve

    central = _open(directory)
    if not central.cert_file(name).exists():
        raise click.ClickException(f"no certificate for worker {name}; run `gateway broker --workers N` first")
    serve(central, name, database)


@main.command(help="Every station's chain head, completeness and the incidents flagged; with a municipal roll, "
              "the reconciliation of check-ins, ballots and marks per station and per municipality. Exit 1 on an "
              "open incident or a discrepancy.")  # fmt: skip
@CENTRAL_DIR
@click.option("--database", default=None)
def status(directory: Path, database: str | None) -> None:
    from gateway.reconcile import report_lines

    store = _open(directory).store(database)
    try:
        for station_id in store.station_ids():
            state = store.station_state(station_id)
            assert state is not None
            done = "complete" if state.complete else "incomplete"
            click.echo(f"{station_id}: position {state.head.position}, {state.state}, {done}")
        incidents = store.incidents()
        reconciliation, discrepancy = report_lines(directory, store)
    finally:
        store.close()
    for incident in incidents:
        click.echo(f"  ! {incident.describe()}")
    for line in reconciliation:
        click.echo(line)
    if any(not incident.resolved for incident in incidents) or discrepancy:
        sys.exit(1)


@main.command(help="Write the election record to RECORD (then `gateway tally RECORD` and `election verify RECORD`).")
@CENTRAL_DIR
@click.argument("record", type=click.Path(path_type=Path, file_okay=False))
@click.option("--database", default=None)
def export(directory: Path, record: Path, database: str | None) -> None:
    from gateway.export import export_record

    if record.exists() and any(record.iterdir()):
        raise click.ClickException(f"{record} is not empty; choose a new record folder")
    central = _open(directory)
    store = central.store(database)
    try:
        summary = export_record(central, store, record, ProgressLine())
    except GatewayError as error:  # the municipal roll's database unreachable: no record without its keys
        raise click.ClickException(f"{error}: nothing was exported") from error
    finally:
        store.close()
    stations = ", ".join(f"{s} ({n} entries)" for s, n in summary.stations.items())
    click.echo(f"record written to {record}: {summary.cast} cast, {summary.spoiled} spoiled; stations {stations}")
    for problem in summary.problems:
        click.echo(f"  ! {problem}")


@main.command(help="Tally RECORD, decrypt the totals with the trustees' key files, write the results.")
@click.argument("record", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="A present trustee's key file (repeat for each; any quorum of them).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="every core",
    help="Processes reading and adding the ballots (the tally is the same for any number).",
)  # fmt: skip
@click.option("--cluster", metavar="ADDRESS", default=None,
              help="Add the ballots on a Dask cluster (scheduler address) whose workers see RECORD.")  # fmt: skip
def tally(record: Path, keys: tuple[Path, ...], workers: int, cluster: str | None) -> None:
    from gateway.results import NIST_RESULTS_FILE, tally_and_decrypt

    try:
        results = tally_and_decrypt(record, list(keys), ProgressLine(), workers=workers, cluster=cluster)
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{results.ballot_count} ballots; trustees present: {', '.join(results.trustees_present)}")
    for (contest, selection), total in results.totals.items():
        click.echo(f"  {contest:<16} {selection:<16} {total:>7}")
    click.echo(f"results: {record / 'results.json'}, {record / NIST_RESULTS_FILE}")


@main.command(
    help="Find a voter's TRACKING_CODE in the central store: the station and batch that hold the ballot "
    "(exit 1 if it is not there yet, 2 for a code typed with I, O, 0 or 1, which no code has)."
)
@CENTRAL_DIR
@click.argument("tracking_code")
@click.option("--database", default=None)
def lookup(directory: Path, tracking_code: str, database: str | None) -> None:
    from election.chain import TrackingCodeTypo

    store = _open(directory).store(database)
    try:
        found = store.find_tracking_code(tracking_code)
    except TrackingCodeTypo as typo:
        click.echo(f"{typo}: the letters are A–Z without I and O, the digits 2–9; please check the code", err=True)
        sys.exit(2)
    finally:
        store.close()
    if found is None:
        click.echo(f"{tracking_code} is not (yet) at the central office")
        sys.exit(1)
    station_id, entry = found
    counted = {"cast": "counted in the tally", "late": "chained late (after the polls closed): counted"}.get(
        entry.kind, "challenged and spoiled: not counted"
    )
    click.echo(f"{entry.tracking_code}: station {station_id}, batch {entry.batch}, {counted}")


@main.command(
    "self-test",
    help="Check what the central office needs: configuration, election package with trustees, CA and "
    "CRL, broker and worker certificates and keys, station links, store (SQLite, or a PostgreSQL "
    "connection), broker. One line per check (PASS/WARN/FAIL, with what to do); exit 1 if any fails.",
)
@CENTRAL_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (for scripts).")
def self_test(directory: Path, as_json: bool) -> None:
    from gateway.selftest import run_selftest

    report = run_selftest(directory)
    click.echo(report.json_text() if as_json else report.text())
    sys.exit(0 if report.ok else 1)


def _add_municipal_roll() -> None:
    from gateway.municipal_cli import municipal_roll  # init, serve, marks (docs/municipal-roll.md)

    main.add_command(municipal_roll)


_add_municipal_roll()

if __name__ == "__main__":
    main()
