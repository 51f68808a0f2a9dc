"""An official's card in a PC/SC reader on the hub (the operator's console), through pyscard.

The card speaks the JPKI applet profile (docs/card-protocol.md): SELECT the applet by AID,
read the certificate from EF 000A, VERIFY the 4-digit PIN against EF 0018 (the card counts
the tries), and COMPUTE DIGITAL SIGNATURE with the key in EF 0017 over a SHA-256 DigestInfo.
A station-CA-issued official's card and a virtual one (vpcd) answer the same way. This is a
small client for the hub alone (the booth's JPKI stack lives in appliance/, which the hub does
not import); every loop is bounded and every failure is an :class:`OfficialCardError`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

JPKI_AID = bytes.fromhex("D392F000260100000001")
EF_AUTH_CERT, EF_AUTH_KEY, EF_AUTH_PIN = 0x000A, 0x0017, 0x0018
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
LOCKED = frozenset({0x63C0, 0x6983, 0x6984})
READ_CHUNK = 0xF0
MAX_CERTIFICATE = 4096
MAX_ROUNDS = 32
SERVICE_RETRY_S = 10.0
"""How long to keep retrying while pcscd answers "Service not available" (it is restarting)."""


class OfficialCardError(Exception):
    """The card could not be used; the message tells the official what to do."""


class WrongOfficialPin(OfficialCardError):
    def __init__(self, label: str, tries_left: int) -> None:
        super().__init__(f"{label} refused the PIN: {tries_left} tries left")
        self.tries_left = tries_left


class PcscOfficialCard:
    """One official's card in ``reader``; :meth:`unlock` with the PIN, then :meth:`sign`.

    ``expected``: the function the console asks this card for (``station_manager`` or
    ``witness``); a card of another role is refused here already (the ledger checks it too).
    """

    def __init__(self, reader: str, expected: str | None = None, *, wait: float = 30.0) -> None:
        from smartcard import scard  # only a console with a reader needs pyscard

        self._scard = scard
        self.reader = reader
        self.expected = expected
        self._context = self._establish()
        self._card: int | None = None
        try:
            self._wait_for_card(wait)
            self._connect()
            self._apdu(b"\x00\xa4\x04\x0c" + bytes((len(JPKI_AID),)) + JPKI_AID, "select the card's applet")
            self._certificate_der = self._read_certificate()
            self._certificate = x509.load_der_x509_certificate(self._certificate_der)
        except BaseException:
            self.close()
            raise
        if expected is not None and self.function != expected:
            self.close()
            raise OfficialCardError(f"the card in {reader!r} is a {self.function or 'non-official'} card, not the "
                                    f"{expected.replace('_', ' ')}'s")  # fmt: skip

    @property
    def label(self) -> str:
        return f"the {(self.expected or self.function).replace('_', ' ')}'s card"

    @property
    def function(self) -> str:
        units = self._certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        return str(units[0].value) if units else ""

    @property
    def certificate_der(self) -> bytes:
        return self._certificate_der

    def tries_left(self) -> int:
        self._apdu(_select_ef(EF_AUTH_PIN), "select the PIN")
        sw = self._transmit(b"\x00\x20\x00\x80")[1]
        if sw in LOCKED:
            raise OfficialCardError(f"{self.label} is locked (no PIN tries left)")
        return sw & 0x0F if sw & 0xFFF0 == 0x63C0 else 3

    def unlock(self, pin: str) -> None:
        if not (len(pin) == 4 and pin.isdigit()):
            raise OfficialCardError("the card PIN is 4 digits")
        self.tries_left()  # a locked card is never sent the PIN
        _, sw = self._transmit(b"\x00\x20\x00\x80" + bytes((len(pin),)) + pin.encode("ascii"))
        if sw == 0x9000:
            return
        if sw in LOCKED:
            raise OfficialCardError(f"{self.label} is now locked (no PIN tries left)")
        if sw & 0xFFF0 == 0x63C0:
            raise WrongOfficialPin(self.label, sw & 0x0F)
        raise OfficialCardError(f"{self.label} answered VERIFY with {sw:04X}")

    def sign(self, message: bytes) -> bytes:
        self._apdu(_select_ef(EF_AUTH_KEY), "select its key")
        data = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        signature = self._apdu(b"\x80\x2a\x00\x80" + bytes((len(data),)) + data + b"\x00", "sign (PIN verified?)")
        key = self._certificate.public_key()
        try:
            if not isinstance(key, rsa.RSAPublicKey):
                raise InvalidSignature()
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise OfficialCardError(f"{self.label}'s signature does not match its certificate") from None
        return signature

    def close(self) -> None:
        scard = self._scard
        if self._card is not None:
            scard.SCardDisconnect(self._card, scard.SCARD_RESET_CARD)
            self._card = None
        if self._context is not None:
            scard.SCardReleaseContext(self._context)
            self._context = None

    def __enter__(self) -> PcscOfficialCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- PC/SC -----------------------------------------------------------------------------

    def _establish(self) -> int:
        scard = self._scard
        deadline = time.monotonic() + SERVICE_RETRY_S
        while True:
            code, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if code == scard.SCARD_S_SUCCESS:
                return context
            if time.monotonic() > deadline:
                raise OfficialCardError(f"PC/SC not available: {scard.SCardGetErrorMessage(code)}")
            time.sleep(0.5)

    def _wait_for_card(self, timeout: float) -> None:
        scard = self._scard
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            code, states = scard.SCardGetStatusChange(self._context, remaining, [(self.reader, state)])
            if code == scard.SCARD_E_TIMEOUT:
                raise OfficialCardError(f"no card in reader {self.reader!r} within {timeout:.0f} s")
            if code != scard.SCARD_S_SUCCESS:
                raise OfficialCardError(f"reader {self.reader!r}: {scard.SCardGetErrorMessage(code)}")
            state = states[0][1]
            if state & scard.SCARD_STATE_UNKNOWN:
                raise OfficialCardError(f"no reader {self.reader!r}")
            if state & scard.SCARD_STATE_PRESENT and not state & scard.SCARD_STATE_MUTE:
                return
            if time.monotonic() >= deadline:
                raise OfficialCardError(f"no card in reader {self.reader!r} within {timeout:.0f} s")

    def _connect(self) -> None:
        scard = self._scard
        code, card, protocol = scard.SCardConnect(self._context, self.reader, scard.SCARD_SHARE_EXCLUSIVE,
                                                  scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)  # fmt: skip
        if code != scard.SCARD_S_SUCCESS:
            raise OfficialCardError(f"cannot connect to the card in {self.reader!r}: "
                                    f"{scard.SCardGetErrorMessage(code)}")  # fmt: skip
        self._card, self._protocol = card, protocol

    def _transmit(self, command: bytes) -> tuple[bytes, int]:
        """One command's whole answer: ``61xx`` collected with GET RESPONSE, ``6Cxx`` re-sent."""
        data, sw = self._raw(command)
        if sw >> 8 == 0x6C:
            data, sw = self._raw(command[:-1] + bytes((sw & 0xFF,)) if len(command) > 4 else command)
        rounds = 0
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > MAX_ROUNDS or len(data) > MAX_CERTIFICATE:
                raise OfficialCardError(f"{self.label} keeps answering 61xx")
            more, sw = self._raw(b"\x00\xc0\x00\x00" + bytes((sw & 0xFF,)))
            data += more
        return data, sw

    def _raw(self, command: bytes) -> tuple[bytes, int]:
        scard = self._scard
        code, response = scard.SCardTransmit(self._card, self._protocol, list(command))
        if code != scard.SCARD_S_SUCCESS or len(response) < 2:
            raise OfficialCardError(f"the card in {self.reader!r} was removed or did not answer")
        return bytes(response[:-2]), (response[-2] << 8) | response[-1]

    def _apdu(self, command: bytes, purpose: str) -> bytes:
        data, sw = self._transmit(command)
        if sw != 0x9000:
            raise OfficialCardError(f"the card in {self.reader!r} refused to {purpose} ({sw:04X}): "
                                    "not an official's card?")  # fmt: skip
        return data

    def _read_certificate(self) -> bytes:
        self._apdu(_select_ef(EF_AUTH_CERT), "select its certificate")
        content = bytearray()
        total = 4
        for _ in range(MAX_ROUNDS):
            if len(content) >= total:
                return bytes(content[:total])
            offset = len(content)
            size = min(READ_CHUNK, total - offset)
            chunk, sw = self._transmit(b"\x00\xb0" + offset.to_bytes(2, "big") + bytes((size,)))
            if sw not in (0x9000, 0x6282) or not chunk:
                raise OfficialCardError(f"the card in {self.reader!r} refused to read its certificate ({sw:04X})")
            content += chunk
            if total == 4 and len(content) >= 4:
                total = _der_length(bytes(content[:4]))
        raise OfficialCardError(f"the card in {self.reader!r} needed too many reads for its certificate")


