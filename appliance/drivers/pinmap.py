"""The wiring of a booth terminal, read from `hw/schematics/pinmap.json`.

That file is the one source of truth for pin numbers: the drivers take their default pins
from here, the companion firmware reads its copy of the same file on the board, and the SVG
diagrams in `hw/schematics/` are drawn from what this module loads. Raspberry Pi pins are BCM
GPIO numbers; power pins are physical header positions (they have no GPIO number).
Companion-board pins are the Pico's GP numbers.

The file ships inside the `hw.schematics` package (pyproject.toml package data) and is found with
`importlib.resources`, so an installed terminal reads the same file as a checkout does and
never looks for a repository that is not there.

    >>> load_pinmap().pn532.i2c.sda
    2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, is_dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

SCHEMA = "polling-station/pinmap/1"
_T = TypeVar("_T")


class PinMapError(ValueError):
    """The pin map file is missing, malformed or describes impossible wiring."""


def package_file(package: str, *parts: str) -> Path:
    """A file shipped inside `package`, as a real path (importlib.resources).

    A real path and not just a readable resource, because its users hand it on: mpremote
    copies the firmware files by name, aiohttp serves the kiosk directory. pip always installs
    a wheel unpacked, so this only fails for a product run from a zip archive, which is refused
    here with a sentence rather than later with a confusing error.
    """
    resource = files(package)
    for part in parts:
        resource = resource / part
    if not isinstance(resource, Path):
        raise PinMapError(f"{package}/{'/'.join(parts)} is inside an archive; install the product unpacked (pip)")
    return resource


def default_pinmap_path() -> Path:
    """Where the terminal's own pin map is: `pinmap.json` in the installed `hw.schematics` package.

    Looked up when needed rather than at import, so that importing the drivers never depends
    on the data being installed.
    """
    return package_file("hw.schematics", "pinmap.json")


# The Raspberry Pi 40-pin header (identical on models B+ to 5): physical position -> function.
PI_HEADER: dict[int, str] = {
    1: "3V3", 2: "5V", 3: "GPIO2", 4: "5V", 5: "GPIO3", 6: "GND", 7: "GPIO4", 8: "GPIO14",
    9: "GND", 10: "GPIO15", 11: "GPIO17", 12: "GPIO18", 13: "GPIO27", 14: "GND", 15: "GPIO22",
    16: "GPIO23", 17: "3V3", 18: "GPIO24", 19: "GPIO10", 20: "GND", 21: "GPIO9", 22: "GPIO25",
    23: "GPIO11", 24: "GPIO8", 25: "GND", 26: "GPIO7", 27: "GPIO0", 28: "GPIO1", 29: "GPIO5",
    30: "GND", 31: "GPIO6", 32: "GPIO12", 33: "GPIO13", 34: "GND", 35: "GPIO19", 36: "GPIO16",
    37: "GPIO26", 38: "GPIO20", 39: "GND", 40: "GPIO21",
}  # fmt: skip
PICO_GPIOS = range(29)  # GP0..GP28 on the RP2040


def header_pin(gpio: int) -> int:
    """Physical header position of a BCM GPIO number."""
    for position, function in PI_HEADER.items():
        if function == f"GPIO{gpio}":
            return position
    raise PinMapError(f"GPIO{gpio} is not on the Raspberry Pi 40-pin header")


@dataclass(frozen=True)
class PowerPins:
    """Physical header positions feeding a peripheral."""

    vcc_pin: int
    gnd_pin: int


@dataclass(frozen=True)
class Pn532Uart:
    port: str
    baudrate: int
    tx: int
    rx: int
    reset: int


@dataclass(frozen=True)
class Pn532I2c:
    bus: int
    address: int
    sda: int
    scl: int
    reset: int
    req: int


@dataclass(frozen=True)
class Pn532Spi:
    bus: int
    device: int
    sclk: int
    mosi: int
    miso: int
    cs: int
    reset: int


@dataclass(frozen=True)
class Pn532Wiring:
    """The three ways a PN532 breakout can be wired; a terminal uses exactly one of them."""

    uart: Pn532Uart
    i2c: Pn532I2c
    spi: Pn532Spi
    power: PowerPins

    def variants(self) -> dict[str, Pn532Uart | Pn532I2c | Pn532Spi]:
        return {"uart": self.uart, "i2c": self.i2c, "spi": self.spi}


@dataclass(frozen=True)
class Keypad:
    up: int
    down: int
    select: int
    back: int
    help: int

    def by_key(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CompanionWiring:
    """The companion board hangs on USB; its pins are Pico GP numbers, not Pi header pins."""

    usb_port: str
    baudrate: int
    board_model: str
    host_connection: str
    keypad: Keypad
    tamper: int
    status_led: int


@dataclass(frozen=True)
class DisplayWiring:
    model: str
    connector: str
    power: PowerPins


@dataclass(frozen=True)
class _PinMapFile:
    """What the JSON file holds; PinMap adds where it was read from."""

    board: str
    pn532: Pn532Wiring
    companion: CompanionWiring
    display: DisplayWiring


@dataclass(frozen=True)
class PinMap:
    board: str
    pn532: Pn532Wiring
    companion: CompanionWiring
    display: DisplayWiring
    source: Path


GPIO_SIGNALS = {
    "uart": ("tx", "rx", "reset"),
    "i2c": ("sda", "scl", "reset", "req"),
    "spi": ("sclk", "mosi", "miso", "cs", "reset"),
}


def gpio_signals(variant: Pn532Uart | Pn532I2c | Pn532Spi) -> dict[str, int]:
    """The GPIO-carrying signals of one PN532 variant, by signal name."""
    kind = {Pn532Uart: "uart", Pn532I2c: "i2c", Pn532Spi: "spi"}[type(variant)]
    return {name: getattr(variant, name) for name in GPIO_SIGNALS[kind]}


def _build(cls: type[_T], raw: Any, where: str) -> _T:
    """Construct a dataclass (and the dataclasses inside it) from a JSON object.

    Exactly the dataclass's fields must be present, integers non-negative, strings non-empty.
    """
    if not isinstance(raw, dict):
        raise PinMapError(f"{where}: expected an object, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    missing = sorted(set(hints) - set(raw))
    unknown = sorted(set(raw) - set(hints))
    if missing or unknown:
        raise PinMapError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    values: dict[str, Any] = {}
    for name, wanted in hints.items():
        value = raw[name]
        if is_dataclass(wanted):
            value = _build(wanted, value, f"{where}.{name}")
        elif wanted is int and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise PinMapError(f"{where}.{name}: expected a non-negative integer, got {value!r}")
        elif wanted is str and (not isinstance(value, str) or not value):
            raise PinMapError(f"{where}.{name}: expected a non-empty string, got {value!r}")
        values[name] = value
    return cls(**values)


def _check_power(power: PowerPins, where: str) -> None:
    if PI_HEADER.get(power.vcc_pin) not in ("3V3", "5V"):
        raise PinMapError(f"{where}.vcc_pin: header pin {power.vcc_pin} is not a supply pin")
    if PI_HEADER.get(power.gnd_pin) != "GND":
        raise PinMapError(f"{where}.gnd_pin: header pin {power.gnd_pin} is not ground")


def _validate(pinmap: PinMap) -> None:
    """Reject wiring that cannot be built: pins off the header, one pin used twice."""
    _check_power(pinmap.pn532.power, "pn532.power")
    _check_power(pinmap.display.power, "display.power")
    power_pins = {pinmap.pn532.power.vcc_pin, pinmap.pn532.power.gnd_pin}
    power_pins |= {pinmap.display.power.vcc_pin, pinmap.display.power.gnd_pin}
    for kind, variant in pinmap.pn532.variants().items():
        used: dict[int, str] = {}
        for signal, gpio in gpio_signals(variant).items():
            position = header_pin(gpio)
            if gpio in used:
                raise PinMapError(f"pn532.{kind}: GPIO{gpio} used for both {used[gpio]} and {signal}")
            if position in power_pins:
                raise PinMapError(f"pn532.{kind}.{signal}: header pin {position} is a power pin")
            used[gpio] = signal
    companion = pinmap.companion
    pico_pins = [*companion.keypad.by_key().values(), companion.tamper, companion.status_led]
    if len(set(pico_pins)) != len(pico_pins):
        raise PinMapError(f"companion: a Pico pin is used twice in {pico_pins}")
    if any(pin not in PICO_GPIOS for pin in pico_pins):
        raise PinMapError(f"companion: pins must be GP0..GP28, got {pico_pins}")


def parse_pinmap(raw: Any, source: Path) -> PinMap:
    """Build and validate a PinMap from already-decoded JSON."""
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise PinMapError(f"{source}: not a pin map (expected schema {SCHEMA!r})")
    body = {key: value for key, value in raw.items() if key != "schema"}
    pinmap = _build(_PinMapFile, body, str(source))
    wiring = PinMap(pinmap.board, pinmap.pn532, pinmap.companion, pinmap.display, source)
    _validate(wiring)
    return wiring


def load_pinmap(path: Path | None = None) -> PinMap:
    """Load the terminal's pin map (by default the one shipped in the `hw.schematics` package)."""
    source = Path(path) if path is not None else default_pinmap_path()
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise PinMapError(f"cannot read pin map {source}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise PinMapError(f"{source}: not valid JSON ({error})") from error
    return parse_pinmap(raw, source)
