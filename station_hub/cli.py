"""``station-hub``: set up a station, run its services, open/close the polls, watch it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from audit.errors import AuditError, AuditLogBusy
from audit.keys import load_or_create_signing_key
from audit.store import AuditLog
from election.encoding import canonical_bytes, sha256
from infra.errors import SiteError
from infra.files import write_atomically
from infra.link import CentralLink
from infra.logs import configure_logging
from infra.mqtt import HubClient
from infra.pki import PkiError, StationCA
from station_hub.cli_common import STATION_DIR, open_station
from station_hub.enrolment import COMMANDS as ENROLMENT_COMMANDS
from station_hub.municipal_cli import COMMANDS as MUNICIPAL_COMMANDS
from station_hub.operator import change_polls
from station_hub.roll import RollStore, read_voter_keys
from station_hub.roll_service import roll_audit_paths, roll_log_id
from station_hub.station import Station, init_station


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
@click.option(
    "--roll-salt",
    "roll_salt_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="File with the roll salt (hex) the voter-key file was made with.",
)
@click.option(
    "--jpki-ca",
    "jpki_anchors",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="JPKI issuing CA certificate the roll trusts (repeatable).",
)
@click.option(
    "--jpki-crl",
    "jpki_crls",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="CRL of a JPKI issuing CA (repeatable; refresh with `station-hub jpki-crl`).",
)
@click.option(
    "--training-terminal-keys",
    is_flag=True,
    help="Training/demo only: make the terminals' private keys here (real terminals enrol).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8883, show_default=True)
def init(directory: Path, station_id: str, election_dir: Path, terminals: tuple[str, ...],
         operators: tuple[str, ...], voters: Path | None, roll_salt_file: Path | None,
         jpki_anchors: tuple[Path, ...], jpki_crls: tuple[Path, ...], training_terminal_keys: bool,
         host: str, port: int) -> None:  # fmt: skip
    import os

    from station_hub.station import ROLL_PASSPHRASE_ENV

    passphrase = os.environ.get(ROLL_PASSPHRASE_ENV)
    if not passphrase:
        click.echo(f"warning: {ROLL_PASSPHRASE_ENV} is not set: the roll's token key is stored unsealed "
                   "(training stations only)", err=True)  # fmt: skip
    try:
        salt = bytes.fromhex(roll_salt_file.read_text().strip()) if roll_salt_file else None
        station = init_station(
            directory, station_id, election_dir, list(terminals), list(operators), host, port,
            training_terminal_keys=training_terminal_keys, roll_salt=salt,
            roll_passphrase=passphrase.encode() if passphrase else None,
            jpki_anchors=list(jpki_anchors), jpki_crls=list(jpki_crls),
        )  # fmt: skip
        if voters:
            _import(station, voters)
    except ValueError as error:
        raise click.ClickException(f"the roll salt file must hold hex: {error}") from error
    except (SiteError, PkiError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"station {station_id} created in {directory}")


@main.command("jpki-crl", help="Install fresh CRLs of the JPKI issuing CAs; the roll uses them at once.")
@STATION_DIR
@click.argument("crls", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
def jpki_crl(directory: Path, crls: tuple[Path, ...]) -> None:
    from station_hub.station import install_jpki

    install_jpki(open_station(directory), [], list(crls))
    click.echo(f"{len(crls)} CRL(s) installed")


def _open_roll_audit(station: Station) -> AuditLog:
    log_path, key_path = roll_audit_paths(station)
    try:
        return AuditLog.open(log_path, load_or_create_signing_key(key_path), roll_log_id(station))
    except AuditLogBusy:
        raise SiteError(
            "the roll service is running and writes the roll's audit log; stop it to import voters"
        ) from None
    except AuditError as error:
        raise SiteError(f"the roll's audit log: {error}") from error


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
        _import(open_station(directory), file)
    except SiteError as error:
        raise click.ClickException(str(error)) from error


@main.command(help="Revoke NAME (a terminal, say) at once: CRL, broker ACL and connection, roll and ledger.")
@STATION_DIR
@click.argument("name")
def revoke(directory: Path, name: str) -> None:
    from infra.broker import drop_client, reload_broker
    from station_hub.station import write_acl

    station = open_station(directory)
    try:
        ca = StationCA.load(directory / "ca")
        serials = ca.revoke_name(name)  # crl.pem rewritten: the roll and the ledger refuse it now
        write_acl(station)  # the broker's ACL no longer lists NAME
        reloaded = reload_broker(station)  # ACL and CRL re-read: NAME can publish nothing, nor reconnect
        dropped = reloaded and drop_client(station, ca, name)  # and its open connection is closed
        if reloaded:
            reload_broker(station)  # the take-over certificate is on the CRL too
    except (PkiError, SiteError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"revoked {name} ({len(serials)} certificate(s)); the roll and the ledger refuse it")
    if reloaded:
        click.echo(f"broker reloaded; {name}'s connection closed" if dropped else
                   f"broker reloaded; could not take over {name}'s session", err=not dropped)  # fmt: skip
    else:
        click.echo("no broker of this station is running here: reload it (SIGHUP) to apply the CRL and ACL",
                   err=True)  # fmt: skip


@main.command("renew-crl", help="Re-sign the station CRL (same revocations, new dates) and make the broker reload it.")
@STATION_DIR
@click.option("--if-due", is_flag=True, help="Only when it has less than 7 days left (for a daily timer).")
def renew_crl(directory: Path, if_due: bool) -> None:
    from infra.broker import renew_site_crl

    try:
        crl, reloaded = renew_site_crl(open_station(directory), directory / "ca", if_due=if_due)
    except PkiError as error:
        raise click.ClickException(str(error)) from error
    if crl is None:
        click.echo("the station CRL is good for more than 7 days: nothing to do")
        return
    click.echo(f"station CRL re-signed, next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC"
               + ("; broker reloaded" if reloaded else "; no broker of this station runs here"))  # fmt: skip


@main.command(help="Run the ledger service alone (until SIGTERM).")
@STATION_DIR
@click.option("--no-proofs", is_flag=True, help="Skip ZK proof checks (benchmarks only).")
@click.option("--checkpoint-interval", default=2.0, show_default=True)
@click.option("--proof-workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="every core",
              help="Processes checking each ballot (parse, signatures, token, proofs); "
                   "one process keeps the pool and the chain.")  # fmt: skip
def ledger(directory: Path, no_proofs: bool, checkpoint_interval: float, proof_workers: int) -> None:
    from station_hub.ledger_service import serve

    serve(open_station(directory), check_proofs=not no_proofs, checkpoint_interval=checkpoint_interval,
          proof_workers=proof_workers)  # fmt: skip


@main.command(help="Run the roll service alone (until SIGTERM).")
@STATION_DIR
def roll(directory: Path) -> None:
    from infra.service import run_service
    from station_hub.municipal_relay import MunicipalLink, RelayService
    from station_hub.roll_service import RollService

    station = open_station(directory)
    # An early-voting or common polling place checks voters in at the municipal roll (no roll here).
    service = RelayService(station) if MunicipalLink.exists(station.directory) else RollService(station)
    run_service(service, "roll")  # signals, sd_notify (READY, WATCHDOG, STOPPING)


@main.command(
    "registration",
    help="Write the station's registration for the central office (its public keys and a "
    "certificate request for its link) to OUT.",
)
@STATION_DIR
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def registration_command(directory: Path, out: Path) -> None:
    from station_hub.registration import registration

    try:
        document = registration(open_station(directory))
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(out, document.encode())
    for problem in document.problems:
        click.echo(f"warning: {problem}", err=True)
    click.echo(f"registration of station {document.station_id} written to {out}; take it to the central office")


@main.command(help="Install the central office's LINK grant (`gateway register-station`); the forwarder then runs.")
@STATION_DIR
@click.argument("link", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def link(directory: Path, link: Path) -> None:
    from station_hub.registration import install_link

    try:
        grant = install_link(open_station(directory), link.read_bytes())
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"linked to the central broker at {grant.host}:{grant.port}")


@main.command(help="Forward the chain to the central office (after `gateway register-station`).")
@STATION_DIR
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the centre's confirm.")
@click.option("--batch", default=200, show_default=True, help="Chain entries per message.")
def forward(directory: Path, timeout: float, batch: int) -> None:
    from station_hub.forwarder import serve

    serve(open_station(directory), timeout=timeout, batch_entries=batch)


@main.command(
    help="Start Mosquitto (unless --attach) and the services (and the forwarder once registered); "
    "restart a failed one with backoff; stop them all on exit (they die with this process)."
)
@STATION_DIR
@click.option("--attach", is_flag=True, help="Use an already running broker.")
def run(directory: Path, attach: bool) -> None:
    from station_hub.supervisor import Child, Supervisor, service_argv

    station = open_station(directory)
    try:  # a CRL past its date would make the broker refuse every identity
        renewed = StationCA.load(directory / "ca").renew_crl_if_due()
    except (PkiError, OSError):
        renewed = None  # no CA key here (an installed hub: the daily renew-crl timer does it)
    if renewed is not None:
        click.echo(f"station CRL re-signed, next update {renewed.next_update_utc:%Y-%m-%d} UTC")
    verbose = ["-v"] if logging.getLogger().getEffectiveLevel() <= logging.INFO else []
    names = ["ledger", "roll"] + (["forward"] if CentralLink.exists(directory) else [])
    services = [Child(name, [*service_argv(name, directory)[:3], *verbose, *service_argv(name, directory)[3:]])
                for name in names]  # fmt: skip
    broker = None
    if not attach:
        broker = Child(
            "broker", ["mosquitto", "-c", str(station.broker_config)], directory / "broker" / "mosquitto.log"
        )
    supervisor = Supervisor(services, broker)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.stop_event.set())
    click.echo(f"station {station.station_id}: broker on {station.host}:{station.port}, running {', '.join(names)}")
    try:
        supervisor.run((station.host, station.port))
    except SiteError as error:
        raise click.ClickException(str(error)) from error


@main.command(
    help="Open or close the polls; prints the signed zero or closing report. Every command needs "
    "the station manager's card (first reader) and a witness's card (second reader), each unlocked "
    "with its PIN. Closing stops new check-ins at once, then waits until every terminal is drained "
    "(online, outbox empty); a terminal that cannot be brought back must be declared with "
    "--declare-unreachable (its ballots are then chained as late). Exit code 3: closing, "
    "terminals still pending; 4: the ledger refused the command (the reason is printed)."
)
@STATION_DIR
@click.argument("command", type=click.Choice(["open", "close"]))
@click.option("--operator", required=True, help="Operator id whose certificate to use.")
@click.option("--reader", "readers", multiple=True, metavar="PCSC_READER",
              help="PC/SC reader of the station manager's card, then of the witness's (default: the first "
              "two readers). Given once: both cards in turn in that reader.")  # fmt: skip
@click.option("--training-cards", is_flag=True,
              help="Training stations only: sign with the station's training cards (no reader; refused once "
              "real officials' cards are enrolled).")  # fmt: skip
@click.option("--timeout", default=10.0, show_default=True)
@click.option("--wait", "drain_wait", default=30.0, show_default=True,
              help="Seconds to wait for the terminals to drain when closing.")  # fmt: skip
@click.option("--declare-unreachable", "unreachable", multiple=True, metavar="TERMINAL",
              help="Close although TERMINAL is not drained (repeatable); recorded in the signed report.")  # fmt: skip
def polls(directory: Path, command: str, operator: str, readers: tuple[str, ...], training_cards: bool,
          timeout: float, drain_wait: float, unreachable: tuple[str, ...]) -> None:  # fmt: skip
    from infra.official_card import OfficialCardError, OfficialInReader, cards_in_readers
    from infra.officials import training_officials
    from station_hub.operator import ClosingPending, PollsRefused

    station = open_station(directory)
    if unreachable and command != "close":
        raise click.UsageError("--declare-unreachable only goes with close")
    if training_cards and readers:
        raise click.UsageError("--training-cards or --reader, not both")
    cards: list = []
    try:
        if training_cards:
            officials: list = training_officials(station.directory)
        elif len(readers) == 1:  # one reader: the manager's card, then the witness's, for each command
            officials = [OfficialInReader(readers[0], function, _ask_pin, prompt=_tell)
                         for function in ("station_manager", "witness")]  # fmt: skip
        else:
            officials = cards = cards_in_readers(_official_readers(readers), _ask_pin)
        with HubClient(station, operator).connect() as client:
            report = change_polls(client, command, timeout, unreachable=unreachable, drain_wait=drain_wait,
                                  officials=officials)  # fmt: skip
    except ClosingPending as pending:
        click.echo(
            "the polls are CLOSING: no new check-ins; ballots of tokens already issued are still taken.", err=True
        )
        click.echo("terminals that may still hold cast ballots:", err=True)
        for item in pending.pending:
            click.echo(f"  {item.describe()}", err=True)
        click.echo("bring them back online and run `polls close` again, or declare each one with "
                   "--declare-unreachable TERMINAL (see docs/operations.md §7).", err=True)  # fmt: skip
        sys.exit(3)
    except PollsRefused as refused:
        click.echo(f"Error: {refused} [{refused.reason}]", err=True)
        sys.exit(4)
    except (OfficialCardError, PkiError) as error:
        raise click.ClickException(f"officials' cards: {error}") from error
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    finally:
        for card in cards:
            card.close()
    click.echo(canonical_bytes(report).decode())


def _official_readers(readers: tuple[str, ...]) -> list[str]:
    if len(readers) == 2:
        return list(readers)
    from smartcard import scard

    code, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if code != scard.SCARD_S_SUCCESS:
        raise click.ClickException("PC/SC is not available (is pcscd running?): the officials' cards are needed")
    try:
        code, names = scard.SCardListReaders(context, [])
    finally:
        scard.SCardReleaseContext(context)
    if code != scard.SCARD_S_SUCCESS or len(names) < 2:
        raise click.ClickException("two card readers are needed (the station manager's and the witness's)")
    return list(names[:2])


def _tell(text: str) -> None:
    click.echo(text[0].upper() + text[1:] + ".", err=True)


def _ask_pin(label: str) -> str:
    click.echo(f"Insert {label} and type its PIN (the card checks it).", err=True)
    return click.prompt(f"PIN of {label}", hide_input=True, err=True)


@main.command(
    "issue-official-card",
    help="Issue an official's card (station manager or witness) from the station CA. --training writes a "
    "virtual card file (key in the clear) for the vpcd simulator and training; --public-key certifies a "
    'key made on a real smartcard (docs/operations.md, "Officials\' cards").',
)
@STATION_DIR
@click.option("--function", "function", required=True, type=click.Choice(["station_manager", "witness"]))
@click.option("--holder", required=True, help="The official's staff id (only its hash goes into the certificate).")
@click.option("--training", is_flag=True, help="Write a virtual card file (training and tests only).")
@click.option("--pin", help="With --training: the card's 4-digit PIN.")
@click.option("--public-key", "public_key", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="PEM public key generated on the smartcard (RSA-2048 or ECDSA P-256).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The card file (--training) or the certificate PEM to write onto the card.")  # fmt: skip
def issue_official_card(directory: Path, function: str, holder: str, training: bool, pin: str | None,
                        public_key: Path | None, out: Path) -> None:  # fmt: skip
    from cryptography.hazmat.primitives import serialization

    from infra.officials import issue_official_certificate, make_training_card
    from infra.pki import certificate_pem, common_name

    station = open_station(directory)
    if training == (public_key is not None):
        raise click.UsageError("give exactly one of --training or --public-key")
    try:
        if training:
            if pin is None:
                raise click.UsageError("--training needs --pin")
            certificate = make_training_card(station.directory, function, holder, pin, out)
        else:
            key = serialization.load_pem_public_key(public_key.read_bytes())  # type: ignore[union-attr]
            certificate = issue_official_certificate(station.directory, function, holder, key)  # type: ignore[arg-type]
            write_atomically(out, certificate_pem(certificate))
    except (PkiError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    card_id = common_name(certificate)
    click.echo(f"{function.replace('_', ' ')} card {card_id} (serial {certificate.serial_number:x}) written to {out}; "
               f"revoke it with `station-hub revoke {directory} {card_id}`")  # fmt: skip


@main.command(help="Live console: terminals, services, chain head, alerts (or one --json snapshot).")
@STATION_DIR
@click.option("--operator", required=True,
              help="Identity whose certificate to use: the monitor's own, not the one `polls` uses.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print one status snapshot as JSON and exit: 0 no alerts, 1 alerts, 2 no current data.")  # fmt: skip
@click.option("--wait", default=3.0, show_default=True, help="With --json: seconds to collect statuses.")
def monitor(directory: Path, operator: str, as_json: bool, wait: float) -> None:
    from station_hub.monitor import run_monitor, snapshot

    station = open_station(directory)
    if not as_json:
        run_monitor(station, operator)
        return
    document = snapshot(station, operator, wait)
    click.echo(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False))
    sys.exit(2 if document["stale"] or not document["connected"] else 1 if document["alerts"] else 0)


@main.command(help="Read-only web dashboard of the monitor on 127.0.0.1 (for the station's screen).")
@STATION_DIR
@click.option("--operator", required=True, help="Identity to read the statuses with (its own, as the monitor's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="A loopback address.")
@click.option("--port", default=8470, show_default=True)
def dashboard(directory: Path, operator: str, host: str, port: int) -> None:
    from infra.service import run_service
    from station_hub.dashboard import Dashboard

    try:
        board = Dashboard(open_station(directory), operator, host=host, port=port)
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"dashboard on {board.url}")
    run_service(board, "dashboard")


@main.command(
    help="Print the signed zero, closing or incident report as HTML and/or PDF (Chromium). The "
    "signed JSON stays authoritative; the page shows it as a QR code with lines for both officials."
)
@STATION_DIR
@click.argument("kind", type=click.Choice(["zero", "closing", "incident"]))
@click.option("--operator", help="Identity to read the report from the station broker with.")
@click.option("--from", "source", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A saved signed report (the JSON `polls open|close` printed) instead of the broker.")  # fmt: skip
@click.option("--pdf", "pdf_out", type=click.Path(path_type=Path, dir_okay=False), help="Write the PDF here.")
@click.option("--html", "html_out", type=click.Path(path_type=Path, dir_okay=False), help="Write the HTML here.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also keep the signed JSON here (the authoritative form).")  # fmt: skip
def report(directory: Path, kind: str, operator: str | None, source: Path | None, pdf_out: Path | None,
           html_out: Path | None, json_out: Path | None) -> None:  # fmt: skip
    from datetime import datetime

    from station_hub.report import check_report, fetch_report, render_html, write_pdf

    if not (pdf_out or html_out or json_out):
        raise click.UsageError("give --pdf, --html or --json (or several)")
    if (operator is None) == (source is None):
        raise click.UsageError("give exactly one of --operator (read from the broker) or --from FILE")
    station = open_station(directory)
    election = station.election()
    try:
        payload = source.read_bytes() if source else fetch_report(station, operator, kind)  # type: ignore[arg-type]
        ledger_key = station.certificate("ledger").public_key()
        signed = check_report(payload, kind, station.station_id, election.manifest, ledger_key)  # type: ignore[arg-type]
        page = render_html(kind, signed, election.manifest, datetime.now().astimezone())
        if json_out:
            write_atomically(json_out, signed.json_bytes)
        if html_out:
            write_atomically(html_out, page.encode())
        if pdf_out:
            write_pdf(page, pdf_out)
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    body = signed.body
    written = ", ".join(str(p) for p in (pdf_out, html_out, json_out) if p)
    click.echo(f"{kind} report of station {station.station_id} at chain position {body['position']}: {written}")


@main.command(
    "self-test",
    help="Check what this hub needs: station, election, CA and CRL, every service certificate and key, "
    "no terminal key, roll key and salt, JPKI CAs and CRLs, roll and ledger databases, broker. One line "
    "per check (PASS/WARN/FAIL, with what to do); exit 1 if any fails. Reads only; safe while running. "
    "A sealed roll key is checked with STATION_ROLL_PASSPHRASE.",
)
@STATION_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (for scripts).")
def self_test(directory: Path, as_json: bool) -> None:
    from station_hub.selftest import run_selftest

    report = run_selftest(directory)
    click.echo(report.json_text() if as_json else report.text())
    sys.exit(0 if report.ok else 1)


for _command in ENROLMENT_COMMANDS:  # export-package, enroll (station_hub/enrolment.py)
    main.add_command(_command)
for _command in MUNICIPAL_COMMANDS:  # municipal-request|link, import-early-marks, export-marks (issue 17)
    main.add_command(_command)


if __name__ == "__main__":
    main()
