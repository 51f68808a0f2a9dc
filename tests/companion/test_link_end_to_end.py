"""The real firmware (MicroPython unix port) and the real driver, over a pseudo-terminal."""

import queue
import time

import serial

from appliance.drivers.companion import (
    CompanionBoard,
    FrameRejected,
    FramesLost,
    Key,
    KeyPressed,
    LedState,
    LinkLost,
    LinkRestored,
    TamperChanged,
    decode_frame,
    encode_frame,
    local_firmware_hash,
)


def test_board_introduces_itself_with_the_firmware_hash_and_tamper_state(driver):
    hello = driver.wait_for(LinkRestored, timeout=5)
    assert hello.firmware_version == "1.0.0"
    assert hello.firmware_hash == local_firmware_hash()
    assert driver.wait_for(TamperChanged, timeout=2) == TamperChanged(opened=False)


def test_keypad_presses_reach_the_session_listener_in_order(virtual_board, fast_timing):
    received: queue.Queue = queue.Queue()
    companion = CompanionBoard(virtual_board.port, timing=fast_timing, listener=received.put)
    with companion:
        companion.wait_for(LinkRestored, timeout=5)
        for key in Key:
            virtual_board.press(key.value)
        keys = []
        deadline = time.monotonic() + 10
        while len(keys) < len(Key) and time.monotonic() < deadline:
            event = received.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(event, KeyPressed):
                keys.append(event.key)
    assert keys == list(Key)


def test_tamper_switch_open_and_close_are_reported(virtual_board, driver):
    driver.wait_for(LinkRestored, timeout=5)
    assert driver.wait_for(TamperChanged, timeout=2).opened is False
    virtual_board.set_tamper(opened=True)
    assert driver.wait_for(TamperChanged, timeout=5).opened is True
    assert driver.protocol.tamper_open is True
    virtual_board.set_tamper(opened=False)
    assert driver.wait_for(TamperChanged, timeout=5).opened is False


def test_enclosure_opened_while_the_terminal_was_off_is_reported_at_once(virtual_board, fast_timing):
    virtual_board.set_tamper(opened=True)
    virtual_board.stop()
    virtual_board.start()  # board powers up with the enclosure already open
    with CompanionBoard(virtual_board.port, timing=fast_timing) as companion:
        companion.wait_for(LinkRestored, timeout=5)
        assert companion.wait_for(TamperChanged, timeout=2).opened is True


def test_led_commands_drive_the_status_led_pin(virtual_board, driver):
    driver.wait_for(LinkRestored, timeout=5)
    driver.set_led(LedState.READY)
    assert virtual_board.wait_for_led(1, timeout=5)
    changes = virtual_board.led_changes
    driver.set_led(LedState.OFF)
    assert virtual_board.wait_for_led(0, changes_after=changes, timeout=5)
    changes = virtual_board.led_changes
    driver.set_led(LedState.ATTENTION)  # blinking: the pin keeps changing
    assert virtual_board.wait_for_led(0, changes_after=changes + 2, timeout=5)


def test_corrupted_frames_are_rejected_without_dropping_the_link(virtual_board, driver):
    driver.wait_for(LinkRestored, timeout=5)
    virtual_board.corrupt_next_frames(2)
    assert driver.wait_for(FrameRejected, timeout=5).reason == "bad-checksum"
    assert driver.wait_for(FrameRejected, timeout=5).reason == "bad-checksum"
    virtual_board.press("select")
    assert driver.wait_for(KeyPressed, timeout=5).key is Key.SELECT
    assert driver.protocol.link_up


def test_lost_frames_are_counted_from_the_sequence_numbers(virtual_board, driver):
    driver.wait_for(LinkRestored, timeout=5)
    virtual_board.drop_next_frames(2)
    assert driver.wait_for(FramesLost, timeout=5) == FramesLost(2)


def test_a_silent_board_is_reported_lost_then_restored(virtual_board, driver):
    driver.wait_for(LinkRestored, timeout=5)
    virtual_board.freeze()
    lost = driver.wait_for(LinkLost, timeout=5)
    assert "no frame from the board" in lost.reason
    virtual_board.thaw()
    assert driver.wait_for(LinkRestored, timeout=5).firmware_hash == local_firmware_hash()


def test_the_board_reports_a_damaged_command_and_refuses_unknown_ones(virtual_board):
    with serial.serial_for_url(virtual_board.port, 115200, timeout=0.2) as port:
        good = encode_frame(7, "LED", "ready")
        port.write(good[:-5] + b"0000\n")  # damaged checksum
        port.write(encode_frame(8, "LED", "disco"))
        port.write(encode_frame(9, "REBOOT"))
        replies = {}
        deadline = time.monotonic() + 5
        while len(replies) < 3 and time.monotonic() < deadline:
            line = port.readline()
            if line.startswith(b"$"):
                frame = decode_frame(line[1:].rstrip(b"\n"))
                if frame.kind in ("ERR", "NAK"):
                    replies[frame.args[-1]] = frame
    assert set(replies) == {"bad-checksum", "bad-led-state", "unknown-command"}
    assert replies["bad-led-state"].args[0] == "8"


def test_unplugging_the_board_is_reported_as_link_lost(virtual_board, driver):
    driver.wait_for(LinkRestored, timeout=5)
    virtual_board.unplug_after(1)
    assert "serial port failed" in driver.wait_for(LinkLost, timeout=5).reason
