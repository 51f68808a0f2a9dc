"""A hub's credentials for the central broker: ``STATION_DIR/central/`` (``link.json``,
``ca.pem``, ``hub.pem``, ``hub.key``), shaped like a site for :func:`infra.mqtt.make_client`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from infra.certdir import read_json
from infra.errors import SiteError

LINK_DIR = "central"
LINK_FILE = "link.json"
LINK_VERSION = 1


@dataclass(frozen=True)
class BrokerLink:
    """A station's credentials for a broker it does not run, in ``STATION_DIR/<LINK_DIR>/``:
    ``ca.pem``, ``<FILE_STEM>.pem``, ``<FILE_STEM>.key`` and ``link.json``; shaped like a site for
    :func:`infra.mqtt.make_client` and :func:`infra.mqtt.connect`."""

    LINK_DIR: ClassVar[str]
    FILE_STEM: ClassVar[str]

    directory: Path
    station_id: str
    host: str
    port: int

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def cert_file(self, name: str) -> Path:
        return self.directory / f"{self.FILE_STEM}.pem"

    def key_file(self, name: str) -> Path:
        return self.directory / f"{self.FILE_STEM}.key"

    @classmethod
    def directory_of(cls, station_dir: Path) -> Path:
        return Path(station_dir) / cls.LINK_DIR

    @classmethod
    def exists(cls, station_dir: Path) -> bool:
        return (cls.directory_of(station_dir) / LINK_FILE).exists()


@dataclass(frozen=True)
class CentralLink(BrokerLink):
    """The hub's link to the central broker (the forwarder's)."""

    LINK_DIR: ClassVar[str] = LINK_DIR
    FILE_STEM: ClassVar[str] = "hub"

    @classmethod
    def open(cls, station_dir: Path) -> CentralLink:
        directory = cls.directory_of(station_dir)
        data = read_json(directory / LINK_FILE, "central link")
        fields = {"version", "station_id", "host", "port"}
        if not isinstance(data, dict) or set(data) != fields or data["version"] != LINK_VERSION:
            raise SiteError(f"{directory}/{LINK_FILE}: expected version 1 with {sorted(fields)}")
        return cls(directory, data["station_id"], data["host"], data["port"])
