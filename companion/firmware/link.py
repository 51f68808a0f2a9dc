# Framing of the companion serial protocol (see docs/companion-protocol.md).
# Runs in MicroPython on the board; the host side lives in appliance/drivers/companion.py.
#
# A frame is one printable-ASCII line:  $<version> <seq> <TYPE> [arg ...]*<crc32 hex>\n
# It never contains the REPL control bytes (Ctrl-A..Ctrl-E), so mpremote can always break in.
import binascii

PROTOCOL_VERSION = 1
MAX_FRAME = 200  # bytes from '$' to '\n' inclusive
SEQ_MODULO = 65536


def checksum(body):
    return binascii.crc32(body) & 0xFFFFFFFF


def encode(seq, kind, args=()):
    body = f"{PROTOCOL_VERSION} {seq} {kind}".encode()
    for arg in args:
        body += b" " + arg.encode()
    return b"$" + body + b"*" + f"{checksum(body):08x}".encode() + b"\n"


def parse(frame):
    """frame: the bytes between '$' and '\\n'. Returns (seq, kind, args) or raises ValueError."""
    star = frame.rfind(b"*")
    if star < 0 or len(frame) - star != 9:
        raise ValueError("malformed")
    body = frame[:star]
    try:
        expected = int(frame[star + 1 :], 16)
    except ValueError:
        raise ValueError("malformed") from None
    if checksum(body) != expected:
        raise ValueError("bad-checksum")
    fields = body.decode().split(" ")
    if len(fields) < 3:
        raise ValueError("malformed")
    if fields[0] != str(PROTOCOL_VERSION):
        raise ValueError("bad-version")
    try:
        seq = int(fields[1])
    except ValueError:
        raise ValueError("malformed") from None
    if not 0 <= seq < SEQ_MODULO:
        raise ValueError("malformed")
    return seq, fields[2], fields[3:]


class Reader:
    """Cuts a byte stream into frames; bytes outside frames are skipped."""

    def __init__(self):
        self.buffer = None  # None while outside a frame

    def feed_byte(self, byte):
        """Returns (seq, kind, args), an error string, or None while a frame is incomplete."""
        if byte == 0x24:  # '$' always starts a new frame
            restarted = self.buffer is not None and len(self.buffer) > 0
            self.buffer = bytearray()
            return "truncated" if restarted else None
        if self.buffer is None:
            return None
        if byte == 0x0A:
            frame = bytes(self.buffer)
            self.buffer = None
            try:
                return parse(frame)
            except (ValueError, UnicodeError) as error:
                return str(error) if str(error) else "malformed"
        if byte < 0x20 or byte > 0x7E or len(self.buffer) >= MAX_FRAME:
            self.buffer = None
            return "malformed"
        self.buffer.append(byte)
        return None
