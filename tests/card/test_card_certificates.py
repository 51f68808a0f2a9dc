"""Malformed certificates (built by hand as DER) and the tries-left rules.

Every certificate a card could hold that the card module cannot use must end as a CardError
the booth shows as "card invalid" (CardProtocolError, or UnknownIssuer for a signature it
cannot check) — never ValueError, InvalidVersion or anything else, and never after the PIN
was spent in "auth" mode. cryptography parses lazily, so the tests go all the way through
authenticate(), which reads every field the booth uses.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import pytest
from card_fixtures import (
    Cards,
    Connect,
    DirectTransport,
    Forge,
    ScriptedTransport,
    authenticator,
    malformed_certificates,
)

from appliance.card import (
    AuthMode,
    CardError,
    CardLocked,
    CardProtocolError,
    UnknownIssuer,
    WrongPin,
    apdu,
    card_handle,
)
from appliance.card.authenticator import PROFILES
from appliance.card.trust import parse_card_certificate
from appliance.simulators.jpki_card import VirtualJpkiCard

pytestmark = pytest.mark.timeout(120)
EXPECTED: dict[str, type[CardError]] = {"unknown-signature-algorithm": UnknownIssuer}
"""Malformed certificates refused as something other than CardProtocolError (all show "card invalid")."""
MALFORMED = [
    "undecodable-utf8-issuer", "odd-length-bmp-issuer", "bad-printable-issuer", "undecodable-subject",
    "duplicate-extension", "malformed-extension", "version-4", "version-1", "negative-version",
    "negative-serial", "zero-serial", "bad-utctime", "malformed-key", "ec-key", "rsa-1024-key",
    "unknown-signature-algorithm", "truncated-file", "truncated-inside", "garbage", "not-a-sequence",
    "indefinite-length",
]  # fmt: skip


@pytest.fixture(scope="module")
def forged(cards: Cards) -> dict[AuthMode, dict[str, bytes]]:
    return {mode: malformed_certificates(Forge(cards.ca, cards.good, mode)) for mode in AuthMode}


def test_every_malformed_kind_is_tested(forged: dict[AuthMode, dict[str, bytes]]) -> None:
    assert sorted(forged[AuthMode.AUTH]) == sorted(MALFORMED)


def test_the_forge_makes_a_good_certificate_when_nothing_is_broken(cards: Cards) -> None:
    """The control: a hand-built certificate without a defect authenticates, so each refusal
    below is caused by its one defect and not by the forge."""
    for mode in AuthMode:
        forge = Forge(cards.ca, cards.good, mode)
        certificate = forge.certificate()
        voter = authenticator(cards, DirectTransport(forge.on_card(certificate)), mode).authenticate(
            cards.good.credential(mode).secret
        )
        parsed = parse_card_certificate(certificate)
        assert voter.card_handle == card_handle(parsed.issuer_der, 0x1234_5678)


@pytest.mark.parametrize("mode", list(AuthMode))
@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_certificate_is_card_invalid_never_another_exception(
    cards: Cards, forged: dict[AuthMode, dict[str, bytes]], kind: str, mode: AuthMode
) -> None:
    forge = Forge(cards.ca, cards.good, mode)
    card = forge.on_card(forged[mode][kind])
    flow = authenticator(cards, DirectTransport(card), mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a deprecation warning escapes
        with pytest.raises(CardError) as refused:
            flow.authenticate(cards.good.credential(mode).secret)
    assert type(refused.value) is EXPECTED.get(kind, CardProtocolError)
    secret = card.secrets[PROFILES[mode].secret_ef]
    if mode is AuthMode.AUTH:
        assert secret.tries_left == PROFILES[mode].max_tries and not secret.verified, "the PIN was sent"


@pytest.mark.parametrize("kind", MALFORMED)
def test_trust_store_check_refuses_each_malformed_certificate_as_a_card_error(
    cards: Cards, forged: dict[AuthMode, dict[str, bytes]], kind: str
) -> None:
    with pytest.raises(CardError):
        cards.ca.trust_store(AuthMode.AUTH).check(forged[AuthMode.AUTH][kind], datetime.now(UTC))


THE_ISSUES_CASES = ["undecodable-utf8-issuer", "version-4", "negative-serial", "truncated-file", "garbage"]


@pytest.mark.parametrize("kind", THE_ISSUES_CASES)
def test_malformed_certificates_through_the_real_stacks(
    cards: Cards, forged: dict[AuthMode, dict[str, bytes]], connect: Connect, kind: str
) -> None:
    """The issue's cases again, over pcscd + vpcd and the PN532 emulator."""
    card = Forge(cards.ca, cards.good).on_card(forged[AuthMode.AUTH][kind])
    flow = authenticator(cards, connect(card), AuthMode.AUTH)
    with pytest.raises(CardError) as refused:
        flow.authenticate("1234")
    assert type(refused.value) is CardProtocolError
    assert card.secrets[apdu.EF_AUTH_PIN].tries_left == 3


