"""``station-hub`` commands of issue 17: join the municipal roll, or exchange marks with it.

An **early-voting or common polling place** checks its voters in at the municipal roll (no
roll of its own), through its roll relay (station_hub/municipal_relay.py). It joins before it
registers with the centre, since its registration must carry the municipality's token key:

    station-hub municipal-request STATION st-a.roll.csr     # the station roll's own key stays here
    gateway municipal-roll add-station CENTRAL st-a.roll.csr st-a.municipal.json --municipality kaga --kind early
    station-hub municipal-link STATION st-a.municipal.json  # now `station-hub run` starts the relay
    station-hub registration STATION …                      # then as every station

An **election-day station** keeps its own roll segment (made with the municipality's roll
salt) and works offline; before it opens it imports the early marks, after it closes its own
marks go back:

    station-hub import-early-marks STATION marks.json --marks-key CENTRAL/municipal/kaga/marks.pem --municipality kaga
    station-hub export-marks STATION st-day.marks.json --municipality kaga
"""

from __future__ import annotations

from pathlib import Path

import click

from infra.errors import SiteError
from infra.files import write_atomically
from station_hub.cli_common import STATION_DIR, open_station
from station_hub.station import Station


@click.command(
    "municipal-request",
    help="Make this station an early-voting or common polling place, step 1: write the station roll's "
    "certificate request for the central broker to OUT (its key stays here), for `gateway municipal-roll "
    "add-station`. Before `station-hub registration`.",
)
@STATION_DIR
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def municipal_request(directory: Path, out: Path) -> None:
    from station_hub.municipal_relay import request_municipal_link

    station = open_station(directory)
    try:
        request = request_municipal_link(station)
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(out, request)
    click.echo(f"request of {station.station_id}.roll written to {out}; take it to the central office")


@click.command(
    "municipal-link",
    help="Step 2: install the central office's GRANT (`gateway municipal-roll add-station`): the municipality's "
    "token key, the central broker and the station roll's certificate. `station-hub run` then starts the roll "
    "relay instead of a roll, and a booth that cannot reach the municipal roll says so (no fallback).",
)
@STATION_DIR
@click.argument("grant", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def municipal_link(directory: Path, grant: Path) -> None:
    from station_hub.municipal_relay import install_municipal_grant

    station = open_station(directory)
    try:
        link = install_municipal_grant(station, grant.read_bytes())
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"station {station.station_id}: {link.kind} polling place of {link.municipality}, checking voters in at the "
        f"municipal roll through {link.host}:{link.port}; next: `station-hub registration` (it carries the "
        "municipality's token key), and re-provision the booths (`station-hub export-package`)"
    )


def _not_municipal(station: Station, what: str) -> None:
    from station_hub.municipal_relay import MunicipalLink

    if MunicipalLink.exists(station.directory):
        raise click.ClickException(
            f"station {station.station_id} checks voters in at the municipal roll: it has no roll of its own to {what}"
        )


@click.command(
    "import-early-marks",
    help="Before an election-day station opens: mark on its roll the voters who voted early (MARKS, from "
    "`gateway municipal-roll export-early-marks`, checked with the municipality's --marks-key); its roll then "
    "refuses them (already voted) without any link on election day.",
)
@STATION_DIR
@click.argument("marks", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--marks-key",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The municipality's marks.pem (Ed25519), brought from the central office.",
)
@click.option("--municipality", required=True, help="The municipality this station belongs to.")
def import_early_marks_command(directory: Path, marks: Path, marks_key: Path, municipality: str) -> None:
    from station_hub.municipal_marks import import_early_marks, load_marks_key

    station = open_station(directory)
    _not_municipal(station, "mark")
    try:
        key = load_marks_key(marks_key.read_bytes())
        marked = import_early_marks(station, marks.read_bytes(), key, municipality)
    except (SiteError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{marked} voters of this station's roll are marked as having voted early in {municipality}")


@click.command(
    "export-marks",
    help="After an election-day station closed: write its marks (the voter keys it checked in, sorted, signed "
    "with its central-link key) to OUT, for `gateway municipal-roll import-station-marks`.",
)
@STATION_DIR
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--municipality", required=True, help="The municipality this station belongs to.")
def export_marks(directory: Path, out: Path, municipality: str) -> None:
    from station_hub.municipal_marks import export_station_marks

    station = open_station(directory)
    _not_municipal(station, "export")
    try:
        payload = export_station_marks(station, municipality)
    except SiteError as error:
        raise click.ClickException(str(error)) from error
    write_atomically(out, payload)
    click.echo(f"marks of station {station.station_id} for {municipality} written to {out}")


COMMANDS = (municipal_request, municipal_link, import_early_marks_command, export_marks)
