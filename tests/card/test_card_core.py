"""The sans-I/O pieces: APDU and frame codecs, voter key, trust store, test CA, privacy."""

from __future__ import annotations

import json
import logging
from dataclasses import fields

import pytest
from card_fixtures import ROLL_SALT, Cards, authenticator
from click.testing import CliRunner

from appliance.card import (
    AuthenticatedVoter,
    AuthMode,
    CardProtocolError,
    InvalidPinFormat,
    TrustStore,
    apdu,
    card_handle,
    derive_voter_key,
    voter_key_of,
)
from appliance.card.testca import CardFile, TestCa, main
from appliance.drivers.pn532.frames import (
    ACK,
    ERROR_FRAME,
    NACK,
    FrameError,
    FrameKind,
    decode_frame,
    encode_frame,
)
from appliance.simulators.jpki_card import VirtualJpkiCard


class DirectTransport:
    """The virtual card called in-process: the sans-I/O core needs no reader to be tested."""

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


def test_apdus_match_the_documented_bytes():
    assert apdu.select_applet().encode().hex() == "00a4040c0ad392f000260100000001"
    assert apdu.select_file(apdu.EF_AUTH_PIN).encode().hex() == "00a4020c020018"
    assert apdu.verify(None).encode().hex() == "00200080"
    assert apdu.verify(b"1234").encode().hex() == "002000800431323334"
    assert apdu.read_binary(0x0104, 0xF0).encode().hex() == "00b00104f0"
    assert apdu.compute_digital_signature(b"\x01\x02").encode().hex() == "802a008002010200"


@pytest.mark.parametrize(
    "command",
    [apdu.select_applet(), apdu.verify(None), apdu.read_binary(5, 256), apdu.compute_digital_signature(b"x" * 51)],
)  # fmt: skip
def test_command_apdus_round_trip(command: apdu.CommandApdu):
    assert apdu.CommandApdu.parse(command.encode()) == command


@pytest.mark.parametrize("raw", ["00a4", "00a4040c05d392", "00a4040c00000a"])
def test_malformed_command_apdus_are_rejected(raw: str):
    with pytest.raises(ValueError):
        apdu.CommandApdu.parse(bytes.fromhex(raw))


def test_virtual_card_answers_wrong_length_to_malformed_apdus(cards: Cards):
    assert VirtualJpkiCard(cards.good).process(bytes.fromhex("00a4040c05d392")) == b"\x67\x00"


def test_pn532_frames_match_the_documented_bytes():
    assert encode_frame(b"\xd4\x02").hex() == "0000ff02fed4022a00"
    assert decode_frame(ACK) == (decode_frame(ACK)[0], 6)
    assert decode_frame(ACK)[0].kind is FrameKind.ACK
    assert decode_frame(NACK)[0].kind is FrameKind.NACK
    assert decode_frame(ERROR_FRAME)[0].kind is FrameKind.ERROR


def test_long_payloads_use_extended_frames_and_round_trip():
    payload = b"\xd5\x41\x00" + bytes(range(256)) + b"\x90\x00"
    frame = encode_frame(payload)
    assert frame[3:5] == b"\xff\xff" and int.from_bytes(frame[5:7], "big") == len(payload)
    decoded, consumed = decode_frame(b"\x55\x00" + frame + b"\x00")
    assert decoded.payload == payload and consumed == 2 + len(frame)
    with pytest.raises(ValueError):
        encode_frame(b"\xd4" * 300)


def test_partial_frames_wait_for_more_and_corrupt_ones_raise():
    frame = encode_frame(b"\xd5\x03\x32\x01\x06\x07")
    partial, dropped = decode_frame(frame[:7])
    assert partial is None and dropped == 1  # only the preamble byte can go
    assert decode_frame(frame[dropped:])[0].payload == b"\xd5\x03\x32\x01\x06\x07"
    with pytest.raises(FrameError, match="data checksum"):
        decode_frame(frame[:-2] + b"\x00\x00")
    with pytest.raises(FrameError, match="length checksum"):
        decode_frame(frame[:4] + b"\x00" + frame[5:])


def test_voter_key_is_keyed_by_the_salt_and_bound_to_issuer_and_serial():
    issuer = b"\x30\x03\x31\x01\x00"
    key = derive_voter_key(ROLL_SALT, issuer, 1234)
    assert key == derive_voter_key(ROLL_SALT, issuer, 1234)
    assert len(key) == 64 and key == key.lower()
    assert key != derive_voter_key(b"another-salt-16b", issuer, 1234)
    assert key != derive_voter_key(ROLL_SALT, issuer, 1235)
    assert key != derive_voter_key(ROLL_SALT, issuer + b"\x00", 1234)
    with pytest.raises(ValueError):
        derive_voter_key(b"short", issuer, 1234)


