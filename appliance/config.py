"""The booth's configuration: the provisioned terminal's ``config.json`` (appliance/provision.py)
plus the booth's own keys, every path relative to the data directory that holds the file.

    {"schema": "polling-station/terminal-config/1", "station": "st-1", "terminal": "t1",
     "broker": "127.0.0.1:8883", "companion_port": "/dev/ttyACM0" | null,
     "election": {"path": "election", "sha256": "…"},
     "reader": {"kind": "pcsc", "name": null} | {"kind": "pn532-uart", "port": "/dev/ttyS0"}
               | {"kind": "pn532-i2c", "address": 36} | {"kind": "pn532-spi"},
     "ui_port": 8080,
     "card": {"mode": "auth", "trust_anchors": ["card/auth-ca.pem"], "crls": ["card/auth-crl.pem"]},
     "token_key": "device/token.pem",
     "outbox": "outbox/outbox.db",
     "audit_log": "audit/booth.log", "audit_key": "audit/audit.key",
     "timeouts": {"voting": 120, "result": 30}}

On an installed booth the unit passes the site file ``/etc/polling-station/booth.toml``
(deploy/install.py) instead: its ``data_dir`` names where the provisioned ``config.json``
lives, and its ``mode``, ``[reader]``, ``[hub]`` and ``[ui]`` settings override that file's
``reader``, ``broker`` and ``ui_port`` (the identity, election and card trust stay as
provisioned). ``mode = "production"`` makes ``booth self-test`` apply the production checks.

Device identity: ``device/device.key``, ``device/device.pem``, ``device/ca.pem`` (station CA).
The audit log's own signing key (``audit_key``) is created on first start (docs/audit-log.md §6).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.provision import CONFIG_SCHEMA, TerminalFiles
from appliance.session import Timeouts

READER_KINDS = ("pcsc", "pn532-uart", "pn532-i2c", "pn532-spi")
"""Every reader kind the installer offers (deploy/install.py checks the installed booth accepts it).
The I2C and SPI buses and pins come from the pin map (hw/schematics/pinmap.json)."""


class ConfigError(Exception):
    """The configuration file is missing, malformed or names something that is not there."""


@dataclass(frozen=True)
class BoothConfig:
    files: TerminalFiles
    station_id: str
    terminal_id: str
    broker_host: str
    broker_port: int
    companion_port: str | None
    election_dir: Path
    reader_kind: str
    reader_name: str | None
    """pcsc: the reader name (None: the first); pn532-uart: the serial port."""
    ui_port: int
    card_mode: str
    trust_anchors: tuple[Path, ...]
    crls: tuple[Path, ...]
    token_key: Path
    outbox: Path
    audit_log: Path
    audit_key: Path
    timeouts: Timeouts
    mode: str = "training"
    """``production`` on a deployed booth (simulators and test credentials refused)."""
    site_file: Path | None = None
    """The booth.toml the configuration came from, if any (read by the production checks)."""
    reader_address: int | None = None
    """pn532-i2c: the I2C address (None: the pin map's)."""


def _field(data: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}{key}: expected {kind.__name__}, got {value!r}")
    return value


def _relative_path(root: Path, data: dict[str, Any], key: str, default: str) -> Path:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path relative to {root}, got {value!r}")
    return root / value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from error
    except ValueError as error:
        raise ConfigError(f"{path} is not JSON: {error}") from error
    if not isinstance(data, dict) or data.get("schema") != CONFIG_SCHEMA:
        raise ConfigError(f"{path} is not a terminal configuration ({CONFIG_SCHEMA})")
    return data


def _site_overrides(site: dict[str, Any], path: Path) -> tuple[Path, dict[str, Any]]:
    """The provisioned data directory a booth.toml names, and what it overrides there."""
    data_dir = site.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f"{path}: data_dir must name the terminal's data directory")
    overrides: dict[str, Any] = {}
    if "mode" in site:
        overrides["mode"] = site["mode"]
    reader = site.get("reader")
    if isinstance(reader, dict):
        overrides["reader"] = dict(reader)
    hub = site.get("hub")
    if isinstance(hub, dict) and "host" in hub and "port" in hub:
        overrides["broker"] = f"{hub['host']}:{hub['port']}"
    ui = site.get("ui")
    if isinstance(ui, dict) and "port" in ui:
        overrides["ui_port"] = ui["port"]
    return Path(data_dir), overrides


