"""Fixtures for card tests: a test CA, a private pcscd with vpcd, and the PN532 emulator.

The session's pcscd (one per machine, shared with the booth tests) is in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from appliance.card import AuthMode, JpkiAuthenticator
from appliance.card.authenticator import PROFILES
from appliance.card.testca import CardFile, TestCa
from appliance.drivers.pcsc import PcscTransport
from appliance.drivers.pn532.base import Pn532Settings
from appliance.drivers.pn532.uart import Pn532Uart
from appliance.simulators.jpki_card import CardWithdrawn, SimulatedCard, VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532

ROLL_SALT = bytes.fromhex("5a17" * 16)
PN532_TEST_SETTINGS = Pn532Settings(command_timeout=0.5, exchange_timeout=2.0, poll_interval=0.05)


@dataclass(frozen=True)
class Cards:
    ca: TestCa
    good: CardFile
    revoked: CardFile
    expired: CardFile
    foreign: CardFile  # same CA name, different CA key
    cloned: CardFile  # good's certificates, fresh keys


@pytest.fixture(scope="session")
def cards(tmp_path_factory: pytest.TempPathFactory) -> Cards:
    ca = TestCa.create(tmp_path_factory.mktemp("ca"))
    good = ca.issue_card(pin="1234", password="PASS2024")
    revoked = ca.issue_card(pin="1234", password="PASS2024")
    ca.revoke(revoked.card_id)
    now = datetime.now(UTC)
    expired = ca.issue_card(
        pin="1234",
        password="PASS2024",
        not_before=now - timedelta(days=5 * 365),
        not_after=now - timedelta(days=1),
    )
    foreign_ca = TestCa.create(tmp_path_factory.mktemp("foreign-ca"))
    foreign = foreign_ca.issue_card(pin="1234", password="PASS2024")
    return Cards(ca, good, revoked, expired, foreign, good.cloned())


def authenticator(cards: Cards, transport, mode: AuthMode) -> JpkiAuthenticator:
    return JpkiAuthenticator(transport, mode, cards.ca.trust_store(mode), ROLL_SALT)


class ScriptedCard:
    """A virtual card whose answers to chosen commands are replaced.

    `replace(command)` returns the response to send instead, None to let the real card
    answer, or raises CardWithdrawn to pull the card out of the field.
    """

    def __init__(self, card: SimulatedCard, replace: Callable[[bytes], bytes | None]) -> None:
        self._card = card
        self._replace = replace
        self.commands: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return self._card.atr

    @property
    def atqb(self) -> bytes:
        return self._card.atqb

    def reset(self) -> None:
        self._card.reset()

    def process(self, raw: bytes) -> bytes:
        self.commands.append(raw)
        replacement = self._replace(raw)
        return self._card.process(raw) if replacement is None else replacement


OK = b"\x90\x00"


class ScriptedTransport:
    """Answers each command with the next scripted response (or a function of the command)."""

    def __init__(self, *answers: bytes | Callable[[bytes], bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []

    def transmit(self, command: bytes) -> bytes:
        self.sent.append(command)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(command) if callable(answer) else answer

    def card_present(self) -> bool:
        return True

    def release(self) -> None:
        pass


class DirectTransport:
    """The virtual card called in-process, recording every command."""

    def __init__(self, card: VirtualJpkiCard) -> None:
        self.card = card
        self.sent: list[bytes] = []

    def transmit(self, command: bytes) -> bytes:
        self.sent.append(command)
        return self.card.process(command)

    def card_present(self) -> bool:
        return True

    def release(self) -> None:
        pass


def withdraw() -> bytes:
    raise CardWithdrawn()


Connect = Callable[[SimulatedCard], object]


@pytest.fixture
def pcsc_connect(pcscd: Any, card_slot: Any) -> Iterator[Connect]:
    transports: list[PcscTransport] = []

    def connect(card: SimulatedCard) -> PcscTransport:
        transport = PcscTransport(pcscd.reader)
        transports.append(transport)
        card_slot.insert(card)
        assert transport.wait_for_card(5), "pcscd did not see the virtual card"
        return transport

    try:
        yield connect
    finally:
        card_slot.empty()
        for transport in transports:
            transport.close()


@dataclass
class Pn532Rig:
    emulator: Pn532Emulator
    reader: Pn532Uart


@pytest.fixture
def pn532_rig() -> Iterator[Callable[..., Pn532Rig]]:
    opened: list[tuple[PtyPn532, Pn532Uart | None]] = []

    def start(card: SimulatedCard | None, **emulator_options) -> Pn532Rig:
        emulator = Pn532Emulator(card, **emulator_options)
        pty = PtyPn532(emulator)
        opened.append((pty, None))
        reader = Pn532Uart(pty.port, 115200, settings=PN532_TEST_SETTINGS)
        opened[-1] = (pty, reader)
        return Pn532Rig(emulator, reader)

    yield start
    for pty, reader in opened:
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()
        pty.close()


@pytest.fixture
def pn532_connect(pn532_rig: Callable[..., Pn532Rig]) -> Connect:
    def connect(card: SimulatedCard) -> Pn532Uart:
        rig = pn532_rig(card)
        assert rig.reader.wait_for_card(2), "the PN532 emulator did not activate the card"
        return rig.reader

    return connect


@pytest.fixture(params=["pcsc", "pn532"])
def connect(request: pytest.FixtureRequest) -> Connect:
    """Each test using this runs through both real stacks."""
    return request.getfixturevalue(f"{request.param}_connect")


@pytest.fixture
def virtual_card(cards: Cards) -> VirtualJpkiCard:
    return VirtualJpkiCard(cards.good)


# --- certificates built by hand, byte by byte ---------------------------------------------
#
# cryptography's builder refuses to make a malformed certificate, and its parser is lazy, so
# the malformed certificates a card could hold are assembled here as DER and signed with the
# test CA's real key: each gets past whatever check comes before its defect.

SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
OID_COMMON_NAME = bytes.fromhex("0603550403")


def der(tag: int, body: bytes) -> bytes:
    """One DER TLV (definite length, up to 64 KiB)."""
    if len(body) < 0x80:
        length = bytes((len(body),))
    elif len(body) < 0x100:
        length = b"\x81" + bytes((len(body),))
    else:
        length = b"\x82" + len(body).to_bytes(2, "big")
    return bytes((tag,)) + length + body


def der_sequence(*parts: bytes) -> bytes:
    return der(0x30, b"".join(parts))


def der_integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8 if value >= 0 else ((-value - 1).bit_length() + 8) // 8)
    return der(0x02, value.to_bytes(size, "big", signed=True))


def der_name_cn(string_tag: int, raw: bytes) -> bytes:
    """A Name with one CN attribute whose value is ``raw`` under ``string_tag`` (not checked)."""
    return der_sequence(der(0x31, der_sequence(OID_COMMON_NAME, der(string_tag, raw))))


def der_validity(not_before: bytes = b"200101000000Z", not_after: bytes = b"491231235959Z") -> bytes:
    return der_sequence(der(0x17, not_before), der(0x17, not_after))


@dataclass(frozen=True)
class Forge:
    """Builds card certificates from parts; every part defaults to what a good card has."""

    ca: TestCa
    card: CardFile
    mode: AuthMode = AuthMode.AUTH

    def certificate(
        self,
        *,
        version: int | None = 2,
        serial: int = 0x1234_5678,
        issuer: bytes | None = None,
        validity: bytes | None = None,
        subject: bytes | None = None,
        spki: bytes | None = None,
        signature_algorithm: bytes = SHA256_WITH_RSA,
        extensions: bytes = b"",
    ) -> bytes:
        """The DER certificate; ``extensions`` is the DER of the Extensions SEQUENCE, if any."""
        issuer_name = self.ca.ca_certificate(self.mode).subject.public_bytes()
        key_info = (
            self.card.credential(self.mode)
            .private_key.public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        tbs = der_sequence(
            der(0xA0, der_integer(version)) if version is not None else b"",
            der_integer(serial),
            signature_algorithm,
            issuer if issuer is not None else issuer_name,
            validity if validity is not None else der_validity(),
            subject if subject is not None else der_name_cn(0x0C, b"FORGED-TEST-CARD"),
            spki if spki is not None else key_info,
            der(0xA3, extensions) if extensions else b"",
        )
        signature = self.ca.ca_private_key(self.mode).sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        return der_sequence(tbs, signature_algorithm, der(0x03, b"\x00" + signature))

    def on_card(self, certificate: bytes) -> VirtualJpkiCard:
        """A virtual copy of the forge's card holding ``certificate`` in this mode's EF."""
        card = VirtualJpkiCard(self.card)
        card.files[PROFILES[self.mode].certificate_ef] = certificate
        return card


def malformed_certificates(forge: Forge) -> dict[str, bytes]:
    """Every kind of certificate a card could hold that the card module must call invalid."""
    good = forge.certificate()
    ec_spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    small_rsa = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    basic_constraints = der_sequence(bytes.fromhex("0603551d13"), der(0x04, der_sequence()))
    broken_key_usage = der_sequence(bytes.fromhex("0603551d0f"), der(0x04, b"\x03\x09\x00"))
    rsa_oid = der_sequence(bytes.fromhex("06092a864886f70d010101"), b"\x05\x00")
    inner = good[4 : len(good) // 2]
    return {
        "undecodable-utf8-issuer": forge.certificate(issuer=der_name_cn(0x0C, b"JPKI \xff\xfe")),
        "odd-length-bmp-issuer": forge.certificate(issuer=der_name_cn(0x1E, b"\x00J\x00")),
        "bad-printable-issuer": forge.certificate(issuer=der_name_cn(0x13, b"JPKI@*")),
        "undecodable-subject": forge.certificate(subject=der_name_cn(0x0C, b"\xc3\x28")),
        "duplicate-extension": forge.certificate(extensions=der_sequence(basic_constraints, basic_constraints)),
        "malformed-extension": forge.certificate(extensions=der_sequence(broken_key_usage)),
        "version-4": forge.certificate(version=3),
        "version-1": forge.certificate(version=None),
        "negative-version": forge.certificate(version=-1),
        "negative-serial": forge.certificate(serial=-0x1234),
        "zero-serial": forge.certificate(serial=0),
        "bad-utctime": forge.certificate(validity=der_validity(not_before=b"2001a1000000Z")),
        "malformed-key": forge.certificate(spki=der_sequence(rsa_oid, der(0x03, b"\x00\x30\x00"))),
        "ec-key": forge.certificate(spki=ec_spki),
        "rsa-1024-key": forge.certificate(spki=small_rsa),
        "unknown-signature-algorithm": forge.certificate(signature_algorithm=der_sequence(b"\x06\x03\x2a\x03\x04")),
        "truncated-file": good[: len(good) // 2],
        "truncated-inside": der_sequence(inner),
        "garbage": der_sequence(bytes((0x5A ^ i) & 0xFF for i in range(600))),
        "not-a-sequence": b"\x31\x82\x00\x10" + bytes(16),
        "indefinite-length": b"\x30\x80" + good[4:] + b"\x00\x00",
    }
