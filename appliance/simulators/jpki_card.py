"""A virtual My Number card (JPKI applet) at APDU level, sans-I/O.

It holds the same files, answers with the same status words and keeps the same retry
counters as the real card as far as public implementations document them (see
docs/card-protocol.md): the authentication certificate and both CA certificates are readable
without a PIN, the signing certificate only after the signing password, the private keys never,
and COMPUTE DIGITAL SIGNATURE pads a DigestInfo with PKCS#1 v1.5 using the selected key.
Shells (vpcd.py, pn532_emulator.py) move its APDUs; the counters live only in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from appliance.card import apdu
from appliance.card.authenticator import PROFILES, AuthMode
from appliance.card.testca import CardFile

log = logging.getLogger(__name__)

# DigestInfo prefixes the card accepts (RFC 8017, section 9.2, note 1).
DIGEST_INFO_PREFIXES: dict[bytes, hashes.HashAlgorithm] = {
    bytes.fromhex("3021300906052b0e03021a05000414"): hashes.SHA1(),
    bytes.fromhex("3031300d060960864801650304020105000420"): hashes.SHA256(),
    bytes.fromhex("3041300d060960864801650304020205000430"): hashes.SHA384(),
    bytes.fromhex("3051300d060960864801650304020305000440"): hashes.SHA512(),
}
TOKEN = b"JPKIAPICCTOKEN".ljust(32, b"\x00")
# ATQB (PUPI, application data, protocol info) the emulated PN532 reports; arbitrary but
# well-formed: 50 = ATQB, then 4-byte PUPI, 4 bytes application data, 3 bytes protocol info.
ATQB = bytes.fromhex("500000000000000000008171")


class CardWithdrawn(Exception):
    """Raised by a card's process() to say it left the field without answering."""


class SimulatedCard(Protocol):
    """What the vpcd and PN532 shells need from a card."""

    @property
    def atr(self) -> bytes: ...

    @property
    def atqb(self) -> bytes: ...

    def reset(self) -> None: ...

    def process(self, raw: bytes) -> bytes: ...


@dataclass
class _Secret:
    value: bytes
    tries_left: int
    max_tries: int
    verified: bool = False


@dataclass
class _Key:
    private_key: rsa.RSAPrivateKey
    secret_ef: int


