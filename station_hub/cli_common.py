"""What every `station-hub` command module shares: the station folder argument and opening it
with a one-line error instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import click

from infra.errors import SiteError
from station_hub.station import Station

STATION_DIR = click.argument("directory", type=click.Path(path_type=Path, file_okay=False))


def open_station(directory: Path) -> Station:
    try:
        return Station.open(directory)
    except SiteError as error:
        raise click.ClickException(str(error)) from error
