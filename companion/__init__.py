"""The companion board's MicroPython firmware (``companion/firmware/``), shipped as data.

The firmware is not imported by the host: it is copied to the board by ``flash.sh``, hashed
by ``booth self-test`` and run in the unix port by the virtual board. This package exists so
that those files travel in the wheel and are found with ``importlib.resources`` on an
installed terminal (appliance/drivers/companion.py).
"""