@dataclass(frozen=True)
class CardQuirks:
    """Legal ISO/IEC 7816-4 answers some real cards give, which the terminal must accept.

    The default is none of them. Each can be turned on for tests, drills and demos:

    * ``short_read``: READ BINARY answers at most this many bytes with ``9000`` even when
      more were asked (and remain) — the reader must go on from the new offset;
    * ``exact_le``: READ BINARY answers ``6Cxx`` unless Le is min(this, bytes left), xx being
      that number — the reader must re-send with Le = xx;
    * ``response_chunk``: every answer with data (READ BINARY, the signature) is held back
      and announced with ``61xx``; GET RESPONSE hands it out at most this many bytes a time,
      with ``61xx`` while more remain — the reader must collect and concatenate.
    """

    short_read: int | None = None
    exact_le: int | None = None
    response_chunk: int | None = None

    def __post_init__(self) -> None:
        for name in ("short_read", "exact_le", "response_chunk"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= apdu.MAX_SHORT_LE:
                raise ValueError(f"{name} must be 1..256")


@dataclass
class VirtualJpkiCard:
    """The card's state machine: feed it a command APDU, get the response APDU."""

    card: CardFile
    quirks: CardQuirks = field(default_factory=CardQuirks)
    record: bool = False
    """Keep every command APDU received in ``commands`` (tests: what reached the card)."""
    commands: list[bytes] = field(init=False, default_factory=list)
    files: dict[int, bytes] = field(init=False)
    secrets: dict[int, _Secret] = field(init=False)
    keys: dict[int, _Key] = field(init=False)
    applet_selected: bool = field(init=False, default=False)
    selected_ef: int | None = field(init=False, default=None)
    pending_response: bytes = field(init=False, default=b"")
    """Response data announced with 61xx and not yet fetched by GET RESPONSE."""

    def __post_init__(self) -> None:
        der = serialization.Encoding.DER
        self.files = {
            apdu.EF_SIGN_CERT: self.card.sign.certificate.public_bytes(der),
            apdu.EF_SIGN_CA_CERT: self.card.sign_ca_certificate.public_bytes(der),
            apdu.EF_AUTH_CERT: self.card.auth.certificate.public_bytes(der),
            apdu.EF_AUTH_CA_CERT: self.card.auth_ca_certificate.public_bytes(der),
            apdu.EF_TOKEN: TOKEN,
        }
        self.secrets = {}
        self.keys = {}
        for mode in AuthMode:
            profile = PROFILES[mode]
            credential = self.card.credential(mode)
            self.secrets[profile.secret_ef] = _Secret(
                credential.secret.encode("ascii"), profile.max_tries, profile.max_tries
            )
            self.keys[profile.key_ef] = _Key(credential.private_key, profile.secret_ef)

    @property
    def atqb(self) -> bytes:
        return ATQB

    @property
    def atr(self) -> bytes:
        """ATR a PC/SC contactless reader builds for this Type B card (PC/SC part 3, 3.1.3)."""
        historical = ATQB[5:12] + b"\x00"  # application data, protocol info, MBLI
        body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
        check = 0
        for byte in body:
            check ^= byte
        return bytes((0x3B,)) + body + bytes((check,))

    def reset(self) -> None:
        """Power cycle: security state is lost, retry counters are not."""
        self.applet_selected = False
        self.selected_ef = None
        self.pending_response = b""
        for secret in self.secrets.values():
            secret.verified = False

    def secrets_presented(self) -> list[bytes]:
        """The recorded VERIFY commands that carried a secret (a PIN or password): the empty
        VERIFY (tries left, costs nothing) is not one. Needs ``record=True``."""
        return [raw for raw in self.commands if is_verify_with_secret(raw)]

    def process(self, raw: bytes) -> bytes:
        if self.record:
            self.commands.append(bytes(raw))
        try:
            command = apdu.CommandApdu.parse(raw)
        except ValueError:
            return _sw(apdu.SW_WRONG_LENGTH)
        if (command.cla, command.ins) == (0x00, 0xC0):
            return self._get_response(command)
        self.pending_response = b""  # any other command drops an unfetched answer (ISO 7816-4)
        handler = {
            (0x00, 0xA4): self._select,
            (0x00, 0x20): self._verify,
            (0x00, 0xB0): self._read_binary,
            (0x80, 0x2A): self._compute_signature,
        }.get((command.cla, command.ins))
        if handler is None:
            known_ins = command.ins in (0xA4, 0x20, 0xB0, 0x2A, 0xC0)
            return _sw(apdu.SW_CLA_NOT_SUPPORTED if known_ins else apdu.SW_INS_NOT_SUPPORTED)
        response = handler(command)
        if self.quirks.response_chunk is not None and len(response) > 2 and response[-2:] == _sw(apdu.SW_OK):
            self.pending_response = response[:-2]
            return self._announce_pending()
        return response

    def _announce_pending(self) -> bytes:
        """``61xx`` for what GET RESPONSE may fetch next (xx = 00 means 256)."""
        assert self.quirks.response_chunk is not None
        return bytes((apdu.SW1_MORE_DATA, min(len(self.pending_response), self.quirks.response_chunk) % 256))

    def _get_response(self, command: apdu.CommandApdu) -> bytes:
        if (command.p1, command.p2) != (0x00, 0x00):
            return _sw(apdu.SW_WRONG_P1P2)
        if not self.pending_response:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        available = min(len(self.pending_response), self.quirks.response_chunk or apdu.MAX_SHORT_LE)
        if command.le != available:
            return bytes((apdu.SW1_WRONG_LE, available % 256))
        part, self.pending_response = self.pending_response[:available], self.pending_response[available:]
        return part + (self._announce_pending() if self.pending_response else _sw(apdu.SW_OK))

    def _select(self, command: apdu.CommandApdu) -> bytes:
        if (command.p1, command.p2) == (0x04, 0x0C):
            if command.data != apdu.JPKI_AID:
                return _sw(apdu.SW_FILE_NOT_FOUND)
            self.reset()
            self.applet_selected = True
            return _sw(apdu.SW_OK)
        if (command.p1, command.p2) == (0x02, 0x0C):
            if len(command.data) != 2:
                return _sw(apdu.SW_WRONG_LENGTH)
            file_id = int.from_bytes(command.data, "big")
            known = file_id in self.files or file_id in self.secrets or file_id in self.keys
            if not self.applet_selected or not known:
                return _sw(apdu.SW_FILE_NOT_FOUND)
            self.selected_ef = file_id
            return _sw(apdu.SW_OK)
        return _sw(apdu.SW_WRONG_P1P2)

    def _verify(self, command: apdu.CommandApdu) -> bytes:
        if (command.p1, command.p2) != (0x00, 0x80):
            return _sw(apdu.SW_WRONG_P1P2)
        secret = self.secrets.get(self.selected_ef) if self.selected_ef is not None else None
        if secret is None:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        if not command.data:
            return _sw(0x63C0 | secret.tries_left)
        if secret.tries_left == 0:
            return _sw(apdu.SW_REFERENCE_DATA_UNUSABLE)
        if command.data == secret.value:
            secret.tries_left = secret.max_tries
            secret.verified = True
            return _sw(apdu.SW_OK)
        secret.tries_left -= 1
        secret.verified = False
        return _sw(0x63C0 | secret.tries_left)

    def _read_binary(self, command: apdu.CommandApdu) -> bytes:
        if self.selected_ef not in self.files:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        if self.selected_ef == apdu.EF_SIGN_CERT and not self.secrets[apdu.EF_SIGN_PASSWORD].verified:
            return _sw(apdu.SW_SECURITY_NOT_SATISFIED)
        if command.p1 & 0x80:
            return _sw(apdu.SW_WRONG_P1P2)
        content = self.files[self.selected_ef]
        offset = (command.p1 << 8) | command.p2
        if offset >= len(content):
            return _sw(apdu.SW_WRONG_OFFSET)
        asked = command.le or apdu.MAX_SHORT_LE
        left = len(content) - offset
        if self.quirks.exact_le is not None and asked != min(self.quirks.exact_le, left):
            return bytes((apdu.SW1_WRONG_LE, min(self.quirks.exact_le, left) % 256))
        chunk = content[offset : offset + asked]
        if self.quirks.short_read is not None and len(chunk) > self.quirks.short_read:
            return chunk[: self.quirks.short_read] + _sw(apdu.SW_OK)
        status = apdu.SW_OK if len(chunk) == asked else apdu.SW_END_OF_FILE
        return chunk + status.to_bytes(2, "big")

    def _compute_signature(self, command: apdu.CommandApdu) -> bytes:
        if (command.p1, command.p2) != (0x00, 0x80):
            return _sw(apdu.SW_WRONG_P1P2)
        key = self.keys.get(self.selected_ef) if self.selected_ef is not None else None
        if key is None:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        if not self.secrets[key.secret_ef].verified:
            return _sw(apdu.SW_SECURITY_NOT_SATISFIED)
        for prefix, algorithm in DIGEST_INFO_PREFIXES.items():
            digest = command.data[len(prefix) :]
            if command.data.startswith(prefix) and len(digest) == algorithm.digest_size:
                signature = key.private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
                return signature + _sw(apdu.SW_OK)
        return _sw(apdu.SW_WRONG_DATA)


def is_verify_with_secret(raw: bytes) -> bool:
    """A VERIFY (INS 20) command APDU with data: one that presents a PIN or password."""
    try:
        command = apdu.CommandApdu.parse(raw)
    except ValueError:
        return False
    return command.ins == 0x20 and bool(command.data)


def _sw(status: int) -> bytes:
    return status.to_bytes(2, "big")
