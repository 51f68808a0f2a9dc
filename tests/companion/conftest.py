"""Fixtures: a virtual companion board (real firmware in the MicroPython unix port on a pty)
and the real driver connected to it."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.drivers.companion import CompanionBoard, Timing
from appliance.simulators.companion_board import VirtualCompanionBoard, install_factory_firmware

FAST = Timing(heartbeat_interval=0.3, link_timeout=1.5, resend_after=0.5)


@pytest.fixture
def virtual_board(tmp_path: Path) -> Iterator[VirtualCompanionBoard]:
    root = tmp_path / "board"
    install_factory_firmware(root)
    board = VirtualCompanionBoard(root, port_link=tmp_path / "ttyCOMPANION")
    board.start()
    try:
        yield board
    finally:
        board.stop()


@pytest.fixture
def fast_timing() -> Timing:
    """Short timeouts so link-loss tests take about a second."""
    return FAST


@pytest.fixture
def driver(virtual_board: VirtualCompanionBoard) -> Iterator[CompanionBoard]:
    companion = CompanionBoard(virtual_board.port, timing=FAST)
    companion.open()
    try:
        yield companion
    finally:
        companion.close()
