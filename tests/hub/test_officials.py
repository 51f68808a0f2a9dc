"""Officials' cards: every polls command needs the station manager's and a witness's card
signatures over the ledger's challenge; refusals have reasons, arrive at once, change nothing;
both signatures go into the signed reports. Cards here are training card files signing in
software (the pcscd path is tests/card/test_officials_pcsc.py)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from hub_fixtures import Hub

from election.chain import verify_document
from election.encoding import canonical_bytes, parse_json
from infra.mqtt import HubClient
from infra.officials import (
    OfficialsRefused,
    OfficialsVerifier,
    TrainingCard,
    authorize,
    fingerprint,
    make_training_card,
    training_officials,
)
from infra.pki import PkiError, StationCA
from protocol.errors import PollsReason
from protocol.messages import OfficialSignature, PollsCommand, polls_command
from station_hub.operator import PollsRefused, change_polls
from station_hub.station import Station


class ForeignSigner:
    """A key with a station certificate that is not an official's (the operator's, say)."""

    def __init__(self, certificate_der: bytes, key, function: str) -> None:
        self.certificate_der, self._key, self.function = certificate_der, key, function

    def sign(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import ec

        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


def card(station: Station, function: str, holder: str, name: str) -> TrainingCard:
    path = station.directory / "cards" / f"{name}.json"
    make_training_card(station.directory, function, holder, "4321", path)
    return TrainingCard(path, "4321")


def command(station: Station, verb: str = "open", nonce: bytes = b"\x07" * 32, age: int = 0) -> PollsCommand:
    return PollsCommand(verb, (), station.station_id, station.election().manifest.base_hash, nonce,  # type: ignore[arg-type]
                        int(time.time()) - age)  # fmt: skip


def refusal(station: Station, signed: PollsCommand, nonce: bytes = b"\x07" * 32) -> PollsReason:
    verifier = OfficialsVerifier(station.directory, station.station_id, station.election().manifest.base_hash)
    with pytest.raises(OfficialsRefused) as refused:
        verifier.check(signed, dt.datetime.now(dt.UTC), nonce)
    return refused.value.reason


def test_the_verifier_accepts_two_officials_and_refuses_everything_else(station: Station):
    manager, witness = training_officials(station.directory)
    verifier = OfficialsVerifier(station.directory, station.station_id, station.election().manifest.base_hash)
    good = authorize(command(station), [manager, witness])
    accepted = verifier.check(PollsCommand.decode(good.encode()), dt.datetime.now(dt.UTC), b"\x07" * 32)
    assert [o.function for o in accepted] == ["station_manager", "witness"]
    assert {o.certificate_sha256 for o in accepted} == {fingerprint(manager.certificate_der),
                                                        fingerprint(witness.certificate_der)}  # fmt: skip

    # one card; the same card twice; the same official with two cards
    assert refusal(station, authorize(command(station), [manager])) is PollsReason.OFFICIALS_MISSING
    assert refusal(station, command(station)) is PollsReason.OFFICIALS_MISSING
    assert refusal(station, authorize(command(station), [manager, manager])) is PollsReason.SAME_OFFICIAL
    second_of_manager = card(station, "station_manager", "training-station_manager", "manager-2")
    assert refusal(station, authorize(command(station), [manager, second_of_manager])) is PollsReason.SAME_OFFICIAL
    with pytest.raises(PkiError, match="never both officials"):  # nor can the manager get a witness card
        card(station, "witness", "training-station_manager", "manager-as-witness")

    # a wrong role: two witnesses; a witness's card offered as the manager's; an operator certificate
    other_witness = card(station, "witness", "staff-0042", "witness-2")
    assert refusal(station, authorize(command(station), [witness, other_witness])) is PollsReason.WRONG_ROLE
    swapped = authorize(command(station), [manager, witness])
    swapped = replace(swapped, officials=(replace(swapped.officials[0], function="witness"),
                                          replace(swapped.officials[1], function="station_manager")))  # fmt: skip
    assert refusal(station, swapped) is PollsReason.WRONG_ROLE
    operator_key = serialization.load_pem_private_key(station.key_file("op1").read_bytes(), None)
    operator = ForeignSigner(station.certificate("op1").public_bytes(serialization.Encoding.DER), operator_key,
                             "station_manager")  # fmt: skip
    assert refusal(station, authorize(command(station), [operator, witness])) is PollsReason.WRONG_ROLE

    # a revoked card, a card of another station's CA, a signature over another command
    revoked = card(station, "witness", "staff-0099", "revoked")
    ca = StationCA.load(station.directory / "ca")
    ca.revoke(x509.load_der_x509_certificate(revoked.certificate_der).serial_number)
    assert refusal(station, authorize(command(station), [manager, revoked])) is PollsReason.OFFICIAL_REVOKED
    foreign_dir = station.directory.parent / "other-station"
    StationCA.create(foreign_dir / "ca", "st-x")
    foreign_path = foreign_dir / "witness.json"
    make_training_card(foreign_dir, "witness", "someone", "1111", foreign_path)
    foreign = TrainingCard(foreign_path)
    assert refusal(station, authorize(command(station), [manager, foreign])) is PollsReason.UNKNOWN_OFFICIAL
    close_signatures = authorize(command(station, "close"), [manager, witness]).officials
    assert refusal(station, replace(command(station), officials=close_signatures)) is (
        PollsReason.BAD_OFFICIAL_SIGNATURE
    )

    # freshness: another challenge, an expired one, another station or election
    assert refusal(station, good, nonce=b"\x08" * 32) is PollsReason.STALE_NONCE
    assert refusal(station, authorize(command(station, age=3600), [manager, witness])) is PollsReason.EXPIRED
    assert refusal(station, authorize(replace(command(station), station_id="st-x"), [manager, witness])) is (
        PollsReason.WRONG_STATION
    )
    assert refusal(station, authorize(replace(command(station), base_hash=b"\x01" * 32), [manager, witness])) is (
        PollsReason.WRONG_ELECTION
    )

    # a wrong PIN never gets a signature out of the card
    with pytest.raises(PkiError, match="wrong PIN"):
        TrainingCard(manager.path, "0000")


def test_training_cards_are_refused_once_real_cards_are_enrolled(station: Station):
    manager, witness = training_officials(station.directory)
    from cryptography.hazmat.primitives.asymmetric import rsa

    from infra.officials import issue_official_certificate

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issue_official_certificate(station.directory, "station_manager", "staff-0001", key.public_key())
    assert refusal(station, authorize(command(station), [manager, witness])) is PollsReason.TRAINING_CARD
    with pytest.raises(PkiError, match="no training card"):
        card(station, "witness", "staff-0777", "late-training")


def polls_state(station: Station) -> str:
    with HubClient(station, "op1").connect() as client:
        client.subscribe(station.topics.ledger_status)
        return parse_json(client.next_message(5).payload)["polls"]


def test_open_and_close_with_two_cards_signed_reports_and_refusals(hub: Hub, station: Station):
    manager, witness = training_officials(station.directory)
    ledger_key = station.signing_key("ledger").public_key()
    base_hash = station.election().manifest.base_hash

    # one card only: refused at once, with the ledger's reason; nothing changed
    with HubClient(station, "op1").connect() as operator:
        started = time.monotonic()
        with pytest.raises(PollsRefused) as refused:
            change_polls(operator, "open", officials=[manager])
        assert refused.value.reason is PollsReason.OFFICIALS_MISSING and time.monotonic() - started < 5
        with pytest.raises(PollsRefused) as refused:
            change_polls(operator, "open", officials=[manager, manager])
        assert refused.value.reason is PollsReason.SAME_OFFICIAL
        assert "one official" in str(refused.value)
    assert polls_state(station) == "pending"

    with HubClient(station, "op1").connect() as operator:
        zero = change_polls(operator, "open", officials=[manager, witness])
        operator.subscribe(station.topics.polls_control)
    body = verify_document(zero, ledger_key)
    authorization = body["authorized_by"]
    assert authorization["command"] == "open"
    assert [o["function"] for o in authorization["officials"]] == ["station_manager", "witness"]
    assert {o["certificate_sha256"] for o in authorization["officials"]} == {
        fingerprint(manager.certificate_der), fingerprint(witness.certificate_der)}  # fmt: skip
    # Anyone holding the certificates can check both signatures from the report alone.
    signed_open = PollsCommand("open", (), station.station_id, base_hash, bytes.fromhex(authorization["nonce"]),
                               authorization["issued_at"])  # fmt: skip
    for official, signer in zip(authorization["officials"], (manager, witness), strict=True):
        key = x509.load_der_x509_certificate(signer.certificate_der).public_key()
        key.verify(bytes.fromhex(official["signature"]), signed_open.signing_input(), padding.PKCS1v15(),  # type: ignore[union-attr]
                   hashes.SHA256())  # fmt: skip
    assert "official-" not in canonical_bytes(zero).decode()  # fingerprints only: no card id, no name

    # a replay of the signed open (its nonce is spent) and a bare command change nothing
    replayed = replace(signed_open, officials=tuple(
        OfficialSignature(o["function"], s.certificate_der, bytes.fromhex(o["signature"]))
        for o, s in zip(authorization["officials"], (manager, witness), strict=True)))  # fmt: skip
    with HubClient(station, "op1").connect() as operator:
        operator.subscribe(f"{station.topics.root}/ledger/polls/result")
        time.sleep(0.3)
        operator.publish(station.topics.polls_control, replace(replayed, command="close").encode())
        answer = parse_json(operator.next_message(5).payload)
        assert answer["result"] == "refused" and answer["reason"] in ("stale_nonce", "bad_official_signature")
        operator.publish(station.topics.polls_control, polls_command("close"))
        answer = parse_json(operator.next_message(5).payload)
        assert answer["result"] == "refused" and answer["reason"] == "officials_missing"
    assert polls_state(station) == "open"

    with HubClient(station, "op1").connect() as operator:
        closing = change_polls(operator, "close", drain_wait=0.1, officials=[manager, witness])
    closed = verify_document(closing, ledger_key)
    assert closed["authorized_by"]["command"] == "final"
    assert len(closed["authorized_by"]["officials"]) == 2

    # re-opening after the close: refused at once, with the reason
    with HubClient(station, "op1").connect() as operator:
        started = time.monotonic()
        with pytest.raises(PollsRefused, match="can never be opened again"):
            change_polls(operator, "open", officials=[manager, witness])
        assert time.monotonic() - started < 5


def test_the_report_survives_a_ledger_restart_byte_for_byte(hub: Hub, station: Station, tmp_path: Path):
    with HubClient(station, "op1").connect() as operator:
        first = change_polls(operator, "open")
    hub.stop()
    hub.start()
    with HubClient(station, "op1").connect() as operator:
        operator.subscribe(station.topics.zero_report)
        again = parse_json(operator.next_message(10, lambda m: bool(m.payload)).payload)
    assert canonical_bytes(again) == canonical_bytes(first)