def _select_ef(file_id: int) -> bytes:
    return b"\x00\xa4\x02\x0c\x02" + file_id.to_bytes(2, "big")


def _der_length(head: bytes) -> int:
    if head[0] != 0x30:
        raise OfficialCardError("the card's certificate is not DER")
    if head[1] < 0x80:
        total = 2 + head[1]
    elif head[1] == 0x81:
        total = 3 + head[2]
    elif head[1] == 0x82:
        total = 4 + int.from_bytes(head[2:4], "big")
    else:
        raise OfficialCardError("the card's certificate has an unsupported length")
    if total > MAX_CERTIFICATE:
        raise OfficialCardError("the card's certificate is too large")
    return total


def cards_in_readers(readers: list[str], pins: Callable[[str], str], *, wait: float = 30.0) -> list[PcscOfficialCard]:
    """The station manager's card in ``readers[0]`` and the witness's in ``readers[1]``, each
    unlocked with ``pins(label)``; a wrong PIN raises WrongOfficialPin (nothing is signed)."""
    cards: list[PcscOfficialCard] = []
    try:
        for reader, function in zip(readers, ("station_manager", "witness"), strict=False):
            card = PcscOfficialCard(reader, function, wait=wait)
            cards.append(card)
            card.unlock(pins(card.label))
    except BaseException:
        for card in cards:
            card.close()
        raise
    return cards


