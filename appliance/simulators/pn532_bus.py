"""Bus-level stand-ins for a PN532 on I2C and SPI: the lowest layer, since no bus exists here.

`EmulatedI2C` and `EmulatedSPI` have the methods of Blinka's ``busio.I2C`` and ``busio.SPI``
that ``adafruit_bus_device`` (and so ``adafruit_pn532.i2c`` / ``.spi``) call, and
`EmulatedPin` those of ``digitalio.DigitalInOut``. Behind them sits the same sans-I/O
`Pn532Emulator` that answers on the UART pty, so the Adafruit classes and this product's driver
run unchanged down to the bytes on the bus:

* I2C (PN532 user manual §6.2.4): every read transaction starts with a status byte (``01``
  ready, ``00`` busy) followed by the pending frame; a read of more than the status byte
  consumes that frame (ACK first, then the answer). Only address 0x24 answers (others NACK
  with ``OSError``, as the bus does).
* SPI (§6.2.5): bytes travel LSB first, so the host bit-reverses them (the Adafruit class does
  it in software); the first byte says what follows: ``01`` data write, ``02`` status read,
  ``03`` data read.

Every transaction is recorded in ``transactions`` for tests.
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field

from appliance.drivers.pn532.frames import FrameError, decode_frame
from appliance.simulators.pn532_emulator import Pn532Emulator

I2C_ADDRESS = 0x24
SPI_DATA_WRITE = 0x01
SPI_STATUS_READ = 0x02
SPI_DATA_READ = 0x03
READY = 0x01


def reverse_bits(value: int) -> int:
    return int(f"{value:08b}"[::-1], 2)


def _split_frames(data: bytes) -> list[bytes]:
    """The emulator's answer (ACK + response frame) as the separate frames the chip presents."""
    frames, rest = [], data
    while rest:
        try:
            frame, consumed = decode_frame(rest)
        except FrameError as error:  # a fault the emulator injected: present the spoiled bytes
            frames.append(rest[: error.consumed] if error.consumed else rest)
            rest = rest[error.consumed or len(rest) :]
            continue
        if frame is None:
            frames.append(rest)  # truncated on purpose: the host sees an incomplete frame
            break
        frames.append(rest[:consumed])
        rest = rest[consumed:]
    return frames


@dataclass
class _Chip:
    """The PN532's host interface: frames in, frames waiting to be read out."""

    emulator: Pn532Emulator
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: list[bytes] = field(default_factory=list)

    def receive(self, data: bytes) -> None:
        with self.lock:
            self.pending += _split_frames(self.emulator.feed(bytes(data)))

    def ready(self) -> bool:
        with self.lock:
            return bool(self.pending)

    def take(self) -> bytes | None:
        with self.lock:
            return self.pending.pop(0) if self.pending else None


class _Lockable:
    def __init__(self) -> None:
        self._locked = False
        self.transactions: list[tuple[str, bytes]] = []

    def try_lock(self) -> bool:
        if self._locked:
            return False
        self._locked = True
        return True

    def unlock(self) -> None:
        self._locked = False

    def deinit(self) -> None:
        self._locked = False


class EmulatedI2C(_Lockable):
    """``busio.I2C`` with one PN532 (at 0x24) on the bus."""

    def __init__(self, emulator: Pn532Emulator, address: int = I2C_ADDRESS) -> None:
        super().__init__()
        self.chip = _Chip(emulator)
        self.address = address

    @property
    def emulator(self) -> Pn532Emulator:
        return self.chip.emulator

    def scan(self) -> list[int]:
        return [self.address]

    def _check(self, address: int) -> None:
        if address != self.address:
            raise OSError(errno.EREMOTEIO, f"no I2C device answers at 0x{address:02x}")

    def writeto(self, address: int, buffer: bytes, *, start: int = 0, end: int | None = None) -> None:
        self._check(address)
        data = bytes(buffer[start:end])
        self.transactions.append(("write", data))
        if data:
            self.chip.receive(data)

    def readfrom_into(self, address: int, buffer: bytearray, *, start: int = 0, end: int | None = None) -> None:
        self._check(address)
        end = len(buffer) if end is None else end
        count = end - start
        if not self.chip.ready():
            buffer[start:end] = bytes(count)  # status 00: busy
            return
        if count == 1:
            buffer[start] = READY
            return
        frame = self.chip.take() or b""
        out = (bytes((READY,)) + frame + bytes(count))[:count]
        buffer[start:end] = out
        self.transactions.append(("read", out[1 : 1 + len(frame)]))

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: bytes,
        buffer_in: bytearray,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        self.writeto(address, buffer_out, start=out_start, end=out_end)
        self.readfrom_into(address, buffer_in, start=in_start, end=in_end)


