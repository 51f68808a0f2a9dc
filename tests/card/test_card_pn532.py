"""PN532 link-level behaviour: chaining, extended frames, corrupt frames, silence, no card."""

from __future__ import annotations

import os
import time
import tty

import pytest
from card_fixtures import PN532_TEST_SETTINGS, Cards, ScriptedCard, authenticator

from appliance.card import AuthMode, CardProtocolError, ReaderUnavailable
from appliance.drivers.pn532.uart import Pn532Uart
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import FrameFault

pytestmark = pytest.mark.timeout(60)
SELECT_JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")


def test_signature_arrives_through_mi_chaining_when_frames_are_small(cards: Cards, pn532_rig):
    rig = pn532_rig(VirtualJpkiCard(cards.good), exchange_chunk=64)
    assert rig.reader.wait_for_card(2)
    voter = authenticator(cards, rig.reader, AuthMode.SIGN).authenticate(cards.good.sign.secret)
    assert len(voter.card_handle) == 64


def test_long_command_apdu_is_sent_with_mi_chaining(cards: Cards, pn532_rig):
    card = ScriptedCard(VirtualJpkiCard(cards.good), lambda apdu: b"\x90\x00")
    rig = pn532_rig(card)
    assert rig.reader.wait_for_card(2)
    long_apdu = bytes((0x80, 0x2A, 0x00, 0x80)) + bytes(range(256)) * 2
    assert rig.reader.transmit(long_apdu) == b"\x90\x00"
    assert card.commands[-1] == long_apdu


@pytest.mark.parametrize(
    "fault",
    [FrameFault.BAD_CHECKSUM, FrameFault.BAD_LENGTH_CHECKSUM, FrameFault.TRUNCATED, FrameFault.OVERSIZED],
)  # fmt: skip
def test_one_corrupt_frame_is_retransmitted_and_the_flow_completes(cards: Cards, pn532_rig, fault: FrameFault):
    rig = pn532_rig(VirtualJpkiCard(cards.good))
    assert rig.reader.wait_for_card(2)
    rig.emulator.inject(fault)
    voter = authenticator(cards, rig.reader, AuthMode.AUTH).authenticate("1234")
    assert len(voter.card_handle) == 64


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (FrameFault.BAD_CHECKSUM, "corrupt frames"),
        (FrameFault.TRUNCATED, "corrupt frames"),
        (FrameFault.GARBAGE, "did not answer"),
        (FrameFault.SILENT, "did not answer"),
    ],
)
def test_persistently_bad_frames_give_a_clear_error_in_bounded_time(
    cards: Cards, pn532_rig, fault: FrameFault, reason: str
):
    rig = pn532_rig(VirtualJpkiCard(cards.good))
    assert rig.reader.wait_for_card(2)
    rig.emulator.inject(fault, count=10)
    started = time.monotonic()
    with pytest.raises(CardProtocolError, match=reason):
        rig.reader.transmit(SELECT_JPKI)
    bound = (PN532_TEST_SETTINGS.retries + 2) * PN532_TEST_SETTINGS.exchange_timeout
    assert time.monotonic() - started < bound


def test_oversized_card_response_is_refused(cards: Cards, pn532_rig):
    card = ScriptedCard(VirtualJpkiCard(cards.good), lambda apdu: b"\x00" * 5000 + b"\x90\x00")
    rig = pn532_rig(card)
    assert rig.reader.wait_for_card(2)
    with pytest.raises(CardProtocolError, match="exceeds"):
        rig.reader.transmit(SELECT_JPKI)


def test_no_card_on_the_reader(pn532_rig):
    rig = pn532_rig(None)
    assert not rig.reader.wait_for_card(0.3)
    assert not rig.reader.card_present()


def test_card_taken_off_the_reader_is_no_longer_present(cards: Cards, pn532_rig):
    rig = pn532_rig(VirtualJpkiCard(cards.good))
    assert rig.reader.wait_for_card(2)
    assert rig.reader.card_present()
    rig.emulator.remove()
    assert not rig.reader.card_present()
    rig.reader.release()


def test_a_silent_serial_port_is_reported_as_no_reader():
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        started = time.monotonic()
        with pytest.raises(ReaderUnavailable):
            Pn532Uart(os.ttyname(slave), 115200, settings=PN532_TEST_SETTINGS)
        assert time.monotonic() - started < 20
    finally:
        os.close(master)
        os.close(slave)


def test_a_missing_serial_port_is_reported_as_no_reader(tmp_path):
    with pytest.raises(ReaderUnavailable, match="cannot open"):
        Pn532Uart(str(tmp_path / "ttyNONE"), 115200)
