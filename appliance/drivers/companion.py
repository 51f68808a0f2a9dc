"""Driver for the companion board (keypad, status LED, tamper switch) on USB serial.

Two layers, like h11:

* `CompanionProtocol` — sans-I/O. Bytes and the current time go in; events for the booth
  session and bytes to write come out. It frames and checks every line (version, sequence
  number, CRC-32), notices lost and corrupted frames, sends heartbeats, resends an
  unacknowledged LED command, and declares the link lost when the board falls silent.
* `CompanionBoard` — a thread around a pyserial port that drives the protocol and hands the
  events to the session through a queue and/or a callback.

The wire format is specified in docs/companion-protocol.md; the firmware is
companion/firmware/.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import serial

from appliance.drivers.pinmap import default_pinmap_path, package_file

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
SEQ_MODULO = 65536
MAX_FRAME = 200
_E = TypeVar("_E")
FIRMWARE_FILES = ("board.py", "link.py", "main.py")


class CompanionError(Exception):
    """The companion board cannot be used (port missing, wrong firmware, no answer)."""


class Key(StrEnum):
    UP = "up"
    DOWN = "down"
    SELECT = "select"
    BACK = "back"
    HELP = "help"


class LedState(StrEnum):
    """Status LED patterns (the firmware draws them; see docs/companion-protocol.md)."""

    OFF = "off"
    READY = "ready"
    BUSY = "busy"
    ATTENTION = "attention"
    ERROR = "error"


# --- events for the booth session ---------------------------------------------------------


@dataclass(frozen=True)
class KeyPressed:
    key: Key


@dataclass(frozen=True)
class TamperChanged:
    """The enclosure was opened (or closed again). Open means: no new session, alert."""

    opened: bool


@dataclass(frozen=True)
class LinkRestored:
    """The board answers (first contact, after silence, or after it restarted)."""

    firmware_version: str
    firmware_hash: str


@dataclass(frozen=True)
class LinkLost:
    reason: str


@dataclass(frozen=True)
class FrameRejected:
    """A frame from the board was damaged (diagnostic; the link may still be fine)."""

    reason: str


@dataclass(frozen=True)
class FramesLost:
    """Sequence numbers jumped: `count` frames from the board never arrived."""

    count: int


@dataclass(frozen=True)
class CommandRejected:
    """The board refused a command we sent, or reported our frame as damaged."""

    reason: str


CompanionEvent = (KeyPressed | TamperChanged | LinkRestored | LinkLost | FrameRejected | FramesLost) | CommandRejected


# --- firmware identity --------------------------------------------------------------------


def firmware_dir() -> Path:
    """The firmware's source folder, the installed `companion.firmware` package.

    Found with importlib.resources, so that flash.sh, `booth self-test` and the virtual board
    use the firmware that shipped with this product and never a checkout's copy.
    """
    return package_file("companion.firmware")


def firmware_sources() -> dict[str, Path]:
    """The files that make up the companion firmware, by their name on the board.

    The pin map is one of them: the board reads its wiring from the same file as the drivers.
    """
    folder = firmware_dir()
    return {**{name: folder / name for name in FIRMWARE_FILES}, "pinmap.json": default_pinmap_path()}


def listing_hash(contents: Mapping[str, bytes]) -> str:
    """sha256 of the `sha256sum` listing of files in name order — reproducible on any host
    with `sha256sum FILES... | sha256sum`. The firmware announces its own identity this way
    (companion/firmware/main.py), and provisioning records the election package so."""
    listing = "".join(f"{hashlib.sha256(contents[name]).hexdigest()}  {name}\n" for name in sorted(contents))
    return hashlib.sha256(listing.encode()).hexdigest()


def local_firmware_hash() -> str:
    return listing_hash({name: path.read_bytes() for name, path in firmware_sources().items()})


# --- framing ------------------------------------------------------------------------------


class FrameError(ValueError):
    """A frame that cannot be accepted; str() is the reason."""


def encode_frame(seq: int, kind: str, *args: str) -> bytes:
    body = " ".join([str(PROTOCOL_VERSION), str(seq), kind, *args]).encode("ascii")
    return b"$" + body + b"*" + f"{zlib.crc32(body):08x}".encode() + b"\n"


@dataclass(frozen=True)
class Frame:
    seq: int
    kind: str
    args: tuple[str, ...]


def decode_frame(line: bytes) -> Frame:
    """Decode the bytes between '$' and '\\n'."""
    body, star, crc = line.rpartition(b"*")
    if not star or len(crc) != 8:
        raise FrameError("malformed")
    try:
        expected = int(crc, 16)
    except ValueError as error:
        raise FrameError("malformed") from error
    if zlib.crc32(body) != expected:
        raise FrameError("bad-checksum")
    fields = body.decode("ascii").split(" ")
    if len(fields) < 3 or not fields[1].isdigit():
        raise FrameError("malformed")
    if fields[0] != str(PROTOCOL_VERSION):
        raise FrameError(f"bad-version {fields[0][:8]}")
    seq = int(fields[1])
    if seq >= SEQ_MODULO:
        raise FrameError("malformed")
    return Frame(seq, fields[2], tuple(fields[3:]))


@dataclass
class FrameSplitter:
    """Cuts the serial byte stream into frame bodies; noise between frames is skipped."""

    buffer: bytearray | None = None

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        out: list[bytes | FrameError] = []
        for byte in data:
            if byte == 0x24:  # '$'
                if self.buffer:
                    out.append(FrameError("truncated"))
                self.buffer = bytearray()
            elif self.buffer is None:
                continue
            elif byte == 0x0A:
                out.append(bytes(self.buffer))
                self.buffer = None
            elif byte < 0x20 or byte > 0x7E or len(self.buffer) >= MAX_FRAME:
                out.append(FrameError("malformed"))
                self.buffer = None
            else:
                self.buffer.append(byte)
        return out


# --- the sans-I/O protocol ----------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    heartbeat_interval: float = 0.5  # host heartbeat; the board sends one as often
    link_timeout: float = 2.0  # no valid frame for this long: link lost
    resend_after: float = 1.0  # resend an unacknowledged LED command


@dataclass
class CompanionProtocol:
    """State of one link to one board. Feed it bytes and ticks; write what it returns."""

    timing: Timing = field(default_factory=Timing)
    link_up: bool = False
    tamper_open: bool | None = None
    firmware: LinkRestored | None = None
    _splitter: FrameSplitter = field(default_factory=FrameSplitter)
    _next_seq: int = 0  # ours
    _expected_seq: int | None = None  # theirs
    _last_heard: float | None = None
    _last_sent: float | None = None
    _led: LedState | None = None
    _led_seq: int | None = None  # sequence number of the unacknowledged LED command
    _led_sent_at: float = 0.0

    def _frame(self, now: float, kind: str, *args: str) -> bytes:
        data = encode_frame(self._next_seq, kind, *args)
        self._next_seq = (self._next_seq + 1) % SEQ_MODULO
        self._last_sent = now
        return data

    def connect(self, now: float) -> bytes:
        """First bytes to write after opening the port: ask the board to introduce itself."""
        self._last_heard = now  # the timeout runs from here
        return self._frame(now, "HELLO")

    def set_led(self, state: LedState, now: float) -> bytes:
        self._led = LedState(state)
        self._led_seq = self._next_seq
        self._led_sent_at = now
        return self._frame(now, "LED", self._led.value)

    def port_lost(self, reason: str) -> list[CompanionEvent]:
        """The serial port itself went away (USB unplugged)."""
        return self._lose(reason)

    def _lose(self, reason: str) -> list[CompanionEvent]:
        if not self.link_up:
            return []
        self.link_up = False
        return [LinkLost(reason)]

    def tick(self, now: float) -> tuple[list[CompanionEvent], bytes]:
        """Call often (every 50-100 ms): heartbeats, resends and the silence timeout."""
        events: list[CompanionEvent] = []
        out = b""
        if self._last_heard is not None and now - self._last_heard > self.timing.link_timeout:
            events += self._lose(f"no frame from the board for {now - self._last_heard:.1f} s")
        unacknowledged = self._led_seq is not None and self.link_up
        if unacknowledged and now - self._led_sent_at > self.timing.resend_after:
            out += self.set_led(self._led, now)  # type: ignore[arg-type]
        if self._last_sent is None or now - self._last_sent >= self.timing.heartbeat_interval:
            out += self._frame(now, "HB")
        return events, out

    def receive(self, data: bytes, now: float) -> tuple[list[CompanionEvent], bytes]:
        """Bytes read from the port; returns events and any bytes to write back."""
        events: list[CompanionEvent] = []
        out = b""
        for item in self._splitter.feed(data):
            try:
                if isinstance(item, FrameError):
                    raise item
                frame = decode_frame(item)
            except (FrameError, UnicodeDecodeError) as error:
                log.warning("companion: rejected frame (%s)", error)
                events.append(FrameRejected(str(error) or "malformed"))
                continue
            frame_events, frame_out = self._on_frame(frame, now)
            events += frame_events
            out += frame_out
        return events, out

    def _sequence(self, frame: Frame) -> list[CompanionEvent]:
        """Check the board's sequence number; HELLO with 0 means the board restarted."""
        expected = self._expected_seq
        self._expected_seq = (frame.seq + 1) % SEQ_MODULO
        if expected is None or frame.seq == expected or (frame.kind == "HELLO" and frame.seq == 0):
            return []
        gap = (frame.seq - expected) % SEQ_MODULO
        if gap < SEQ_MODULO // 2:
            log.warning("companion: %d frame(s) from the board lost", gap)
            return [FramesLost(gap)]
        self._expected_seq = expected  # an old or repeated frame: keep waiting for ours
        raise FrameError(f"out-of-order seq {frame.seq}, expected {expected}")

    def _on_frame(self, frame: Frame, now: float) -> tuple[list[CompanionEvent], bytes]:
        try:
            events = self._sequence(frame)
            events += self._interpret(frame)
        except FrameError as error:
            log.warning("companion: rejected frame (%s)", error)
            return [FrameRejected(str(error))], b""
        self._last_heard = now
        out = b""
        if not self.link_up:
            if self.firmware is None or frame.kind != "HELLO":
                out = self._frame(now, "HELLO")  # learn who is there before declaring it up
                return events, out
            self.link_up = True
            events.insert(0, self.firmware)
            if self._led is not None:
                out = self.set_led(self._led, now)  # a restarted board forgot our LED state
        return events, out

    def _interpret(self, frame: Frame) -> list[CompanionEvent]:
        kind, args = frame.kind, frame.args
        if kind == "HELLO" and len(args) == 3:
            self.firmware = LinkRestored(firmware_version=args[0], firmware_hash=args[1])
            self.link_up = False  # a (re)introduction: report the link as restored
            return self._tamper(args[2])
        if kind == "HB" and len(args) == 3:
            return self._tamper(args[1])
        if kind == "KEY" and len(args) == 1 and args[0] in Key.__members__.values():
            return [KeyPressed(Key(args[0]))]
        if kind == "TAMPER" and len(args) == 1:
            return self._tamper(args[0])
        if kind == "ACK" and len(args) == 1:
            if self._led_seq is not None and args[0] == str(self._led_seq):
                self._led_seq = None
            return []
        if kind == "NAK" and len(args) == 2:
            if self._led_seq is not None and args[0] == str(self._led_seq):
                self._led_seq = None
            return [CommandRejected(args[1])]
        if kind == "ERR" and len(args) == 1:
            return [CommandRejected(f"board received a damaged frame: {args[0]}")]
        raise FrameError(f"unknown frame {kind} with {len(args)} argument(s)")

    def _tamper(self, word: str) -> list[CompanionEvent]:
        if word not in ("open", "closed"):
            raise FrameError(f"bad tamper state {word[:16]!r}")
        opened = word == "open"
        if opened == self.tamper_open:
            return []
        self.tamper_open = opened
        return [TamperChanged(opened)]


