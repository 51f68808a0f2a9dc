"""The PN532 host-link frame format (normal, extended, ACK, NACK, error), sans-I/O.

Shared by the driver and the emulator so both sides encode and check frames the same way;
the byte layouts are in docs/card-protocol.md (sources: libnfc pn53x, nfcpy, NXP UM0701-02).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")
HOST_TO_PN532 = 0xD4
PN532_TO_HOST = 0xD5
START_CODE = b"\x00\xff"
# TFI + data. libnfc keeps normal frames to 254 so LEN never collides with the FF FF marker.
MAX_NORMAL_PAYLOAD = 254
MAX_EXTENDED_PAYLOAD = 264  # LEN of an extended frame (TFI + data), libnfc's limit
MAX_FRAME_BYTES = MAX_EXTENDED_PAYLOAD + 10


class FrameKind(Enum):
    ACK = "ack"
    NACK = "nack"
    ERROR = "error"
    DATA = "data"


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    payload: bytes = b""  # TFI and data, for DATA frames


class FrameError(Exception):
    """A frame that arrived whole but is corrupt; `consumed` bytes should be dropped."""

    def __init__(self, reason: str, consumed: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.consumed = consumed


def _checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def encode_frame(payload: bytes) -> bytes:
    """Wrap TFI + data in a normal frame, or an extended one when it does not fit."""
    if not payload:
        raise ValueError("a PN532 frame carries at least its TFI byte")
    if len(payload) <= MAX_NORMAL_PAYLOAD:
        header = bytes((len(payload), _checksum(bytes((len(payload),)))))
    elif len(payload) <= MAX_EXTENDED_PAYLOAD:
        length = len(payload).to_bytes(2, "big")
        header = b"\xff\xff" + length + bytes((_checksum(length),))
    else:
        raise ValueError(f"{len(payload)} bytes do not fit a PN532 extended frame")
    return b"\x00" + START_CODE + header + payload + bytes((_checksum(payload), 0x00))


def decode_frame(buffer: bytes) -> tuple[Frame | None, int]:
    """Find the first frame in `buffer`.

    Returns (frame, bytes consumed), or (None, n) when more bytes are needed, with n leading
    bytes that can never start a frame (so may be dropped). Raises FrameError for a corrupt
    frame: wrong length checksum, wrong data checksum, or a length beyond the extended limit.
    """
    start = buffer.find(START_CODE)
    if start < 0:
        keep_last = buffer[-1:] == b"\x00"
        return None, len(buffer) - int(keep_last)
    body = buffer[start + 2 :]
    if len(body) < 3:
        return None, start
    if body[:2] == b"\x00\xff":
        return Frame(FrameKind.ACK), start + 5
    if body[:2] == b"\xff\x00":
        return Frame(FrameKind.NACK), start + 5
    if body[:2] == b"\xff\xff":
        if len(body) < 5:
            return None, start
        if (body[2] + body[3] + body[4]) & 0xFF:
            raise FrameError("extended frame length checksum is wrong", start + 2)
        length, header = int.from_bytes(body[2:4], "big"), 5
        if length > MAX_EXTENDED_PAYLOAD:
            raise FrameError(f"frame claims {length} bytes, more than a PN532 sends", start + 2)
    else:
        if (body[0] + body[1]) & 0xFF:
            raise FrameError("frame length checksum is wrong", start + 2)
        length, header = body[0], 2
    if length == 0:
        raise FrameError("data frame without a TFI byte", start + 2)
    end = header + length + 2  # payload, DCS, postamble
    if len(body) < end:
        return None, start
    payload = bytes(body[header : header + length])
    if (sum(payload) + body[header + length]) & 0xFF:
        raise FrameError("frame data checksum is wrong", start + 2 + end)
    kind = FrameKind.ERROR if payload == b"\x7f" else FrameKind.DATA
    return Frame(kind, payload), start + 2 + end
