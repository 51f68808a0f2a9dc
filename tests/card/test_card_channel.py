"""The APDU transport core (CardChannel) and the certificate reader, without a reader.

Legal ISO 7816-4 behaviour (61xx + GET RESPONSE, 6Cxx + re-send, short READ BINARY answers)
must authenticate; everything beyond the bounds must be a CardProtocolError, never a hang or
another exception. The scripted transport here answers from a list, so each byte the core
sends is checked.
"""

from __future__ import annotations

import itertools

import pytest
from card_fixtures import OK, Cards, DirectTransport, ScriptedTransport, authenticator
from cryptography import x509

from appliance.card import AuthMode, CardProtocolError, apdu, card_handle
from appliance.card.authenticator import MAX_READ_COMMANDS
from appliance.card.channel import MAX_CHAINED_RESPONSE, MAX_GET_RESPONSES, CardChannel
from appliance.simulators.jpki_card import CardQuirks, VirtualJpkiCard

READ = apdu.read_binary(0, 4)


def test_61xx_is_collected_with_get_response_and_concatenated() -> None:
    transport = ScriptedTransport(b"\x61\x03", b"abc\x61\x02", b"de" + OK)
    response = CardChannel(transport).transceive(apdu.select_applet())
    assert (response.data, response.sw) == (b"abcde", apdu.SW_OK)
    assert [c.hex() for c in transport.sent[1:]] == ["00c0000003", "00c0000002"]


def test_data_before_61xx_is_kept_and_6100_asks_for_256() -> None:
    transport = ScriptedTransport(b"xy\x61\x00", bytes(256) + OK)
    response = CardChannel(transport).transceive(apdu.compute_digital_signature(b"\x01"))
    assert response.data == b"xy" + bytes(256) and response.sw == apdu.SW_OK
    assert transport.sent[1].hex() == "00c0000000"


def test_6cxx_resends_the_same_command_with_the_le_it_names() -> None:
    transport = ScriptedTransport(b"\x6c\x02", b"\x30\x82" + OK)
    response = CardChannel(transport).transceive(READ)
    assert response.data == b"\x30\x82"
    assert [c.hex() for c in transport.sent] == ["00b0000004", "00b0000002"]


def test_6c00_means_256_and_6cxx_then_61xx_both_apply() -> None:
    transport = ScriptedTransport(b"\x6c\x00", b"\x61\x01", b"z" + OK)
    response = CardChannel(transport).transceive(READ)
    assert response.data == b"z"
    assert [c.hex() for c in transport.sent] == ["00b0000004", "00b0000000", "00c0000001"]


def test_6cxx_to_a_get_response_resends_the_get_response() -> None:
    transport = ScriptedTransport(b"\x61\x05", b"\x6c\x02", b"ab" + OK)
    assert CardChannel(transport).transceive(READ).data == b"ab"
    assert [c.hex() for c in transport.sent[1:]] == ["00c0000005", "00c0000002"]


def test_a_second_6cxx_is_a_broken_card() -> None:
    transport = ScriptedTransport(b"\x6c\x02", b"\x6c\x03")
    with pytest.raises(CardProtocolError, match="6Cxx again"):
        CardChannel(transport).transceive(READ)
    assert len(transport.sent) == 2


def test_endless_61xx_is_bounded() -> None:
    transport = ScriptedTransport(b"\x61\x01", b"a\x61\x01")
    with pytest.raises(CardProtocolError, match="kept answering 61xx"):
        CardChannel(transport).transceive(READ)
    assert len(transport.sent) == 1 + MAX_GET_RESPONSES


def test_chained_response_over_the_size_bound_is_refused() -> None:
    transport = ScriptedTransport(bytes(200) + b"\x61\x00", bytes(256) + b"\x61\x00")
    with pytest.raises(CardProtocolError, match=f"exceeds {MAX_CHAINED_RESPONSE}"):
        CardChannel(transport).transceive(apdu.select_applet())
    assert len(transport.sent) == 1 + MAX_CHAINED_RESPONSE // 256


def test_more_data_than_le_is_refused() -> None:
    with pytest.raises(CardProtocolError, match="5 bytes for an Le of 4"):
        CardChannel(ScriptedTransport(b"12345" + OK)).transceive(READ)
    with pytest.raises(CardProtocolError, match="3 bytes for an Le of 2"):
        CardChannel(ScriptedTransport(b"\x61\x02", b"abc" + OK)).transceive(READ)


def test_plain_answers_pass_through_unchanged() -> None:
    transport = ScriptedTransport(b"\x63\xc2")
    response = CardChannel(transport).transceive(apdu.verify(None))
    assert (response.data, response.sw) == (b"", 0x63C2) and len(transport.sent) == 1