class EmulatedSPI(_Lockable):
    """``busio.SPI`` with a PN532 behind a chip-select pin."""

    def __init__(self, emulator: Pn532Emulator, chip_select: EmulatedPin | None = None) -> None:
        """``chip_select``: the NSS pin (None: attach it later as ``chip_select``, or always selected)."""
        super().__init__()
        self.chip = _Chip(emulator)
        self.chip_select = chip_select
        self.configured: dict[str, int] = {}

    @property
    def emulator(self) -> Pn532Emulator:
        return self.chip.emulator

    def configure(self, *, baudrate: int = 100000, polarity: int = 0, phase: int = 0, bits: int = 8) -> None:
        self.configured = {"baudrate": baudrate, "polarity": polarity, "phase": phase, "bits": bits}

    def _selected(self) -> bool:
        return self.chip_select is None or self.chip_select.value is False  # PN532's NSS is active low

    def write(self, buffer: bytes, *, start: int = 0, end: int | None = None) -> None:
        data = bytes(reverse_bits(b) for b in buffer[start:end])
        if not self._selected() or not data:
            return
        self.transactions.append(("write", data))
        if data[0] == SPI_DATA_WRITE and len(data) > 1:
            self.chip.receive(data[1:])
        # a lone byte (the wake-up write) or anything else: nothing to do

    def readinto(self, buffer: bytearray, *, start: int = 0, end: int | None = None, write_value: int = 0) -> None:
        out = bytes([write_value]) * ((len(buffer) if end is None else end) - start)
        self.write_readinto(out, buffer, in_start=start, in_end=end)

    def write_readinto(
        self,
        buffer_out: bytes,
        buffer_in: bytearray,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        sent = bytes(reverse_bits(b) for b in bytes(buffer_out[out_start:out_end]))  # copy first: may alias
        in_end = len(buffer_in) if in_end is None else in_end
        count = in_end - in_start
        answer = bytes(count)
        if self._selected() and sent:
            if sent[0] == SPI_STATUS_READ:
                answer = (bytes((0, READY if self.chip.ready() else 0)) + bytes(count))[:count]
            elif sent[0] == SPI_DATA_READ:
                frame = self.chip.take() or b""
                answer = (b"\x00" + frame + bytes(count))[:count]
                self.transactions.append(("read", answer[1 : 1 + len(frame)]))
            elif sent[0] == SPI_DATA_WRITE and len(sent) > 1:
                self.transactions.append(("write", sent))
                self.chip.receive(sent[1:])
        buffer_in[in_start:in_end] = bytes(reverse_bits(b) for b in answer)


class EmulatedPin:
    """``digitalio.DigitalInOut`` for a pin wired to the emulated PN532 (reset, req, cs)."""

    def __init__(self, name: str = "pin") -> None:
        self.name = name
        self.direction: object = None
        self.value: bool | None = None
        self.changes: list[bool] = []

    def switch_to_output(self, value: bool = False, drive_mode: object = None) -> None:
        self.direction = "output"
        self.value = value

    def switch_to_input(self, pull: object = None) -> None:
        self.direction = "input"

    def deinit(self) -> None:
        self.direction = None

    def __setattr__(self, name: str, value: object) -> None:
        if name == "value" and value is not None and hasattr(self, "changes"):
            self.changes.append(bool(value))
        object.__setattr__(self, name, value)
