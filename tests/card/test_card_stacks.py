"""Full JPKI authentication through both real stacks, and every refusal a voter can meet.

Stacks: pyscard -> pcscd -> vsmartcard-vpcd -> virtual card, and the adafruit PN532 driver
(extended here) -> pty -> PN532 emulator -> virtual card.
"""

from __future__ import annotations

import pytest
from card_fixtures import ROLL_SALT, Cards, Connect, ScriptedCard, authenticator, withdraw
from cryptography import x509

from appliance.card import (
    AuthMode,
    BadCardSignature,
    CardLocked,
    CardProtocolError,
    CardRemoved,
    CardRevoked,
    CertificateExpired,
    UnknownIssuer,
    WrongPin,
    card_handle,
)
from appliance.card.apdu import EF_AUTH_PIN, EF_SIGN_PASSWORD
from appliance.card.authenticator import PROFILES
from appliance.simulators.jpki_card import VirtualJpkiCard

pytestmark = pytest.mark.timeout(60)
MODES = [AuthMode.AUTH, AuthMode.SIGN]
WRONG = {AuthMode.AUTH: "9999", AuthMode.SIGN: "WRONG999"}
SECRET_EF = {AuthMode.AUTH: EF_AUTH_PIN, AuthMode.SIGN: EF_SIGN_PASSWORD}


def secret_of(card, mode: AuthMode) -> str:
    return card.credential(mode).secret


@pytest.mark.parametrize("mode", MODES)
def test_correct_secret_yields_the_cards_voter_key_from_the_roll(cards: Cards, connect: Connect, mode: AuthMode):
    transport = connect(VirtualJpkiCard(cards.good))
    flow = authenticator(cards, transport, mode)
    assert flow.tries_left() == PROFILES[mode].max_tries
    voter = flow.authenticate(secret_of(cards.good, mode))
    assert voter.card_handle == handle_of(cards.good.credential(mode).certificate)
    assert voter.card_handle not in cards.ca.roll(ROLL_SALT, mode)["voter_keys"], "no voter key at the booth"


@pytest.mark.parametrize("mode", MODES)
def test_wrong_secret_reports_tries_left_and_a_right_one_restores_them(cards: Cards, connect: Connect, mode: AuthMode):
    transport = connect(VirtualJpkiCard(cards.good))
    flow = authenticator(cards, transport, mode)
    limit = PROFILES[mode].max_tries
    for expected_left in (limit - 1, limit - 2):
        with pytest.raises(WrongPin) as refused:
            flow.authenticate(WRONG[mode])
        assert refused.value.tries_left == expected_left
        assert flow.tries_left() == expected_left
    flow.authenticate(secret_of(cards.good, mode))
    assert flow.tries_left() == limit


@pytest.mark.parametrize("mode", MODES)
def test_card_locks_at_its_limit_and_a_locked_card_is_refused(cards: Cards, connect: Connect, mode: AuthMode):
    card = VirtualJpkiCard(cards.good)
    flow = authenticator(cards, connect(card), mode)
    limit = PROFILES[mode].max_tries
    for _ in range(limit - 1):
        with pytest.raises(WrongPin):
            flow.authenticate(WRONG[mode])
    with pytest.raises(CardLocked):
        flow.authenticate(WRONG[mode])
    with pytest.raises(CardLocked):
        flow.tries_left()
    with pytest.raises(CardLocked):
        flow.authenticate(secret_of(cards.good, mode))
    assert card.secrets[SECRET_EF[mode]].tries_left == 0


@pytest.mark.parametrize(
    ("which", "error"),
    [("revoked", CardRevoked), ("expired", CertificateExpired), ("foreign", UnknownIssuer)],
)
@pytest.mark.parametrize("mode", MODES)
def test_untrusted_certificates_are_refused(
    cards: Cards, connect: Connect, mode: AuthMode, which: str, error: type[Exception]
):
    issued = getattr(cards, which)
    card = VirtualJpkiCard(issued)
    flow = authenticator(cards, connect(card), mode)
    with pytest.raises(error):
        flow.authenticate(secret_of(issued, mode))
    if mode is AuthMode.AUTH:  # refused before the PIN was sent: no try spent
        assert card.secrets[EF_AUTH_PIN].tries_left == PROFILES[mode].max_tries
        assert not card.secrets[EF_AUTH_PIN].verified


