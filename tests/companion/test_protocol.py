"""The sans-I/O protocol core: framing, sequence numbers, heartbeats, silence, resends."""

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.drivers.companion import (
    CommandRejected,
    CompanionProtocol,
    FrameError,
    FrameRejected,
    FramesLost,
    Key,
    KeyPressed,
    LedState,
    LinkLost,
    LinkRestored,
    TamperChanged,
    Timing,
    decode_frame,
    encode_frame,
)

HASH = "ab" * 32


def linked(now: float = 0.0, hello_seq: int = 0) -> CompanionProtocol:
    protocol = CompanionProtocol(timing=Timing(heartbeat_interval=0.5, link_timeout=2.0))
    protocol.connect(now)
    hello = encode_frame(hello_seq, "HELLO", "1.0.0", HASH, "closed")
    events, _ = protocol.receive(hello, now)
    assert events == [LinkRestored("1.0.0", HASH), TamperChanged(False)]
    return protocol


def test_frames_round_trip_and_damage_is_named():
    frame = encode_frame(65535, "KEY", "up")
    assert decode_frame(frame[1:-1]).args == ("up",)
    flipped = frame[:5] + b"X" + frame[6:]
    with pytest.raises(FrameError, match="bad-checksum"):
        decode_frame(flipped[1:-1])
    with pytest.raises(FrameError, match="malformed"):
        decode_frame(b"1 2 KEY up")
    with pytest.raises(FrameError, match="bad-version"):
        body = b"2 0 KEY up"
        decode_frame(body + b"*" + f"{zlib.crc32(body):08x}".encode())


def test_key_events_and_noise_between_frames():
    protocol = linked()
    data = b">>> garbage\r\n" + encode_frame(1, "KEY", "help") + b"\x04\x04"
    events, _ = protocol.receive(data, 0.1)
    assert events == [KeyPressed(Key.HELP)]


def test_truncated_and_overlong_frames_are_rejected():
    protocol = linked()
    half = encode_frame(1, "KEY", "up")[:10]
    events, _ = protocol.receive(half + encode_frame(1, "KEY", "up"), 0.1)
    assert events == [FrameRejected("truncated"), KeyPressed(Key.UP)]
    events, _ = protocol.receive(b"$" + b"A" * 500 + b"\n", 0.2)
    assert events == [FrameRejected("malformed")]


def test_a_sequence_gap_counts_lost_frames_across_wraparound():
    protocol = linked(hello_seq=65533)
    events, _ = protocol.receive(encode_frame(1, "KEY", "down"), 0.1)
    assert events == [FramesLost(3), KeyPressed(Key.DOWN)]


def test_a_replayed_frame_is_rejected_not_acted_on():
    protocol = linked()
    frame = encode_frame(1, "KEY", "select")
    assert protocol.receive(frame, 0.1)[0] == [KeyPressed(Key.SELECT)]
    events, _ = protocol.receive(frame, 0.2)
    assert len(events) == 1 and isinstance(events[0], FrameRejected)


def test_silence_loses_the_link_and_a_hello_restores_it():
    protocol = linked()
    assert protocol.tick(1.9)[0] == []
    assert protocol.tick(2.1)[0] == [LinkLost("no frame from the board for 2.1 s")]
    assert protocol.tick(2.5)[0] == []  # reported once
    events, out = protocol.receive(encode_frame(1, "HB", "3", "closed", "ready"), 3.0)
    assert events == [] and b" HELLO*" in out  # ask who is there before trusting it
    events, _ = protocol.receive(encode_frame(2, "HELLO", "1.0.0", HASH, "closed"), 3.1)
    assert events == [LinkRestored("1.0.0", HASH)]


def test_heartbeats_are_sent_on_schedule():
    protocol = linked()
    _, out = protocol.tick(0.6)
    assert b" HB*" in out
    assert protocol.tick(0.7)[1] == b""


def test_an_unacknowledged_led_command_is_resent_and_an_ack_stops_it():
    protocol = linked()
    sent = protocol.set_led(LedState.BUSY, 0.0)
    seq = decode_frame(sent[1:-1]).seq
    _, out = protocol.tick(1.1)
    assert b" LED busy*" in out
    resent_seq = decode_frame(out.split(b"\n")[0][1:]).seq
    protocol.receive(encode_frame(1, "ACK", str(resent_seq)), 1.2)
    assert b"LED" not in protocol.tick(2.5)[1]
    assert seq != resent_seq


def test_a_refused_command_is_reported():
    protocol = linked()
    sent = protocol.set_led(LedState.READY, 0.0)
    seq = decode_frame(sent[1:-1]).seq
    events, _ = protocol.receive(encode_frame(1, "NAK", str(seq), "bad-led-state"), 0.1)
    assert events == [CommandRejected("bad-led-state")]


def test_unknown_or_ill_formed_frames_are_rejected():
    protocol = linked()
    for seq, frame in enumerate([("KEY", "left"), ("TAMPER", "ajar"), ("FLY",), ("HB", "1")], start=1):
        events, _ = protocol.receive(encode_frame(seq, *frame), 0.1)
        assert len(events) == 1 and isinstance(events[0], FrameRejected), frame


@given(st.binary(max_size=400))
def test_any_bytes_from_the_port_never_raise(data):
    protocol = linked()
    events, _ = protocol.receive(data, 0.1)
    if b"$" not in data:
        assert events == []  # nothing outside a frame is ever acted on
