"""PN532 over I2C and SPI: the Adafruit bus classes and this product's driver, against a bus-level
stand-in (fake ``busio.I2C`` / ``busio.SPI`` + ``digitalio`` pins) that answers with the PN532
emulator's frames — the lowest layer, since no bus exists on a build machine."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from appliance.card import ReaderUnavailable
from appliance.card.testca import CardFile, TestCa
from appliance.config import load_config
from appliance.drivers.pn532 import open_pn532
from appliance.drivers.pn532.base import Pn532Settings
from appliance.drivers.pn532.i2c import Pn532I2c
from appliance.drivers.pn532.spi import Pn532Spi
from appliance.runner import open_reader
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_bus import EmulatedI2C, EmulatedPin, EmulatedSPI, reverse_bits
from appliance.simulators.pn532_emulator import FrameFault, Pn532Emulator

pytestmark = pytest.mark.timeout(60)
FAST = Pn532Settings(command_timeout=0.5, exchange_timeout=2.0, poll_interval=0.02)
SELECT_JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")
SELECT_AUTH_CERT = bytes.fromhex("00A4020C02000A")
SELECT_AUTH_PIN = bytes.fromhex("00A4020C020018")
SELECT_AUTH_KEY = bytes.fromhex("00A4020C020017")
# DigestInfo(SHA-256) prefix: the card pads, the host sends the full DigestInfo
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> CardFile:
    return TestCa.create(tmp_path_factory.mktemp("jpki")).issue_card(pin="1234", password="PASS2024")


def i2c_reader(emulator: Pn532Emulator) -> tuple[Pn532I2c, EmulatedI2C]:
    bus = EmulatedI2C(emulator)
    return Pn532I2c(bus, 0x24, reset=EmulatedPin("reset"), req=EmulatedPin("req"), settings=FAST), bus


def spi_reader(emulator: Pn532Emulator) -> tuple[Pn532Spi, EmulatedSPI]:
    cs = EmulatedPin("cs")
    bus = EmulatedSPI(emulator, cs)
    return Pn532Spi(bus, cs, reset=EmulatedPin("reset"), settings=FAST), bus


BUSES = {"i2c": i2c_reader, "spi": spi_reader}


def read_auth_certificate(reader) -> bytes:
    assert reader.transmit(SELECT_AUTH_CERT)[-2:] == b"\x90\x00"
    head = reader.transmit(bytes.fromhex("00B0000004"))
    total = int.from_bytes(head[2:4], "big") + 4
    data = b""
    while len(data) < total:
        chunk = min(0xF0, total - len(data))
        answer = reader.transmit(bytes((0x00, 0xB0)) + len(data).to_bytes(2, "big") + bytes((chunk,)))
        assert answer[-2:] == b"\x90\x00"
        data += answer[:-2]
    return data


@pytest.mark.parametrize("bus_kind", sorted(BUSES))
def test_a_jpki_card_authenticates_through_the_bus(card: CardFile, bus_kind: str):
    """Activation, a 1.5 kB certificate in chunks and a 256-byte signature (extended frames)."""
    reader, bus = BUSES[bus_kind](Pn532Emulator(VirtualJpkiCard(card)))
    assert reader.firmware_version[0] == 0x32
    assert reader.wait_for_card(1)
    assert reader.transmit(SELECT_JPKI) == b"\x90\x00"
    certificate = x509.load_der_x509_certificate(read_auth_certificate(reader))
    assert reader.transmit(SELECT_AUTH_PIN) == b"\x90\x00"
    assert reader.transmit(bytes.fromhex("0020008004") + b"1234") == b"\x90\x00"
    assert reader.transmit(SELECT_AUTH_KEY) == b"\x90\x00"
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"challenge")
    digest_info = SHA256_DIGEST_INFO + digest.finalize()
    answer = reader.transmit(bytes((0x80, 0x2A, 0x00, 0x80, len(digest_info))) + digest_info + b"\x00")
    assert answer[-2:] == b"\x90\x00" and len(answer) == 258
    certificate.public_key().verify(answer[:-2], b"challenge", padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    # the bytes really crossed the stand-in bus, frame by frame
    assert any(kind == "read" and len(data) > 255 for kind, data in bus.transactions)
    reader.release()


@pytest.mark.parametrize("bus_kind", sorted(BUSES))
def test_a_corrupt_frame_on_the_bus_is_asked_again(card: CardFile, bus_kind: str):
    emulator = Pn532Emulator(VirtualJpkiCard(card))
    reader, _bus = BUSES[bus_kind](emulator)
    assert reader.wait_for_card(1)
    emulator.inject(FrameFault.BAD_CHECKSUM)
    assert reader.transmit(SELECT_JPKI) == b"\x90\x00"


@pytest.mark.parametrize("bus_kind", sorted(BUSES))
def test_card_removal_and_no_card(card: CardFile, bus_kind: str):
    emulator = Pn532Emulator(None)
    reader, _bus = BUSES[bus_kind](emulator)
    assert not reader.wait_for_card(0.1)
    emulator.insert(VirtualJpkiCard(card))
    assert reader.wait_for_card(1) and reader.card_present()
    emulator.remove()
    assert not reader.card_present()


def test_nothing_at_the_i2c_address_or_a_silent_spi_chip_is_reader_unavailable():
    with pytest.raises(ReaderUnavailable, match="no PN532"):
        Pn532I2c(EmulatedI2C(Pn532Emulator(None)), 0x25, settings=FAST)
    emulator = Pn532Emulator(None)
    emulator.inject(FrameFault.SILENT, count=20)
    cs = EmulatedPin("cs")
    with pytest.raises(ReaderUnavailable):
        Pn532Spi(EmulatedSPI(emulator, cs), cs, settings=FAST)


def test_spi_bytes_are_bit_reversed_on_the_wire():
    assert reverse_bits(0x01) == 0x80 and reverse_bits(0x02) == 0x40 and reverse_bits(0xD4) == 0x2B


def _fake_board(monkeypatch: pytest.MonkeyPatch, module: str, bus_factory) -> dict[str, list]:
    """Stand in for Blinka's `board` and the busio/digitalio classes the driver module imported."""
    opened: dict[str, list] = {"pins": [], "buses": []}
    board = types.ModuleType("board")
    for name in ("SCL", "SDA", *(f"D{n}" for n in range(28))):
        setattr(board, name, name)
    monkeypatch.setitem(sys.modules, "board", board)

    def pin(name: str) -> EmulatedPin:
        made = EmulatedPin(name)
        opened["pins"].append(made)
        return made

    def bus(*args, **kwargs):
        made = bus_factory(opened, *args, **kwargs)
        opened["buses"].append((args, kwargs))
        return made

    monkeypatch.setattr(f"appliance.drivers.pn532.{module}.DigitalInOut", pin)
    monkeypatch.setattr(f"appliance.drivers.pn532.{module}.{module.upper()}", bus)
    return opened


