# The companion board's hardware layer: keypad, tamper switch and status LED on machine.Pin.
# On the Pico this is the real RP2040 GPIO; in the MicroPython unix port a stand-in machine
# module (companion/firmware/unix/machine.py) provides the same Pin class.
import json

from machine import Pin

KEYS = ("up", "down", "select", "back", "help")
DEBOUNCE_SCANS = 3  # a level must be seen on this many consecutive scans to count

# LED patterns: (level, milliseconds) steps repeated forever.
LED_PATTERNS = {
    "off": ((0, 1000),),
    "ready": ((1, 1000),),
    "busy": ((1, 500), (0, 500)),
    "attention": ((1, 125), (0, 125)),
    "error": ((1, 100), (0, 100), (1, 100), (0, 700)),
}


def load_pins(path="pinmap.json"):
    """The companion section of the terminal's pin map (copied to the board by flash.sh)."""
    with open(path) as handle:
        return json.load(handle)["companion"]


class DebouncedInput:
    def __init__(self, pin_number, initial):
        self.pin = Pin(pin_number, Pin.IN, Pin.PULL_UP)
        self.level = initial
        self.candidate = initial
        self.count = 0

    def scan(self):
        """Returns the new level when it has just settled on a change, else None."""
        raw = self.pin.value()
        if raw == self.level:
            self.count = 0
            return None
        if raw != self.candidate:
            self.candidate = raw
            self.count = 0
        self.count += 1
        if self.count >= DEBOUNCE_SCANS:
            self.level = raw
            self.count = 0
            return raw
        return None


class Board:
    """Keys pull to ground when pressed; the tamper switch is closed (to ground) while the
    enclosure is shut, so an open enclosure or a cut wire both read as open."""

    def __init__(self, pins):
        self.keys = [(name, DebouncedInput(pins["keypad"][name], 1)) for name in KEYS]
        self.tamper = DebouncedInput(pins["tamper"], 0)
        self.tamper.level = self.tamper.pin.value()
        self.led = Pin(pins["status_led"], Pin.OUT)
        self.led.value(0)
        self.led_state = "off"
        self.step = -1  # run_led starts the pattern at its first step
        self.step_left_ms = 0

    def tamper_open(self):
        return self.tamper.level == 1

    def scan(self):
        """Returns (pressed key names, new tamper state or None)."""
        pressed = [name for name, key in self.keys if key.scan() == 0]
        changed = self.tamper.scan()
        return pressed, (None if changed is None else changed == 1)

    def set_led(self, state):
        if state not in LED_PATTERNS:
            raise ValueError(state)
        if state != self.led_state:
            self.led_state = state
            self.step = -1
            self.step_left_ms = 0

    def run_led(self, elapsed_ms):
        """Advance the LED pattern by elapsed_ms."""
        pattern = LED_PATTERNS[self.led_state]
        self.step_left_ms -= elapsed_ms
        if self.step_left_ms <= 0:
            self.step = (self.step + 1) % len(pattern)
            level, duration = pattern[self.step]
            self.led.value(level)
            self.step_left_ms = duration