def certificate_pem(card: PcscOfficialCard) -> bytes:
    return x509.load_der_x509_certificate(card.certificate_der).public_bytes(serialization.Encoding.PEM)


class OfficialInReader:
    """One reader for both officials, one after the other (as at a small station): every
    :meth:`sign` waits for this official's card, has its PIN typed, signs, and waits until the
    card is taken out again. ``insert`` (training, the demo) puts a virtual card in and returns
    how to take it out; without it the official is asked to (``prompt``)."""

    def __init__(self, reader: str, function: str, pin: Callable[[str], str], *,
                 insert: Callable[[], Callable[[], None]] | None = None,
                 prompt: Callable[[str], None] = lambda text: None, wait: float = 120.0) -> None:  # fmt: skip
        self.reader, self.function, self._pin, self._insert, self._prompt = reader, function, pin, insert, prompt
        self._wait = wait
        self._certificate_der: bytes | None = None

    @property
    def label(self) -> str:
        return f"the {self.function.replace('_', ' ')}'s card"

    @property
    def certificate_der(self) -> bytes:
        if self._certificate_der is None:
            raise OfficialCardError(f"{self.label} has not been read yet")
        return self._certificate_der

    def sign(self, message: bytes) -> bytes:
        remove = self._insert() if self._insert else None
        if remove is None:
            self._prompt(f"insert {self.label} into {self.reader}")
        try:
            with PcscOfficialCard(self.reader, self.function, wait=self._wait) as card:
                card.unlock(self._pin(self.label))
                signature = card.sign(message)
                self._certificate_der = card.certificate_der
        finally:
            if remove is not None:
                remove()
            else:
                self._prompt(f"take {self.label} out of {self.reader}")
        _wait_removed(self.reader, self._wait)
        return signature


def _wait_removed(reader: str, timeout: float) -> None:
    from smartcard import scard

    code, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if code != scard.SCARD_S_SUCCESS:
        return
    try:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while time.monotonic() < deadline:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            code, states = scard.SCardGetStatusChange(context, remaining, [(reader, state)])
            if code != scard.SCARD_S_SUCCESS:
                return
            state = states[0][1]
            if not state & scard.SCARD_STATE_PRESENT:
                return
    finally:
        scard.SCardReleaseContext(context)
