# Companion board firmware: keypad, tamper switch and status LED for a booth terminal,
# spoken over USB serial in the framed protocol of docs/companion-protocol.md.
# Ctrl-C (or mpremote) interrupts it and leaves the board at the REPL; a reset restarts it.
import hashlib
import select
import sys
import time

import board
import link

FIRMWARE_VERSION = "1.0.0"
FIRMWARE_FILES = ("board.py", "link.py", "main.py", "pinmap.json")
HEARTBEAT_MS = 500
HOST_SILENCE_MS = 3000  # no frame from the host for this long: show the error pattern
SCAN_MS = 10


def hex_digest(data):
    return "".join(f"{byte:02x}" for byte in data)


def firmware_hash():
    """sha256 of the `sha256sum` listing of the firmware files, in name order: the same
    value `sha256sum board.py link.py main.py pinmap.json | sha256sum` gives on a host."""
    listing = hashlib.sha256()
    for name in FIRMWARE_FILES:
        digest = hashlib.sha256()
        with open(name, "rb") as handle:
            chunk = bytearray(256)
            while True:
                count = handle.readinto(chunk)
                if not count:
                    break
                digest.update(chunk[:count])
        listing.update(f"{hex_digest(digest.digest())}  {name}\n".encode())
    return hex_digest(listing.digest())


class Firmware:
    def __init__(self, hardware, output):
        self.hardware = hardware
        self.output = output
        self.seq = 0
        self.identity = (FIRMWARE_VERSION, firmware_hash())
        self.host_led = "off"
        self.host_seen_ms = None

    def send(self, kind, *args):
        self.output.write(link.encode(self.seq, kind, args))
        self.seq = (self.seq + 1) % link.SEQ_MODULO

    def tamper_word(self):
        return "open" if self.hardware.tamper_open() else "closed"

    def hello(self):
        self.send("HELLO", self.identity[0], self.identity[1], self.tamper_word())

    def heartbeat(self, now_ms):
        self.send("HB", str(now_ms // 1000), self.tamper_word(), self.hardware.led_state)

    def on_frame(self, decoded, now_ms):
        if isinstance(decoded, str):
            self.send("ERR", decoded)
            return
        seq, kind, args = decoded
        self.host_seen_ms = now_ms
        if kind == "HELLO":
            self.hello()
        elif kind == "HB":
            pass
        elif kind == "LED" and len(args) == 1 and args[0] in board.LED_PATTERNS:
            self.host_led = args[0]
            self.hardware.set_led(self.host_led)
            self.send("ACK", str(seq))
        elif kind == "LED":
            self.send("NAK", str(seq), "bad-led-state")
        else:
            self.send("NAK", str(seq), "unknown-command")

    def on_scan(self, now_ms):
        pressed, tamper = self.hardware.scan()
        for name in pressed:
            self.send("KEY", name)
        if tamper is not None:
            self.send("TAMPER", "open" if tamper else "closed")
        host_silent = self.host_seen_ms is None or (time.ticks_diff(now_ms, self.host_seen_ms) > HOST_SILENCE_MS)
        self.hardware.set_led("error" if host_silent else self.host_led)


def run():
    hardware = board.Board(board.load_pins())
    firmware = Firmware(hardware, sys.stdout.buffer)
    reader = link.Reader()
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    stdin = sys.stdin.buffer
    start = time.ticks_ms()
    last_heartbeat = last_scan = start
    firmware.hello()
    try:
        while True:
            if poller.poll(SCAN_MS):
                byte = stdin.read(1)
                if byte:
                    decoded = reader.feed_byte(byte[0])
                    if decoded is not None:
                        firmware.on_frame(decoded, time.ticks_ms())
            now = time.ticks_ms()
            elapsed = time.ticks_diff(now, last_scan)
            if elapsed >= SCAN_MS:
                last_scan = now
                firmware.on_scan(now)
                hardware.run_led(elapsed)
            if time.ticks_diff(now, last_heartbeat) >= HEARTBEAT_MS:
                last_heartbeat = now
                firmware.heartbeat(time.ticks_diff(now, start))
    finally:
        hardware.set_led("off")
        hardware.run_led(1000)


run()