# --- the virtual card's quirks, in-process (the real stacks are in test_card_quirks.py) --------

QUIRKS = {
    "short-reads-1-byte": CardQuirks(short_read=1),
    "short-reads-37": CardQuirks(short_read=37),
    "exact-le-128": CardQuirks(exact_le=128),
    "exact-le-250": CardQuirks(exact_le=250),
    "61xx-whole": CardQuirks(response_chunk=256),
    "61xx-in-100-byte-parts": CardQuirks(response_chunk=100),
    "all-at-once": CardQuirks(short_read=50, exact_le=200, response_chunk=64),
}


@pytest.mark.parametrize("mode", list(AuthMode))
@pytest.mark.parametrize("quirks", [q for name, q in QUIRKS.items() if name != "short-reads-1-byte"], ids=[
    name for name in QUIRKS if name != "short-reads-1-byte"
])  # fmt: skip
def test_quirky_cards_authenticate(cards: Cards, quirks: CardQuirks, mode: AuthMode) -> None:
    transport = DirectTransport(VirtualJpkiCard(cards.good, quirks))
    voter = authenticator(cards, transport, mode).authenticate(cards.good.credential(mode).secret)
    assert voter.card_handle == handle_of(cards.good.credential(mode).certificate)
    instructions = {command[1] for command in transport.sent}
    if quirks.response_chunk is not None:
        assert 0xC0 in instructions, "the card's 61xx were not fetched with GET RESPONSE"


def test_short_reads_continue_from_the_new_offset(cards: Cards) -> None:
    transport = DirectTransport(VirtualJpkiCard(cards.good, CardQuirks(short_read=100)))
    authenticator(cards, transport, AuthMode.AUTH).check_certificate()
    offsets = [int.from_bytes(c[2:4], "big") for c in transport.sent if c[1] == 0xB0]
    assert offsets[:3] == [0, 4, 104], "each read must start where the card's last answer ended"
    assert all(b - a <= 100 for a, b in itertools.pairwise(offsets))


def test_a_card_trickling_one_byte_per_read_is_refused_within_the_bound(cards: Cards) -> None:
    transport = DirectTransport(VirtualJpkiCard(cards.good, CardQuirks(short_read=1)))
    with pytest.raises(CardProtocolError, match=f"more than {MAX_READ_COMMANDS} reads"):
        authenticator(cards, transport, AuthMode.AUTH).check_certificate()
    assert sum(1 for c in transport.sent if c[1] == 0xB0) == MAX_READ_COMMANDS


def test_a_read_answering_no_data_is_refused_at_once(cards: Cards) -> None:
    card = VirtualJpkiCard(cards.good)
    transport = ScriptedTransport(lambda c: OK if c[1] == 0xB0 else card.process(c))
    with pytest.raises(CardProtocolError, match="no data at offset 0"):
        authenticator(cards, transport, AuthMode.AUTH).check_certificate()


def test_a_file_ending_before_its_der_length_is_refused(cards: Cards) -> None:
    card = VirtualJpkiCard(cards.good)
    full = card.files[apdu.EF_AUTH_CERT]
    card.files[apdu.EF_AUTH_CERT] = full[:700]
    with pytest.raises(CardProtocolError, match="ends before"):
        authenticator(cards, DirectTransport(card), AuthMode.AUTH).check_certificate()


def test_get_response_of_the_virtual_card_follows_iso(cards: Cards) -> None:
    card = VirtualJpkiCard(cards.good, CardQuirks(response_chunk=3))
    for command in (apdu.select_applet(), apdu.select_file(apdu.EF_AUTH_CERT)):
        assert card.process(command.encode()) == OK
    assert card.process(READ.encode()) == b"\x61\x03"
    assert card.process(apdu.get_response(2).encode()) == b"\x6c\x03"
    first = card.process(apdu.get_response(3).encode())
    assert first[:2] == b"\x30\x82" and first[3:] == b"\x61\x01"
    assert card.process(apdu.get_response(1).encode())[1:] == OK
    assert card.process(apdu.get_response(1).encode()) == b"\x69\x85", "nothing is pending any more"
    assert card.process(READ.encode()) == b"\x61\x03"
    card.process(apdu.select_applet().encode())
    assert card.process(apdu.get_response(3).encode()) == b"\x69\x85", "another command drops the pending answer"


def handle_of(certificate: x509.Certificate) -> str:
    return card_handle(certificate.issuer.public_bytes(), certificate.serial_number)