# --- the serial shell ---------------------------------------------------------------------


class CompanionBoard:
    """The companion board on a serial port, served by a background thread.

    Events go to `events` (a queue) and to `listener` if one is given; the listener runs on
    the driver's thread and must return quickly. If the port disappears the driver reports
    LinkLost and keeps trying to reopen it.
    """

    POLL_INTERVAL = 0.05
    REOPEN_INTERVAL = 0.5

    def __init__(
        self,
        port: str,
        *,
        listener: Callable[[CompanionEvent], None] | None = None,
        timing: Timing | None = None,
        baudrate: int = 115200,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.listener = listener
        self.events: queue.Queue[CompanionEvent] = queue.Queue()
        self.protocol = CompanionProtocol(timing=timing or Timing())
        self._lock = threading.Lock()
        self._serial: serial.SerialBase | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> CompanionBoard:
        with self._lock:
            self._open_port()
        self._thread = threading.Thread(target=self._run, name="companion", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._serial is not None:
                self._serial.close()
                self._serial = None

    def __enter__(self) -> CompanionBoard:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_led(self, state: LedState) -> None:
        with self._lock:
            self._write(self.protocol.set_led(state, time.monotonic()))

    def next_event(self, timeout: float) -> CompanionEvent:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise CompanionError(f"no event from the companion board within {timeout} s") from None

    def wait_for(self, kind: type[_E], timeout: float) -> _E:
        """Next event of one type, skipping others (they stay out of the queue)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, kind):
                return event

    def _open_port(self) -> None:
        try:
            port = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0)
        except (serial.SerialException, OSError) as error:
            if self._serial is None and self._thread is None:
                message = f"cannot open companion board port {self.port}: {error}"
                raise CompanionError(message) from error
            return
        self._serial = port
        self._write(self.protocol.connect(time.monotonic()))

    def _write(self, data: bytes) -> None:
        if data and self._serial is not None:
            try:
                self._serial.write(data)
            except (serial.SerialException, OSError) as error:
                self._port_failed(error)

    def _port_failed(self, error: Exception) -> None:
        log.warning("companion: port %s failed: %s", self.port, error)
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        self._deliver(self.protocol.port_lost(f"serial port failed: {error}"))

    def _deliver(self, events: list[CompanionEvent]) -> None:
        for event in events:
            self.events.put(event)
            if self.listener is not None:
                try:
                    self.listener(event)
                except Exception:
                    log.exception("companion: event listener failed on %r", event)

    def _run(self) -> None:
        last_reopen = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            data = b""
            with self._lock:
                if self._serial is None and now - last_reopen > self.REOPEN_INTERVAL:
                    last_reopen = now
                    self._open_port()
                events: list[CompanionEvent] = []
                if self._serial is not None:
                    try:
                        data = self._serial.read(self._serial.in_waiting or 1)
                    except (serial.SerialException, OSError) as error:
                        self._port_failed(error)
                if data:
                    events, out = self.protocol.receive(data, now)
                    self._write(out)
                tick_events, tick_out = self.protocol.tick(now)
                self._write(tick_out)
            self._deliver(events + tick_events)
            if not data:
                self._stop.wait(self.POLL_INTERVAL)
