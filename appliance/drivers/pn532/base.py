"""PN532 as an ApduTransport: adafruit-circuitpython-pn532 extended for ISO 14443-4 Type B.

The library gives bus access (UART/I2C/SPI subclasses) and a few high-level calls; it has no
Type B activation, no extended frames and no MI chaining, and it signals trouble with
RuntimeError or None. This class replaces its command layer (call_function, which the
library's own helpers also go through) with one that handles extended frames, NACK-based
retransmission of corrupt frames and bounded timeouts, and adds what a JPKI card needs on
top. The bus subclasses (uart.py, i2c.py, spi.py) only move bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from adafruit_pn532.adafruit_pn532 import PN532, BusyError

from appliance.card.errors import CardProtocolError, CardRemoved, ReaderUnavailable
from appliance.drivers.pn532.frames import (
    HOST_TO_PN532,
    MAX_EXTENDED_PAYLOAD,
    MAX_FRAME_BYTES,
    NACK,
    PN532_TO_HOST,
    Frame,
    FrameError,
    FrameKind,
    decode_frame,
    encode_frame,
)

log = logging.getLogger(__name__)

CMD_DIAGNOSE = 0x00
CMD_RF_CONFIGURATION = 0x32
CMD_IN_LIST_PASSIVE_TARGET = 0x4A
CMD_IN_DATA_EXCHANGE = 0x40
CMD_IN_RELEASE = 0x52
DIAGNOSE_CARD_PRESENCE = 0x06
RF_ITEM_MAX_RETRIES = 0x05
BAUD_TYPE_B_106 = 0x03
SUPPORTS_TYPE_B = 0x02
MI = 0x40
ATQB_LENGTH = 12
# Data bytes (command or response) that fit one InDataExchange extended frame.
MAX_EXCHANGE_CHUNK = MAX_EXTENDED_PAYLOAD - 3
# A short R-APDU is at most 258 bytes; anything far beyond is a broken reader or card.
MAX_RESPONSE_APDU = 4096
FRAME_GAP_S = 0.25

STATUS_TEXT = {
    0x01: "the card did not answer in time",
    0x02: "CRC error",
    0x03: "parity error",
    0x05: "framing error",
    0x07: "the PN532's buffer is too small",
    0x0A: "RF field not active",
    0x0B: "RF protocol error",
    0x10: "bad parameter",
    0x13: "bad frame",
    0x27: "command not acceptable now",
    0x29: "the card was released",
    0x2A: "Type B card ID mismatch",
    0x2B: "the Type B card disappeared",
}
CARD_GONE_STATUS = {0x29, 0x2A, 0x2B}


@dataclass(frozen=True)
class Pn532Settings:
    retries: int = 3  # NACK retransmissions of a corrupt frame; resends of a lost command
    command_timeout: float = 1.0  # seconds for ACK and answer of a reader command
    exchange_timeout: float = 6.0  # seconds for an APDU (a JPKI signature takes up to ~5 s)
    poll_interval: float = 0.1  # seconds between activation attempts while waiting for a card
    activation_retries: int = 2  # MxRtyPassiveActivation: never 0xFF (blocks forever)


class Pn532Reader(PN532):
    """One PN532 with at most one activated Type B card; an ApduTransport."""

    settings: Pn532Settings
    _target: int | None

    def _start(self, settings: Pn532Settings, library_init: Callable[[], None]) -> None:
        """Called by the bus subclass: run the library's constructor, then set up Type B."""
        self.settings = settings
        self._target = None
        self._received = b""  # bytes read past the last frame (an answer right after its ACK)
        try:
            library_init()
        except (RuntimeError, BusyError, OSError, ValueError, CardProtocolError) as exc:
            # ValueError: adafruit_bus_device found no device at the I2C address
            raise ReaderUnavailable(f"no PN532 answers on this bus: {exc}") from exc
        ic, version, revision, support = self.firmware_version
        log.info("PN532 IC %02X firmware %d.%d", ic, version, revision)
        if not support & SUPPORTS_TYPE_B:
            raise ReaderUnavailable("this PN532 module does not support ISO 14443 Type B")
        self._call(
            CMD_RF_CONFIGURATION,
            bytes((RF_ITEM_MAX_RETRIES, 0xFF, 0x01, settings.activation_retries)),
        )

    def _read_chunk(self) -> bytes:
        """Bytes available from the bus; I2C and SPI read a whole frame per transaction."""
        return bytes(self._read_data(MAX_FRAME_BYTES))

    # --- frame layer (replaces the library's call_function) ---

    def _receive_frame(self, timeout: float) -> Frame | None:
        """The next frame from the PN532, None if none came in time; FrameError if corrupt."""
        deadline = time.monotonic() + timeout
        buffer, self._received = self._received, b""
        while True:
            frame, consumed = decode_frame(buffer)
            buffer = buffer[consumed:]
            if frame is not None:
                self._received = buffer
                return frame
            if len(buffer) > MAX_FRAME_BYTES:
                raise FrameError("no frame in a frame's worth of bytes", len(buffer))
            remaining = deadline - time.monotonic()
            if buffer:  # a started frame must finish promptly (265 bytes take 23 ms at 115200)
                remaining = min(remaining, FRAME_GAP_S)
            if remaining <= 0 or not self._wait_ready(remaining):
                if buffer:
                    raise FrameError(f"incomplete frame ({len(buffer)} bytes)", len(buffer))
                return None
            try:
                buffer += self._read_chunk()
            except BusyError:
                continue

    def call_function(
        self,
        command: int,
        response_length: int = 0,
        params: bytes | bytearray = b"",
        timeout: float = 1,
    ) -> bytes | None:
        """The library's entry point, kept for its own helpers: None if the PN532 is silent."""
        try:
            return self._call(command, bytes(params), timeout)
        except ReaderUnavailable:
            return None

    def _call(self, command: int, params: bytes = b"", timeout: float | None = None) -> bytes:
        """Send a command, get its answer data; bounded retries, typed errors."""
        timeout = timeout or self.settings.command_timeout
        frame = encode_frame(bytes((HOST_TO_PN532, command)) + params)
        # Resending a command whose ACK was lost could run an APDU twice (a second VERIFY
        # would spend a second PIN try), so InDataExchange is sent once.
        attempts = 1 if command == CMD_IN_DATA_EXCHANGE else self.settings.retries + 1
        for _attempt in range(attempts):
            self._send_to_pn532(frame)
            try:
                ack = self._receive_frame(self.settings.command_timeout)
            except FrameError as exc:
                log.info("PN532 ACK unreadable: %s", exc.reason)
                continue
            if ack is None:
                continue
            if ack.kind is FrameKind.ERROR:
                raise CardProtocolError(f"the PN532 rejected command {command:02X}")
            if ack.kind is not FrameKind.ACK:
                raise CardProtocolError("the PN532 answered without acknowledging")
            return self._receive_answer(command, timeout)
        raise ReaderUnavailable(f"the PN532 did not acknowledge command {command:02X}")

    def _send_to_pn532(self, data: bytes) -> None:
        """Write, forgetting anything unread: a new command or NACK makes it stale."""
        self._received = b""
        self._write_data(data)

    def _receive_answer(self, command: int, timeout: float) -> bytes:
        for _attempt in range(self.settings.retries + 1):
            try:
                frame = self._receive_frame(timeout)
            except FrameError as exc:
                log.info("PN532 frame corrupt (%s); asking it to resend", exc.reason)
                self._send_to_pn532(NACK)
                continue
            if frame is None:
                raise CardProtocolError(f"the PN532 did not answer command {command:02X} in time")
            if frame.kind is FrameKind.ERROR:
                raise CardProtocolError(f"the PN532 reported an error for command {command:02X}")
            payload = frame.payload
            if frame.kind is not FrameKind.DATA or payload[:2] != bytes((PN532_TO_HOST, command + 1)):
                raise CardProtocolError(f"the PN532 answered command {command:02X} out of turn")
            return payload[2:]
        raise CardProtocolError("the PN532 kept sending corrupt frames")

    # --- Type B card handling ---

    def activate_type_b(self) -> bool:
        """One InListPassiveTarget for a 106 kbps Type B card; True if one is now active."""
        answer = self._call(CMD_IN_LIST_PASSIVE_TARGET, bytes((0x01, BAUD_TYPE_B_106, 0x00)))
        if not answer or answer[0] == 0:
            return False
        if len(answer) < 3 + ATQB_LENGTH or answer[2] != 0x50:
            raise CardProtocolError("the PN532 reported a Type B target without a valid ATQB")
        attrib_length = answer[2 + ATQB_LENGTH]
        if len(answer) != 3 + ATQB_LENGTH + attrib_length:
            raise CardProtocolError("the PN532's target description has the wrong length")
        self._target = answer[1]
        return True

    def wait_for_card(self, timeout: float) -> bool:
        """Poll for a card up to `timeout` seconds; True once one is activated."""
        deadline = time.monotonic() + timeout
        while not self.activate_type_b():
            if time.monotonic() + self.settings.poll_interval > deadline:
                return False
            time.sleep(self.settings.poll_interval)
        return True

    def transmit(self, apdu: bytes) -> bytes:
        if self._target is None:
            raise CardRemoved("no card is activated")
        if not apdu:
            raise ValueError("an APDU has at least a 4-byte header")
        chunks = [apdu[i : i + MAX_EXCHANGE_CHUNK] for i in range(0, len(apdu), MAX_EXCHANGE_CHUNK)]
        for chunk in chunks[:-1]:
            self._exchange(bytes((self._target | MI,)) + chunk)
        status, response = self._exchange(bytes((self._target,)) + chunks[-1])
        while status & MI:
            status, more = self._exchange(bytes((self._target,)))
            response += more
            if len(response) > MAX_RESPONSE_APDU:
                raise CardProtocolError(f"the card's response exceeds {MAX_RESPONSE_APDU} bytes")
        return response

    def _exchange(self, params: bytes) -> tuple[int, bytes]:
        answer = self._call(CMD_IN_DATA_EXCHANGE, params, self.settings.exchange_timeout)
        if not answer:
            raise CardProtocolError("the PN532 answered InDataExchange without a status")
        status, error = answer[0], answer[0] & 0x3F
        if error == 0:
            return status, answer[1:]
        reason = STATUS_TEXT.get(error, f"error {error:02X}")
        if error in CARD_GONE_STATUS or (error == 0x01 and not self.card_present()):
            self._target = None
            raise CardRemoved()
        raise CardProtocolError(f"the PN532 reported: {reason}")

    def card_present(self) -> bool:
        if self._target is None:
            return False
        answer = self._call(CMD_DIAGNOSE, bytes((DIAGNOSE_CARD_PRESENCE,)))
        present = answer[:1] == b"\x00"
        if not present:
            self._target = None
        return present

    def release(self) -> None:
        """Release the card (InRelease); a card already gone is not an error."""
        if self._target is None:
            return
        self._target = None
        try:
            self._call(CMD_IN_RELEASE, b"\x00")
        except (CardProtocolError, ReaderUnavailable) as exc:
            log.info("PN532 release failed: %s", exc)

    def close(self) -> None:
        self.release()