def load_config(path: Path) -> BoothConfig:
    """Load ``config.json`` from a provisioned data directory, or a site ``booth.toml``."""
    path = Path(path)
    site_file = None
    if path.suffix == ".toml":
        try:
            with path.open("rb") as handle:
                site = tomllib.load(handle)
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from error
        root, overrides = _site_overrides(site, path)
        data = _read_json(root / "config.json") | overrides
        site_file = path
    else:
        data = _read_json(path)
        root = path.parent
    mode = data.get("mode", "training")
    if mode not in ("production", "training"):
        raise ConfigError(f"mode: 'production' or 'training', got {mode!r}")
    host, _, port = _field(data, "broker", str).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"broker: expected host:port, got {data['broker']!r}")
    reader = data.get("reader", {"kind": "pcsc"})
    if not isinstance(reader, dict) or reader.get("kind") not in READER_KINDS:
        raise ConfigError(f"reader.kind: one of {READER_KINDS}")
    reader_name = reader.get("name") if reader["kind"] == "pcsc" else reader.get("port")
    if reader["kind"] == "pn532-uart" and not (isinstance(reader_name, str) and reader_name):
        raise ConfigError("reader.port: the PN532's serial port is required")
    if reader_name is not None and not isinstance(reader_name, str):
        raise ConfigError("reader.name / reader.port: expected a string")
    reader_address = reader.get("address")
    if reader_address is not None and (
        reader["kind"] != "pn532-i2c" or type(reader_address) is not int or not 0x08 <= reader_address <= 0x77
    ):
        raise ConfigError("reader.address: an I2C address (8..119) for pn532-i2c")
    card = _field(data, "card", dict)
    if "roll_salt" in card:
        # Check-ins are card-proven: the roll alone derives voter keys. A salt on the booth's disk
        # would map every voter key back to a card serial (issue 12), so it is refused, not ignored.
        raise ConfigError("card.roll_salt: a booth must not hold the roll salt (only the roll derives "
                          "voter keys); remove it from config.json and delete any copy on this terminal")  # fmt: skip
    timeouts = data.get("timeouts", {})
    ui_port = data.get("ui_port", 8080)
    if type(ui_port) is not int or not 0 < ui_port < 65536:
        raise ConfigError("ui_port: expected a port number")
    config = BoothConfig(
        files=TerminalFiles(root),
        station_id=_field(data, "station", str),
        terminal_id=_field(data, "terminal", str),
        broker_host=host,
        broker_port=int(port),
        companion_port=data.get("companion_port"),
        election_dir=root / _field(_field(data, "election", dict), "path", str, "election."),
        reader_kind=reader["kind"],
        reader_name=reader_name,
        ui_port=ui_port,
        card_mode=card.get("mode", "auth"),
        trust_anchors=tuple(root / p for p in _field(card, "trust_anchors", list, "card.")),
        crls=tuple(root / p for p in _field(card, "crls", list, "card.")),
        token_key=_relative_path(root, data, "token_key", "device/token.pem"),
        outbox=_relative_path(root, data, "outbox", "outbox/outbox.db"),
        audit_log=_relative_path(root, data, "audit_log", "audit/booth.log"),
        audit_key=_relative_path(root, data, "audit_key", "audit/audit.key"),
        timeouts=Timeouts(float(timeouts.get("voting", 120)), float(timeouts.get("result", 30))),
        mode=mode,
        site_file=site_file,
        reader_address=reader_address,
    )
    missing = [p for p in (*config.trust_anchors, *config.crls, config.token_key) if not p.is_file()]
    if missing:
        raise ConfigError(f"missing files: {', '.join(map(str, missing))}")
    return config
