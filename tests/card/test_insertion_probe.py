"""The checks at card insertion (JpkiAuthenticator.probe), before any PIN, through both real
stacks (pcscd + vpcd, and the PN532 emulator): a revoked, expired, foreign or locked card, or
a stale CRL, is refused with its own error, and the card never receives a VERIFY with a secret.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from card_fixtures import Cards, Connect, DirectTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from appliance.card import (
    AuthMode,
    CardLocked,
    CardRevoked,
    CertificateExpired,
    JpkiAuthenticator,
    RevocationListStale,
    TrustStore,
    UnknownIssuer,
    apdu,
)
from appliance.card.testca import CardFile
from appliance.simulators.jpki_card import VirtualJpkiCard


def stale_trust(cards: Cards, mode: AuthMode, *, last: timedelta, next_: timedelta) -> TrustStore:
    """The test CA's trust store with a CRL dated now + ``last`` … now + ``next_``."""
    now = datetime.now(UTC)
    ca = cards.ca.ca_certificate(mode)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now + last)
        .next_update(now + next_)
        .sign(cards.ca.ca_private_key(mode), hashes.SHA256())
    )
    return TrustStore((ca,), (crl,))


def recording(card: CardFile, locked: bool = False) -> VirtualJpkiCard:
    virtual = VirtualJpkiCard(card, record=True)
    if locked:
        virtual.secrets[apdu.EF_AUTH_PIN].tries_left = 0
    return virtual


def test_a_good_card_passes_with_its_tries_left_and_no_try_spent(cards: Cards, connect: Connect) -> None:
    card = recording(cards.good)
    card.secrets[apdu.EF_AUTH_PIN].tries_left = 2
    status = JpkiAuthenticator(connect(card), AuthMode.AUTH, cards.ca.trust_store(AuthMode.AUTH)).probe()
    assert (status.tries_left, status.max_tries) == (2, 3)
    assert card.secrets[apdu.EF_AUTH_PIN].tries_left == 2
    assert card.secrets_presented() == []
    assert any(raw[:2] == b"\x00\x20" for raw in card.commands), "the empty VERIFY was sent"


@pytest.mark.parametrize(
    ("which", "error"),
    [("revoked", CardRevoked), ("expired", CertificateExpired), ("foreign", UnknownIssuer), ("locked", CardLocked)],
)
def test_a_card_that_cannot_vote_is_refused_before_any_pin(cards: Cards, connect: Connect, which: str, error) -> None:
    card = recording(cards.good, locked=True) if which == "locked" else recording(getattr(cards, which))
    with pytest.raises(error):
        JpkiAuthenticator(connect(card), AuthMode.AUTH, cards.ca.trust_store(AuthMode.AUTH)).probe()
    assert card.secrets_presented() == [], "a PIN reached the card"
    if which != "locked":
        assert not any(raw[:2] == b"\x00\x20" for raw in card.commands), "a refused certificate goes no further"


@pytest.mark.parametrize(
    ("last", "next_"),
    [(timedelta(days=-40), timedelta(days=-10)), (timedelta(days=1), timedelta(days=30))],
    ids=["past-next-update", "not-yet-valid"],
)
@pytest.mark.parametrize("mode", list(AuthMode))
def test_a_stale_crl_refuses_every_card_before_any_pin(cards: Cards, mode: AuthMode, last, next_) -> None:
    card = recording(cards.good)
    trust = stale_trust(cards, mode, last=last, next_=next_)
    with pytest.raises(RevocationListStale):
        JpkiAuthenticator(DirectTransport(card), mode, trust).probe()
    assert card.secrets_presented() == []
    with pytest.raises(RevocationListStale):  # after the PIN too (sign mode learns the issuer there)
        JpkiAuthenticator(DirectTransport(card), mode, trust).authenticate(
            "1234" if mode is AuthMode.AUTH else "PASS2024"
        )


def test_a_fresh_crl_among_stale_ones_is_the_one_used(cards: Cards) -> None:
    stale = stale_trust(cards, AuthMode.AUTH, last=timedelta(days=-40), next_=timedelta(days=-10))
    fresh = cards.ca.trust_store(AuthMode.AUTH)
    trust = TrustStore(fresh.anchors, stale.crls + fresh.crls)
    status = JpkiAuthenticator(DirectTransport(recording(cards.good)), AuthMode.AUTH, trust).probe()
    assert status.tries_left == 3
