"""PN532 contactless reader drivers: one base (Type B, APDUs), one subclass per bus.

Import the bus module you need (uart, i2c, spi), or let :func:`open_pn532` pick it from the
booth's reader kind: i2c and spi need Blinka's bus support (and, for the pins the pin map
names, a Raspberry Pi).
"""

from __future__ import annotations

from appliance.card.errors import ReaderUnavailable
from appliance.drivers.pn532.base import Pn532Reader, Pn532Settings

__all__ = ["PN532_KINDS", "Pn532Reader", "Pn532Settings", "open_pn532"]

PN532_KINDS = ("pn532-uart", "pn532-i2c", "pn532-spi")
UART_BAUDRATE = 115200


def open_pn532(
    kind: str, port: str | None = None, address: int | None = None, settings: Pn532Settings | None = None
) -> Pn532Reader:
    """The PN532 of a booth's ``reader`` setting, on the bus and pins of the pin map.

    Any failure to reach the bus (no Blinka board support, no device at the address, a port
    that does not open) is a :class:`ReaderUnavailable` with the reason.
    """
    try:
        if kind == "pn532-uart":
            from appliance.drivers.pn532.uart import Pn532Uart

            return Pn532Uart(port, UART_BAUDRATE, settings=settings)
        if kind == "pn532-i2c":
            from appliance.drivers.pn532.i2c import Pn532I2c

            return Pn532I2c.from_pinmap(settings, address)
        if kind == "pn532-spi":
            from appliance.drivers.pn532.spi import Pn532Spi

            return Pn532Spi.from_pinmap(settings)
    except ReaderUnavailable:
        raise
    except (ImportError, NotImplementedError, RuntimeError, OSError, ValueError, AttributeError) as error:
        raise ReaderUnavailable(f"{kind}: cannot open the bus the pin map names: {error}") from error
    raise ValueError(f"not a PN532 reader kind: {kind!r} (one of {PN532_KINDS})")
