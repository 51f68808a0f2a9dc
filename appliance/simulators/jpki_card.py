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


@dataclass
class VirtualJpkiCard:
    """The card's state machine: feed it a command APDU, get the response APDU."""

    card: CardFile
    files: dict[int, bytes] = field(init=False)
    secrets: dict[int, _Secret] = field(init=False)
    keys: dict[int, _Key] = field(init=False)
    applet_selected: bool = field(init=False, default=False)
    selected_ef: int | None = field(init=False, default=None)

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
        for secret in self.secrets.values():
            secret.verified = False

    def process(self, raw: bytes) -> bytes:
        try:
            command = apdu.CommandApdu.parse(raw)
        except ValueError:
            return _sw(apdu.SW_WRONG_LENGTH)
        handler = {
            (0x00, 0xA4): self._select,
            (0x00, 0x20): self._verify,
            (0x00, 0xB0): self._read_binary,
            (0x80, 0x2A): self._compute_signature,
        }.get((command.cla, command.ins))
        if handler is None:
            known_ins = command.ins in (0xA4, 0x20, 0xB0, 0x2A)
            return _sw(apdu.SW_CLA_NOT_SUPPORTED if known_ins else apdu.SW_INS_NOT_SUPPORTED)
        return handler(command)

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
        chunk = content[offset : offset + (command.le or 256)]
        status = apdu.SW_OK if len(chunk) == (command.le or 256) else apdu.SW_END_OF_FILE
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


def _sw(status: int) -> bytes:
    return status.to_bytes(2, "big")
