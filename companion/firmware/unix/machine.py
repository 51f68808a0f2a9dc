# Stand-in for the RP2040 `machine` module when the companion firmware runs in the MicroPython
# unix port (the virtual companion board, appliance/simulators/companion_board.py).
# This is the only fake layer: GPIO levels come from the simulator over an inherited pipe
# (lines "<gpio>=<0|1>"), output levels go back over another ("<gpio>=<0|1>").
import os
import select
import sys

RESET_EXIT_CODE = 42  # tells the simulator "hard reset: run main.py again"
HOLD_READS = 5  # an injected level stays put for this many reads of its pin

_levels = {}
_reads = {}
_queue = []
_inputs = None
_outputs = None
_poller = None
_pending = b""


def _open_channels():
    global _inputs, _outputs, _poller
    if _inputs is None and os.getenv("VBOARD_PINS_IN"):
        # open for the life of the process, like the hardware they stand in for
        _inputs = open(int(os.getenv("VBOARD_PINS_IN")), "rb")  # noqa: SIM115
        _outputs = open(int(os.getenv("VBOARD_PINS_OUT")), "wb")  # noqa: SIM115
        _poller = select.poll()
        _poller.register(_inputs, select.POLLIN)


def _drain():
    global _pending
    _open_channels()
    while _poller is not None and _poller.poll(0):
        chunk = _inputs.read(1)
        if not chunk:
            break
        _pending += chunk
        if chunk == b"\n":
            pin, level = _pending.decode().strip().split("=")
            _queue.append((int(pin), int(level)))
            _pending = b""


def _apply_queue():
    """Apply queued changes one at a time, each only after the previous one was seen."""
    while _queue:
        pin, level = _queue[0]
        if _reads.get(pin, HOLD_READS) < HOLD_READS:
            return
        _queue.pop(0)
        if _levels.get(pin) != level:
            _levels[pin] = level
            _reads[pin] = 0


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, number, mode=IN, pull=None):
        self.number = number
        self.mode = mode
        _open_channels()
        if number not in _levels:
            _levels[number] = 1 if pull == Pin.PULL_UP else 0

    def value(self, level=None):
        if level is None:
            _drain()
            _apply_queue()
            _reads[self.number] = _reads.get(self.number, 0) + 1
            return _levels[self.number]
        level = 1 if level else 0
        if _levels.get(self.number) != level:
            _levels[self.number] = level
            if _outputs is not None:
                _outputs.write(f"{self.number}={level}\n".encode())
        return None


def reset():
    sys.exit(RESET_EXIT_CODE)


def soft_reset():
    sys.exit(0)
