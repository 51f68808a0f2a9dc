"""``gateway municipal-roll …``: the municipal roll at the central office, for an operator.

The order an election office follows (docs/municipal-roll.md, "Running it"):

    gateway municipal-roll init CENTRAL --database postgresql://…      # schema, identities municipal-roll-N
    gateway municipal-roll add-municipality CENTRAL kaga --jpki-ca … --jpki-crl …
    gateway municipal-roll import-voters CENTRAL kaga voters.json      # before the polls open
    gateway municipal-roll add-station CENTRAL st-a.roll.csr st-a.municipal.json --municipality kaga --kind early
    gateway municipal-roll add-election-day-station CENTRAL st-day --municipality kaga
    gateway municipal-roll polls CENTRAL kaga open
    gateway municipal-roll serve CENTRAL --identity municipal-roll-1   # one per core, until SIGTERM
    gateway municipal-roll export-early-marks CENTRAL kaga marks.json  # to each election-day station
    gateway municipal-roll import-station-marks CENTRAL kaga st-day st-day.marks.json   # after it closed
    gateway municipal-roll status CENTRAL                              # the register, per municipality

Every refusal is a ``click.ClickException`` with the reason (exit code 1); nothing is half-done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from election.cli import ProgressLine
from gateway.errors import GatewayError
from infra.errors import SiteError
from infra.files import write_atomically
from protocol.municipal import municipal_roll_identity

if TYPE_CHECKING:
    from gateway.municipal_roll import MunicipalConfig

CENTRAL_DIR = click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
MUNICIPALITY = click.argument("municipality")


def _config(directory: Path) -> MunicipalConfig:
    from gateway.municipal_roll import MunicipalConfig, config_path

    try:
        return MunicipalConfig.read(config_path(directory))
    except GatewayError as error:
        raise click.ClickException(str(error)) from error


def _passphrase() -> bytes | None:
    from gateway.municipal_roll import PASSPHRASE_ENV

    secret = os.environ.get(PASSPHRASE_ENV)
    return secret.encode() if secret else None


@click.group(
    "municipal-roll",
    help="The municipal roll: early-voting and common polling places check voters in "
    "against one register per municipality, on PostgreSQL (docs/municipal-roll.md).",
)
def municipal_roll() -> None:
    pass


@municipal_roll.command(
    help="Set up the municipal roll of the central office in DIRECTORY: its configuration, its "
    "tables on the PostgreSQL server, and a central-broker identity for each serving process "
    "(restart `gateway broker` afterwards: its ACL then lets them in). Run again to add processes."
)
@CENTRAL_DIR
@click.option("--database", required=True, help="PostgreSQL URL of the register (postgresql://user@host:port/db).")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="municipal-roll-N identities to certify (run one `serve` per core).",
)
def init(directory: Path, database: str, processes: int) -> None:
    from gateway.municipal_roll import init_municipal_roll

    if not database.startswith(("postgresql://", "postgres://")):
        raise click.ClickException("the municipal roll needs a PostgreSQL server: --database postgresql://…")
    try:
        config = init_municipal_roll(directory, database, processes)
    except (GatewayError, SiteError) as error:
        raise click.ClickException(str(error)) from error
    identities = ", ".join(municipal_roll_identity(i) for i in range(1, processes + 1))
    click.echo(f"municipal roll configured in {config.path}; identities {identities}")


@municipal_roll.command(
    "add-municipality",
    help="Add MUNICIPALITY: its token key (sealed with $MUNICIPAL_TOKEN_PASSPHRASE if set), its "
    "roll salt, its marks key and the JPKI trust, in DIRECTORY/municipal/MUNICIPALITY.",
)
@CENTRAL_DIR
@MUNICIPALITY
@click.option(
    "--jpki-ca",
    "anchors",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="JPKI issuing CA (repeatable).",
)
@click.option(
    "--jpki-crl",
    "crls",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Its CRL (repeatable).",
)
@click.option(
    "--roll-salt",
    "salt_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Hex file of the roll salt the voter-key files are made with (default: a new one, in salt.key).",
)
def add_municipality_command(
    directory: Path, municipality: str, anchors: tuple[Path, ...], crls: tuple[Path, ...], salt_file: Path | None
) -> None:
    from gateway.municipal_roll import PASSPHRASE_ENV, add_municipality

    passphrase = _passphrase()
    if passphrase is None:
        click.echo(f"warning: {PASSPHRASE_ENV} is not set: the token key is stored unsealed (training only)", err=True)
    try:
        salt = bytes.fromhex(salt_file.read_text().strip()) if salt_file else None
        if salt is not None and len(salt) < 16:
            raise click.ClickException("the roll salt must be at least 16 bytes")
        made = add_municipality(
            directory,
            municipality,
            jpki_anchors=list(anchors),
            jpki_crls=list(crls),
            roll_salt=salt,
            passphrase=passphrase,
        )
    except ValueError as error:
        raise click.ClickException(f"the roll salt file must hold hex: {error}") from error
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"municipality {municipality} added in {made.directory}: token key {made.token_public_file}, "
        f"marks key {made.marks_public_file}, roll salt {made.directory / 'salt.key'} (for its "
        "election-day stations' `station-hub init --roll-salt`)"
    )


@municipal_roll.command(
    "import-voters",
    help="Add the voter keys of VOTERS (a voter-key file, as `jpki-testca "
    "roll` writes) to MUNICIPALITY's register; only before its polls open.",
)
@CENTRAL_DIR
@MUNICIPALITY
@click.argument("voters", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def import_voters(directory: Path, municipality: str, voters: Path) -> None:
    from gateway.municipal_roll import MunicipalStore
    from infra.rollcore import read_voter_keys

    config = _config(directory)
    try:
        config.municipality(municipality)
        keys = read_voter_keys(voters.read_bytes())
        store = MunicipalStore(config.database)
        try:
            added = store.import_voters(municipality, keys, ProgressLine())
            total = store.eligible(municipality)
        finally:
            store.close()
    except (GatewayError, SiteError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{added} voters added to {municipality} ({len(keys) - added} already there); {total} on its register")


@municipal_roll.command(
    "add-station",
    help="Make the station whose roll wrote REQUEST (`station-hub municipal-request`) an early-"
    "voting or common polling place of --municipality, and write the GRANT to take back to it "
    "(`station-hub municipal-link`), before it registers with the centre.",
)
@CENTRAL_DIR
@click.argument("request", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("grant", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--municipality", required=True)
@click.option(
    "--kind",
    type=click.Choice(["early", "common"]),
    required=True,
    help="early: an early-voting place; common: a common polling place (共通投票所) on election day.",
)
def add_station(directory: Path, request: Path, grant: Path, municipality: str, kind: str) -> None:
    from gateway.municipal_roll import grant_municipal_link

    try:
        made = grant_municipal_link(directory, request.read_bytes(), municipality, kind)
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(grant, made.encode())
    click.echo(
        f"station {made.station_id}: {kind} polling place of {municipality}; grant in {grant} "
        f"(then `station-hub municipal-link`, `station-hub registration`, `gateway register-station`)"
    )


@municipal_roll.command(
    "add-election-day-station",
    help="Record STATION as an election-day station of --municipality (its own roll, offline): "
    "reconciliation then expects its marks back after it closes.",
)
@CENTRAL_DIR
@click.argument("station")
@click.option("--municipality", required=True)
def add_election_day_station(directory: Path, station: str, municipality: str) -> None:
    from gateway.municipal_roll import MunicipalStore

    config = _config(directory)
    try:
        config.municipality(municipality)
        store = MunicipalStore(config.database)
        try:
            store.add_day_station(station, municipality)
        finally:
            store.close()
    except (GatewayError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"station {station}: election-day station of {municipality}")


@municipal_roll.command(
    help="Open or close the polls of MUNICIPALITY at its early/common places (pending → open "
    "→ closed, never back). Each station's own polls are opened by its officials as usual."
)
@CENTRAL_DIR
@MUNICIPALITY
@click.argument("command", type=click.Choice(["open", "close"]))
def polls(directory: Path, municipality: str, command: str) -> None:
    from gateway.municipal_roll import MunicipalStore

    config = _config(directory)
    try:
        config.municipality(municipality)
        store = MunicipalStore(config.database)
        try:
            state = store.change_polls(municipality, command)
            eligible, early, _day = store.tallies(municipality)
        finally:
            store.close()
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"polls of {municipality} {state}: {eligible} voters on the register, {early} checked in so far")


@municipal_roll.command(
    help="Answer check-ins on the central broker until SIGTERM (one process per core, each "
    "with its own --identity; they share the check-ins and the challenges)."
)
@CENTRAL_DIR
@click.option(
    "--identity",
    default=municipal_roll_identity(1),
    show_default=True,
    help="municipal-roll-N (certified by `municipal-roll init --processes`).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Threads judging check-ins, each with its own database connection.",
)
def serve(directory: Path, identity: str, workers: int) -> None:
    from gateway.central import Central
    from gateway.municipal_roll import config_path
    from gateway.municipal_roll import serve as serve_roll

    config = _config(directory)
    if not config.directories:
        raise click.ClickException("no municipality yet: `gateway municipal-roll add-municipality` first")
    try:
        central = Central.open(directory)
        if not central.cert_file(identity).exists():
            raise click.ClickException(f"no certificate for {identity}: `gateway municipal-roll init --processes N`")
        serve_roll(central, config_path(directory), workers=workers, identity=identity)
    except GatewayError as error:
        raise click.ClickException(str(error)) from error


@municipal_roll.command(
    "export-early-marks",
    help="Write OUT: everyone checked in so far in MUNICIPALITY (voter keys only, sorted), "
    "signed with its marks key, for its election-day stations (`station-hub import-early-"
    "marks`) before they open. Close the early polls first, or the marks go stale.",
)
@CENTRAL_DIR
@MUNICIPALITY
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def export_early_marks_command(directory: Path, municipality: str, out: Path) -> None:
    from gateway.central import Central
    from gateway.municipal_roll import MunicipalStore, export_early_marks

    config = _config(directory)
    try:
        chosen = config.municipality(municipality)
        base_hash = Central.open(directory).election().manifest.base_hash
        store = MunicipalStore(config.database)
        try:
            polls_state = store.polls(municipality)
            payload = export_early_marks(chosen, store, base_hash)
            _eligible, early, day = store.tallies(municipality)
            marked = early + day
        finally:
            store.close()
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(out, payload)
    click.echo(f"{marked} early marks of {municipality} written to {out} (check them with {chosen.marks_public_file})")
    if polls_state == "open":
        click.echo(
            "warning: the municipality's polls are still open: voters checked in after now are not in "
            "these marks (reconciliation will show any who vote again)",
            err=True,
        )


@municipal_roll.command(
    "import-station-marks",
    help="Mark on MUNICIPALITY's register the voters election-day STATION checked in (its MARKS "
    "file, `station-hub export-marks`, signed with its central-link key), once, after it "
    "closed; voters already marked (voted twice) are reported for reconciliation.",
)
@CENTRAL_DIR
@MUNICIPALITY
@click.argument("station")
@click.argument("marks", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def import_station_marks_command(directory: Path, municipality: str, station: str, marks: Path) -> None:
    from gateway.central import Central
    from gateway.municipal_roll import MunicipalStore, import_station_marks

    config = _config(directory)
    try:
        config.municipality(municipality)
        base_hash = Central.open(directory).election().manifest.base_hash
        store = MunicipalStore(config.database)
        try:
            result = import_station_marks(directory, store, municipality, station, marks.read_bytes(), base_hash)
        finally:
            store.close()
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"station {station}: {result.marked} voters marked on {municipality}'s register, "
        f"{result.voted_twice} already marked (voted twice), {result.not_registered} not on the register"
    )
    if result.voted_twice or result.not_registered:
        click.echo("  ! reconcile: see `gateway status`", err=True)


@municipal_roll.command(
    help="The register per municipality (polls, eligible, checked in at early/common places, "
    "marked by election-day stations) and the stations of each."
)
@CENTRAL_DIR
def status(directory: Path) -> None:
    from gateway.municipal_roll import MunicipalStore

    config = _config(directory)
    try:
        store = MunicipalStore(config.database)
        try:
            stations = store.stations()
            for name in store.municipalities():
                eligible, early, day = store.tallies(name)
                click.echo(
                    f"{name}: polls {store.polls(name)}, {eligible} on the register, {early} checked in at "
                    f"early/common places, {day} marked by election-day stations"
                )
                for station_id, _m, kind in (s for s in stations if s[1] == name):
                    click.echo(f"  {station_id} ({kind})")
        finally:
            store.close()
    except GatewayError as error:
        raise click.ClickException(str(error)) from error
