"""PN532 on a UART (HSU) through pyserial: a real serial port or the emulator's pty."""

from __future__ import annotations

import serial
from adafruit_pn532.uart import PN532_UART
from digitalio import DigitalInOut

from appliance.card.errors import ReaderUnavailable
from appliance.drivers.pinmap import load_pinmap
from appliance.drivers.pn532.base import Pn532Reader, Pn532Settings

# pyserial read timeout: short, because frames are read as bytes arrive.
_SERIAL_READ_TIMEOUT_S = 0.05


class Pn532Uart(Pn532Reader, PN532_UART):
    def __init__(
        self,
        port: str | None = None,
        baudrate: int | None = None,
        *,
        reset: DigitalInOut | None = None,
        settings: Pn532Settings | None = None,
    ) -> None:
        """Open `port` (default: the pin map's PN532 UART) and bring the PN532 up."""
        if port is None or baudrate is None:
            wiring = load_pinmap().pn532.uart
            port, baudrate = port or wiring.port, baudrate or wiring.baudrate
        try:
            self._serial = serial.Serial(port, baudrate, timeout=_SERIAL_READ_TIMEOUT_S)
        except serial.SerialException as exc:
            raise ReaderUnavailable(f"cannot open the PN532 serial port {port}: {exc}") from exc
        try:
            self._start(
                settings or Pn532Settings(),
                lambda: PN532_UART.__init__(self, self._serial, reset=reset),
            )
        except BaseException:
            self._serial.close()
            raise

    def _read_chunk(self) -> bytes:
        return bytes(self._read_data(max(1, self._serial.in_waiting)))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._serial.close()
