"""PN532 on I2C (Blinka's busio.I2C on the Pi)."""

from __future__ import annotations

from adafruit_pn532.i2c import PN532_I2C
from busio import I2C
from digitalio import DigitalInOut

from appliance.drivers.pinmap import load_pinmap
from appliance.drivers.pn532.base import Pn532Reader, Pn532Settings


class Pn532I2c(Pn532Reader, PN532_I2C):
    def __init__(
        self,
        i2c: I2C,
        address: int | None = None,
        *,
        reset: DigitalInOut | None = None,
        req: DigitalInOut | None = None,
        irq: DigitalInOut | None = None,
        settings: Pn532Settings | None = None,
    ) -> None:
        """`address` defaults to the pin map's (0x24); the pins are the caller's DigitalInOut."""
        address = address if address is not None else load_pinmap().pn532.i2c.address
        self._start(
            settings or Pn532Settings(),
            lambda: PN532_I2C.__init__(self, i2c, address, irq=irq, reset=reset, req=req),
        )

    @classmethod
    def from_pinmap(cls, settings: Pn532Settings | None = None, address: int | None = None) -> Pn532I2c:
        """On the Pi: open the bus and pins the pin map names (needs Blinka's `board`)."""
        import board  # only importable on a supported board

        wiring = load_pinmap().pn532.i2c
        return cls(
            I2C(board.SCL, board.SDA),
            address if address is not None else wiring.address,
            reset=DigitalInOut(getattr(board, f"D{wiring.reset}")),
            req=DigitalInOut(getattr(board, f"D{wiring.req}")),
            settings=settings,
        )