def test_the_booth_opens_pn532_i2c_and_spi_on_the_pin_map_wiring(card: CardFile, monkeypatch, tmp_path: Path):
    emulator = Pn532Emulator(VirtualJpkiCard(card))
    opened = _fake_board(monkeypatch, "i2c", lambda _opened, *_a, **_k: EmulatedI2C(emulator))
    reader = open_pn532("pn532-i2c", settings=FAST)
    assert opened["buses"] == [(("SCL", "SDA"), {})]
    assert sorted(p.name for p in opened["pins"]) == ["D12", "D6"]  # reset and req from the pin map
    assert reader.wait_for_card(1) and reader.transmit(SELECT_JPKI) == b"\x90\x00"

    emulator = Pn532Emulator(VirtualJpkiCard(card))
    buses: list[EmulatedSPI] = []
    opened = _fake_board(monkeypatch, "spi", lambda _o, *_a, **_k: buses.append(EmulatedSPI(emulator)) or buses[-1])
    original_pin = sys.modules["appliance.drivers.pn532.spi"].DigitalInOut

    def pin(name: str) -> EmulatedPin:  # the pin map's chip select is wired to the chip's NSS
        made = original_pin(name)
        if name == "D8":
            buses[-1].chip_select = made
        return made

    monkeypatch.setattr("appliance.drivers.pn532.spi.DigitalInOut", pin)
    reader = open_pn532("pn532-spi", settings=FAST)
    assert [args for args, _ in opened["buses"]] == [("D11",)]
    assert opened["buses"][0][1] == {"MOSI": "D10", "MISO": "D9"}
    assert sorted(p.name for p in opened["pins"]) == ["D6", "D8"]  # reset and chip select
    assert buses[0].chip_select is not None and buses[0].chip_select.value is True  # released after use
    assert reader.wait_for_card(1) and reader.transmit(SELECT_JPKI) == b"\x90\x00"


def test_without_a_bus_the_booth_says_the_reader_is_unavailable(monkeypatch):
    def no_bus(*_args, **_kwargs):
        raise NotImplementedError("no I2C bus on this board")

    monkeypatch.setitem(sys.modules, "board", types.SimpleNamespace(SCL=1, SDA=2, D6=6, D12=12))
    monkeypatch.setattr("appliance.drivers.pn532.i2c.I2C", no_bus)
    with pytest.raises(ReaderUnavailable, match="pn532-i2c: cannot open the bus"):
        open_pn532("pn532-i2c")


@pytest.mark.parametrize(("kind", "extra"), [("pn532-i2c", {"address": 36}), ("pn532-spi", {})])
def test_booth_config_accepts_the_i2c_and_spi_readers(tmp_path: Path, kind: str, extra: dict, monkeypatch):
    import json

    (tmp_path / "card").mkdir()
    for name in ("card/ca.pem", "card/crl.pem", "device/token.pem"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    config = {
        "schema": "polling-station/terminal-config/1", "station": "s", "terminal": "T01",
        "broker": "127.0.0.1:8883", "companion_port": None, "election": {"path": "election", "sha256": "0"},
        "reader": {"kind": kind, **extra},
        "card": {"mode": "auth", "trust_anchors": ["card/ca.pem"], "crls": ["card/crl.pem"]},
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_config(tmp_path / "config.json")
    assert loaded.reader_kind == kind and loaded.reader_address == extra.get("address")
    seen = {}
    monkeypatch.setattr("appliance.drivers.pn532.open_pn532", lambda *a, **k: seen.setdefault("args", a))
    open_reader(loaded)
    assert seen["args"] == (kind, None, extra.get("address"))
