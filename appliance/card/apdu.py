"""JPKI command APDUs and response parsing (ISO/IEC 7816-4 short APDUs only).

Every constant here is documented with its public source in docs/card-protocol.md. Only
short APDUs are built: every open-source JPKI implementation uses them, and extended length
support is card-dependent.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.card.errors import CardProtocolError

JPKI_AID = bytes.fromhex("D392F000260100000001")

EF_SIGN_CERT = 0x0001
EF_SIGN_CA_CERT = 0x0002
EF_TOKEN = 0x0006
EF_AUTH_CERT = 0x000A
EF_AUTH_CA_CERT = 0x000B
EF_AUTH_KEY = 0x0017
EF_AUTH_PIN = 0x0018
EF_SIGN_KEY = 0x001A
EF_SIGN_PASSWORD = 0x001B

SW_OK = 0x9000
SW1_MORE_DATA = 0x61  # 61xx: xx more response bytes wait for GET RESPONSE (00 = 256 or more)
SW1_WRONG_LE = 0x6C  # 6Cxx: wrong Le, re-send the same command with Le = xx (00 = 256)
SW_END_OF_FILE = 0x6282
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_METHOD_BLOCKED = 0x6983
SW_REFERENCE_DATA_UNUSABLE = 0x6984
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_WRONG_DATA = 0x6A80
SW_FILE_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6A86
SW_WRONG_OFFSET = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00

# Status words meaning "no tries left" seen from real cards (63C0, 6984) or expected
# from ISO 7816-4 (6983); all three mean locked.
LOCKED_STATUS_WORDS = frozenset({0x63C0, SW_AUTH_METHOD_BLOCKED, SW_REFERENCE_DATA_UNUSABLE})

MAX_SHORT_DATA = 255
MAX_SHORT_LE = 256
# A short response carries at most 256 data bytes plus SW1 SW2.
MAX_RESPONSE_LENGTH = MAX_SHORT_LE + 2


@dataclass(frozen=True)
class CommandApdu:
    """A short command APDU; le=None means no response data expected."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"APDU {name} must be one byte")
        if len(self.data) > MAX_SHORT_DATA:
            raise ValueError("APDU data longer than a short APDU allows")
        if self.le is not None and not 1 <= self.le <= MAX_SHORT_LE:
            raise ValueError("APDU Le must be 1..256")

    def encode(self) -> bytes:
        out = bytes((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out += bytes((len(self.data),)) + self.data
        if self.le is not None:
            out += bytes((self.le % 256,))
        return out

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Decode a short APDU; raises ValueError for anything else (the card says 6700)."""
        if len(raw) < 4:
            raise ValueError("APDU shorter than its 4-byte header")
        header, body = raw[:4], raw[4:]
        data, le = b"", None
        if len(body) == 1:
            le = body[0] or 256
        elif len(body) > 1:
            lc = body[0]
            if lc == 0:
                raise ValueError("extended-length APDUs are not supported")
            if len(body) == 1 + lc:
                data = body[1:]
            elif len(body) == 2 + lc:
                data, le = body[1:-1], body[-1] or 256
            else:
                raise ValueError("APDU length does not match its Lc byte")
        return cls(header[0], header[1], header[2], header[3], bytes(data), le)


@dataclass(frozen=True)
class ResponseApdu:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        """Split data and status word, refusing what no short APDU exchange can produce."""
        if len(raw) < 2:
            raise CardProtocolError(f"card response of {len(raw)} bytes is too short to hold a status word")
        if len(raw) > MAX_RESPONSE_LENGTH:
            raise CardProtocolError(f"card response of {len(raw)} bytes is longer than any short APDU response")
        sw = int.from_bytes(raw[-2:], "big")
        if not (0x61 <= raw[-2] <= 0x6F or raw[-2] == 0x90):
            raise CardProtocolError(f"card answered an invalid status word {sw:04X}")
        return cls(bytes(raw[:-2]), sw)


def select_applet(aid: bytes = JPKI_AID) -> CommandApdu:
    return CommandApdu(0x00, 0xA4, 0x04, 0x0C, aid)


def select_file(file_id: int) -> CommandApdu:
    return CommandApdu(0x00, 0xA4, 0x02, 0x0C, file_id.to_bytes(2, "big"))


def verify(secret: bytes | None) -> CommandApdu:
    """VERIFY with the secret, or without data to ask for the tries left."""
    return CommandApdu(0x00, 0x20, 0x00, 0x80, secret or b"")


def read_binary(offset: int, length: int) -> CommandApdu:
    if not 0 <= offset <= 0x7FFF:
        raise ValueError("READ BINARY offset must fit 15 bits")
    return CommandApdu(0x00, 0xB0, offset >> 8, offset & 0xFF, le=length)


def get_response(length: int) -> CommandApdu:
    """GET RESPONSE (ISO/IEC 7816-4 §11.5.4), interindustry class 00 whatever the command's class."""
    return CommandApdu(0x00, 0xC0, 0x00, 0x00, le=length)


def with_le(command: CommandApdu, length: int) -> CommandApdu:
    """The same command with another Le: what a card's 6Cxx asks for."""
    return CommandApdu(command.cla, command.ins, command.p1, command.p2, command.data, length)


def compute_digital_signature(digest_info: bytes) -> CommandApdu:
    return CommandApdu(0x80, 0x2A, 0x00, 0x80, digest_info, le=256)