@pytest.mark.parametrize("mode", MODES)
def test_cloned_certificate_on_a_card_with_another_key_is_refused(cards: Cards, connect: Connect, mode: AuthMode):
    flow = authenticator(cards, connect(VirtualJpkiCard(cards.cloned)), mode)
    with pytest.raises(BadCardSignature):
        flow.authenticate(secret_of(cards.cloned, mode))


def test_card_removed_while_signing_is_reported_as_removed(cards: Cards, connect: Connect):
    card = ScriptedCard(VirtualJpkiCard(cards.good), lambda apdu: withdraw() if apdu[1] == 0x2A else None)
    flow = authenticator(cards, connect(card), AuthMode.AUTH)
    with pytest.raises(CardRemoved):
        flow.authenticate(secret_of(cards.good, AuthMode.AUTH))


def test_card_removed_before_the_flow_is_reported_as_removed(cards: Cards, connect: Connect):
    card = ScriptedCard(VirtualJpkiCard(cards.good), lambda apdu: withdraw())
    flow = authenticator(cards, connect(card), AuthMode.AUTH)
    with pytest.raises(CardRemoved):
        flow.tries_left()


READ_BINARY, SELECT = 0xB0, 0xA4
OVERSIZED_RESPONSE = b"\x30\x82\x06" + bytes(597) + b"\x90\x00"


def replace_ins(ins: int, response: bytes):
    return lambda apdu: response if apdu[1] == ins else None


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        pytest.param(replace_ins(READ_BINARY, b"\x12\x34\x56"), "invalid status word", id="garbage"),
        pytest.param(replace_ins(READ_BINARY, b"\x90"), "too short", id="one-byte"),
        pytest.param(replace_ins(READ_BINARY, OVERSIZED_RESPONSE), "longer than any", id="oversized"),
        pytest.param(replace_ins(READ_BINARY, b"\x90\x00"), "no data", id="empty-read"),
        # A legal short read, but the same two bytes at every offset: the header read on is huge.
        pytest.param(replace_ins(READ_BINARY, b"\x30\x82\x90\x00"), "more than any card", id="stuck-short-read"),
        pytest.param(replace_ins(READ_BINARY, b"\x6c\x02"), "6Cxx again", id="6cxx-forever"),
        pytest.param(lambda apdu: b"\x61\x10" if apdu[1] in (READ_BINARY, 0xC0) else None, "kept answering 61xx",
                     id="61xx-forever"),
        pytest.param(replace_ins(READ_BINARY, b"\x30\x84\x00\x00\x90\x00"), "DER length", id="bad-der"),
        pytest.param(replace_ins(READ_BINARY, b"\x30\x82\xff\xff\x90\x00"), "more than any card", id="huge-der"),
        pytest.param(replace_ins(SELECT, b"\x6a\x82"), "not a My Number card", id="not-jpki"),
    ],
)  # fmt: skip
def test_malformed_card_responses_give_a_clear_protocol_error(cards: Cards, connect: Connect, replace, reason: str):
    flow = authenticator(cards, connect(ScriptedCard(VirtualJpkiCard(cards.good), replace)), "auth")
    with pytest.raises(CardProtocolError, match=reason):
        flow.authenticate("1234")


def test_pcsc_reports_the_card_present_until_it_is_pulled(cards: Cards, pcscd, card_slot) -> None:
    from appliance.drivers.pcsc import PcscTransport

    transport = PcscTransport(pcscd.reader)
    try:
        link = card_slot.insert(VirtualJpkiCard(cards.good))
        assert transport.wait_for_card(5)
        assert transport.card_present()
        card_slot.remove(link)
        assert not transport.card_present()
    finally:
        transport.close()


def handle_of(certificate: x509.Certificate) -> str:
    return card_handle(certificate.issuer.public_bytes(), certificate.serial_number)
