"""PN532 contactless reader drivers: one base (Type B, APDUs), one subclass per bus.

Import the bus module you need (uart, i2c, spi): i2c and spi need Blinka's bus support.
"""

from appliance.drivers.pn532.base import Pn532Reader, Pn532Settings

__all__ = ["Pn532Reader", "Pn532Settings"]
