"""Cards that answer the legal ISO 7816-4 ways — short reads, 6Cxx, 61xx — authenticate
through both real stacks (pyscard → pcscd → vpcd, and the PN532 driver → pty → emulator).

The quirks are the virtual card's (appliance/simulators/jpki_card.py, CardQuirks); the
byte-level behaviour of the transport core is in test_card_channel.py.
"""

from __future__ import annotations

import pytest
from card_fixtures import Cards, Connect, ScriptedCard, authenticator
from cryptography import x509

from appliance.card import AuthMode, card_handle
from appliance.simulators.jpki_card import CardQuirks, VirtualJpkiCard

pytestmark = pytest.mark.timeout(90)
QUIRKS = {
    "short-reads": CardQuirks(short_read=61),
    "6Cxx": CardQuirks(exact_le=200),
    "61xx": CardQuirks(response_chunk=256),
    "61xx-parts": CardQuirks(response_chunk=120),
    "all-three": CardQuirks(short_read=90, exact_le=128, response_chunk=100),
}


@pytest.mark.parametrize("mode", list(AuthMode))
@pytest.mark.parametrize("quirks", list(QUIRKS.values()), ids=list(QUIRKS))
def test_quirky_card_authenticates_through_the_real_stack(
    cards: Cards, connect: Connect, quirks: CardQuirks, mode: AuthMode
) -> None:
    card = ScriptedCard(VirtualJpkiCard(cards.good, quirks), lambda command: None)
    flow = authenticator(cards, connect(card), mode)
    assert flow.tries_left() == flow.max_tries
    voter = flow.authenticate(cards.good.credential(mode).secret)
    assert voter.card_handle == handle_of(cards.good.credential(mode).certificate)
    instructions = [command[1] for command in card.commands]
    if quirks.response_chunk is not None:
        assert 0xC0 in instructions, "the card's 61xx were not fetched with GET RESPONSE"
    if quirks.exact_le is not None:
        reads = [command[-1] or 256 for command in card.commands if command[1] == 0xB0]
        assert quirks.exact_le in reads, "the client did not re-send with the card's Le"


def handle_of(certificate: x509.Certificate) -> str:
    return card_handle(certificate.issuer.public_bytes(), certificate.serial_number)
