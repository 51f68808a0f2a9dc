"""The technician's three steps that join a station to the central office, done in one go for
the demo, the tests and the benchmarks: ``station-hub registration`` → ``gateway
register-station`` → ``station-hub link`` (each side only ever handles its own keys)."""

from __future__ import annotations

from pathlib import Path

from gateway.central import Central, register_station
from station_hub.registration import install_link, registration
from station_hub.station import Station


def link_station(central: Central, station_dir: Path) -> tuple[str, list[str], list[str]]:
    """Register the station at ``station_dir`` and install its link grant; returns the station
    id, the terminals added and the station's own refusals."""
    station = Station.open(Path(station_dir))
    station_id, added, problems, grant = register_station(central, registration(station).encode())
    install_link(station, grant.encode())
    return station_id, added, problems