def test_voter_key_vector_matches_the_documentation():
    # The worked example in docs/card-protocol.md.
    key = derive_voter_key(bytes(range(16)), bytes.fromhex("300d310b3009060355040613024a50"), 0x1234)
    assert key == DOCUMENTED_VOTER_KEY


DOCUMENTED_VOTER_KEY = "a50a7ba031007e2c88f161caf7ba0a51abd2374a5fd826f63eeeb48d544c884f"


def test_wrongly_formatted_pin_is_refused_without_touching_the_card(cards: Cards):
    transport = DirectTransport(VirtualJpkiCard(cards.good))
    for mode, bad in ((AuthMode.AUTH, "12345"), (AuthMode.AUTH, "12a4"), (AuthMode.SIGN, "abc123")):
        with pytest.raises(InvalidPinFormat):
            authenticator(cards, transport, mode).authenticate(bad)
    assert transport.sent == []


def test_no_personal_data_leaves_the_module_or_reaches_the_log(cards: Cards, caplog):
    caplog.set_level(logging.DEBUG)
    transport = DirectTransport(VirtualJpkiCard(cards.good))
    voter = authenticator(cards, transport, AuthMode.SIGN).authenticate(cards.good.sign.secret)
    assert [f.name for f in fields(AuthenticatedVoter)] == ["card_handle"]
    certificate = cards.good.sign.certificate
    personal = ["試験 太郎", "東京都千代田区", "19800101", certificate.subject.rfc4514_string()]
    for text in personal:
        assert text not in caplog.text and text not in repr(voter)
    assert cards.good.sign.secret not in caplog.text
    assert voter.card_handle == card_handle(certificate.issuer.public_bytes(), certificate.serial_number)
    assert voter.card_handle != voter_key_of(ROLL_SALT, certificate), "the booth holds no voter key"


def test_signing_certificate_is_unreadable_before_the_password(cards: Cards):
    card = VirtualJpkiCard(cards.good)
    for command in (apdu.select_applet(), apdu.select_file(apdu.EF_SIGN_CERT)):
        assert card.process(command.encode()) == b"\x90\x00"
    assert card.process(apdu.read_binary(0, 4).encode()) == b"\x69\x82"


def test_trust_store_refuses_a_ca_without_its_crl(cards: Cards):
    with pytest.raises(ValueError, match="no CRL"):
        TrustStore((cards.ca.ca_certificate(AuthMode.AUTH),), ())


def test_garbage_certificate_is_a_protocol_error(cards: Cards):
    from datetime import UTC, datetime

    with pytest.raises(CardProtocolError, match="DER"):
        cards.ca.trust_store(AuthMode.AUTH).validate(b"\x30\x03\x02\x01\x00", datetime.now(UTC))


def test_testca_command_line_issues_revokes_and_exports_the_roll(tmp_path):
    runner = CliRunner()
    directory = tmp_path / "ca"
    assert runner.invoke(main, ["init", str(directory)]).exit_code == 0
    issued = runner.invoke(main, ["issue", str(directory), "--count", "2", "--pin", "4321"])
    assert issued.exit_code == 0 and issued.output.count("PIN 4321") == 2
    ca = TestCa(directory)
    first, second = ca.issued_cards()
    assert runner.invoke(main, ["revoke", str(directory), first.card_id]).exit_code == 0
    store = TestCa(directory).trust_store(AuthMode.AUTH)
    crl = store.crls[0]
    assert crl.get_revoked_certificate_by_serial_number(first.auth.certificate.serial_number)
    assert crl.get_revoked_certificate_by_serial_number(second.auth.certificate.serial_number) is None
    roll_file = tmp_path / "roll.json"
    result = runner.invoke(
        main,
        ["export-roll", str(directory), "--salt", ROLL_SALT.hex(), "--mode", "auth", "--output", str(roll_file)],
    )  # fmt: skip
    assert result.exit_code == 0
    roll = json.loads(roll_file.read_text())
    assert roll["mode"] == "auth"
    assert sorted(roll["voter_keys"]) == roll["voter_keys"]
    assert voter_key_of(ROLL_SALT, second.auth.certificate) in roll["voter_keys"]
    assert CardFile.load(ca.card_path(second.card_id)).auth.secret == "4321"
    bad_salt = runner.invoke(main, ["export-roll", str(directory), "--salt", "zz", "--output", str(roll_file)])
    assert bad_salt.exit_code != 0 and "hex" in bad_salt.output
