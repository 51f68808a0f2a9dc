"""Host-side marker of the firmware folder; never copied to the board.

The board gets only the files `appliance.drivers.companion.firmware_sources()` names. This
file makes the folder a regular package so that ``files("companion.firmware")`` finds it with
``importlib.resources``, installed or in a checkout (where ``tests/companion`` would otherwise
be taken for ``companion``).
"""
