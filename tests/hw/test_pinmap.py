"""The pin map the drivers use is the one the diagrams and the firmware are made from."""

import importlib.util
import json
from pathlib import Path

import pytest

from appliance.drivers.companion import firmware_dir, firmware_sources
from appliance.drivers.pinmap import (
    PinMapError,
    default_pinmap_path,
    gpio_signals,
    header_pin,
    load_pinmap,
    parse_pinmap,
)

SCHEMATICS = Path(__file__).resolve().parents[2] / "hw" / "schematics"


def generator():
    spec = importlib.util.spec_from_file_location("generate", SCHEMATICS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drivers_firmware_and_diagrams_share_one_pin_map_file():
    assert default_pinmap_path() == SCHEMATICS / "pinmap.json"
    assert load_pinmap().source == default_pinmap_path()
    assert firmware_sources()["pinmap.json"] == default_pinmap_path()


def test_the_firmware_is_found_in_its_package_not_beside_the_drivers():
    """importlib.resources finds it: in a checkout that is companion/firmware; installed, site-packages."""
    assert firmware_dir() == SCHEMATICS.parents[1] / "companion" / "firmware"
    assert sorted(firmware_sources()) == ["board.py", "link.py", "main.py", "pinmap.json"]
    assert all(path.is_file() for path in firmware_sources().values())


def test_committed_diagrams_are_drawn_from_the_current_pin_map():
    expected = generator().diagrams(load_pinmap())
    for name, text in expected.items():
        assert (SCHEMATICS / name).read_text(encoding="utf-8") == text, f"{name} is stale"


def test_every_driver_pin_appears_in_its_diagram():
    pinmap = load_pinmap()
    drawn = generator().diagrams(pinmap)
    for kind, variant in pinmap.pn532.variants().items():
        for signal, gpio in gpio_signals(variant).items():
            assert f"PN532 {signal.upper()} (pin {header_pin(gpio)}, GPIO{gpio})" in drawn[f"pn532-{kind}.svg"]
    for pin in pinmap.companion.keypad.by_key().values():
        assert f">GP{pin}<" in drawn["companion.svg"]


def test_the_documented_pins_of_the_drivers():
    pinmap = load_pinmap()
    assert (pinmap.pn532.i2c.sda, pinmap.pn532.i2c.scl) == (2, 3)  # the Pi's I2C1
    assert (pinmap.pn532.uart.tx, pinmap.pn532.uart.rx) == (14, 15)  # the Pi's UART0
    assert header_pin(pinmap.pn532.spi.cs) == 24  # CE0


def mutated(change):
    raw = json.loads(default_pinmap_path().read_text())
    change(raw)
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["pn532"]["i2c"].update(scl=2), "GPIO2 used for both sda and scl"),
        (lambda raw: raw["pn532"]["spi"].update(cs=30), "not on the Raspberry Pi 40-pin header"),
        (lambda raw: raw["pn532"]["power"].update(gnd_pin=1), "not ground"),
        (lambda raw: raw["companion"].update(tamper=2), "used twice"),
        (lambda raw: raw["pn532"]["uart"].pop("rx"), "missing fields \\['rx'\\]"),
        (lambda raw: raw["pn532"]["uart"].update(tx="14"), "non-negative integer"),
        (lambda raw: raw.update(schema="other"), "not a pin map"),
    ],
)
def test_impossible_wiring_is_refused_with_a_reason(change, message):
    with pytest.raises(PinMapError, match=message):
        parse_pinmap(mutated(change), Path("pinmap.json"))


def test_an_unreadable_file_gets_a_clear_error(tmp_path):
    with pytest.raises(PinMapError, match="cannot read pin map"):
        load_pinmap(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PinMapError, match="not valid JSON"):
        load_pinmap(tmp_path / "bad.json")