# --- tries left ---------------------------------------------------------------------------


def verify_answering(card: VirtualJpkiCard, status: bytes) -> ScriptedTransport:
    """The virtual card, except that every VERIFY is answered with ``status``."""
    return ScriptedTransport(lambda command: status if command[1] == 0x20 else card.process(command))


@pytest.mark.parametrize("mode", list(AuthMode))
def test_an_impossible_tries_count_is_clamped_to_the_modes_maximum(cards: Cards, mode: AuthMode) -> None:
    limit = PROFILES[mode].max_tries
    transport = verify_answering(VirtualJpkiCard(cards.good), b"\x63\xcf")
    flow = authenticator(cards, transport, mode)
    assert flow.tries_left() == limit
    with pytest.raises(WrongPin) as refused:
        flow.authenticate(cards.good.credential(mode).secret)
    assert refused.value.tries_left == limit
    assert "15" not in str(refused.value)


def test_a_possible_count_is_reported_as_is(cards: Cards) -> None:
    flow = authenticator(cards, verify_answering(VirtualJpkiCard(cards.good), b"\x63\xc2"), AuthMode.AUTH)
    assert flow.tries_left() == 2


@pytest.mark.parametrize("locked_status", [b"\x63\xc0", b"\x69\x83", b"\x69\x84"])
def test_a_locked_card_is_never_sent_the_pin_again(cards: Cards, locked_status: bytes) -> None:
    card = VirtualJpkiCard(cards.good)
    transport = verify_answering(card, locked_status)
    with pytest.raises(CardLocked):
        authenticator(cards, transport, AuthMode.AUTH).authenticate("1234")
    verifies = [command for command in transport.sent if command[1] == 0x20]
    assert verifies == [apdu.verify(None).encode()], "only the empty VERIFY may reach a locked card"


@pytest.mark.parametrize("mode", list(AuthMode))
def test_reinserting_a_card_locked_by_wrong_secrets_sends_no_secret(cards: Cards, mode: AuthMode) -> None:
    card = VirtualJpkiCard(cards.good)
    wrong = {AuthMode.AUTH: "9999", AuthMode.SIGN: "WRONG999"}[mode]
    for _ in range(PROFILES[mode].max_tries - 1):
        with pytest.raises(WrongPin):
            authenticator(cards, DirectTransport(card), mode).authenticate(wrong)
    with pytest.raises(CardLocked):
        authenticator(cards, DirectTransport(card), mode).authenticate(wrong)
    card.reset()  # taken out and put back
    again = DirectTransport(card)
    with pytest.raises(CardLocked):
        authenticator(cards, again, mode).authenticate(cards.good.credential(mode).secret)
    assert [c for c in again.sent if c[1] == 0x20] == [apdu.verify(None).encode()]


def test_an_already_verified_secret_answering_9000_reports_the_maximum(cards: Cards) -> None:
    flow = authenticator(cards, verify_answering(VirtualJpkiCard(cards.good), b"\x90\x00"), AuthMode.AUTH)
    assert flow.tries_left() == 3
