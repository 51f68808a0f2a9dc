"""PN532 on SPI (Blinka's busio.SPI on the Pi)."""

from __future__ import annotations

from adafruit_pn532.spi import PN532_SPI
from busio import SPI
from digitalio import DigitalInOut

from appliance.drivers.pinmap import load_pinmap
from appliance.drivers.pn532.base import Pn532Reader, Pn532Settings


class Pn532Spi(Pn532Reader, PN532_SPI):
    def __init__(
        self,
        spi: SPI,
        cs_pin: DigitalInOut,
        *,
        reset: DigitalInOut | None = None,
        irq: DigitalInOut | None = None,
        settings: Pn532Settings | None = None,
    ) -> None:
        self._start(
            settings or Pn532Settings(),
            lambda: PN532_SPI.__init__(self, spi, cs_pin, irq=irq, reset=reset),
        )

    @classmethod
    def from_pinmap(cls, settings: Pn532Settings | None = None) -> Pn532Spi:
        """On the Pi: open the bus and pins the pin map names (needs Blinka's `board`)."""
        import board  # only importable on a supported board

        wiring = load_pinmap().pn532.spi
        pin = {gpio: getattr(board, f"D{gpio}") for gpio in (wiring.sclk, wiring.mosi, wiring.miso)}
        return cls(
            SPI(pin[wiring.sclk], MOSI=pin[wiring.mosi], MISO=pin[wiring.miso]),
            DigitalInOut(getattr(board, f"D{wiring.cs}")),
            reset=DigitalInOut(getattr(board, f"D{wiring.reset}")),
            settings=settings,
        )
