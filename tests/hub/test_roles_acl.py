"""Roles in the broker and in the roll: only terminals check voters in or publish ballots."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.asymmetric import ed25519
from hub_fixtures import Hub, SoftCard, held_of
from test_checkin_card import marked, open_polls

from election import tokens
from election.encoding import parse_json
from infra.files import private_pem, write_private
from infra.mqtt import HubClient
from infra.pki import PkiError, Role, StationCA, write_certificate
from protocol.messages import CheckinChallengeRequest, CheckinRequest
from protocol.topics import FORWARDER_NAME
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient

NOT_AUTHORIZED = 135
CHOICES = {"contest-1": {"candidate-1"}}


def _forwarder(station: Station) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    ca = StationCA.load(station.directory / "ca")
    write_certificate(station.cert_file(FORWARDER_NAME), ca.issue(key.public_key(), FORWARDER_NAME, Role.FORWARDER))
    write_private(station.key_file(FORWARDER_NAME), private_pem(key))


def test_the_acl_has_no_pattern_lines_and_one_block_per_identity(station: Station):
    acl = station.acl_file.read_text().splitlines()
    assert not [line for line in acl if line.startswith("pattern")]
    users = [line.split()[1] for line in acl if line.startswith("user ")]
    assert users == ["t1", "t2", "ledger", "roll", FORWARDER_NAME, "op1"]


def test_operator_ledger_and_forwarder_cannot_check_in_or_cast(hub: Hub, station: Station, voters: list[SoftCard]):
    _forwarder(station)
    open_polls(station)
    topics = station.topics
    with TerminalClient(station, "t1").connect() as t1:
        token = t1.check_in(voters[0])
        ballot = t1.submission(t1.seal(CHOICES, token))
    before_held = held_of(station)
    before_marked = marked(station)
    value = tokens.blind(station.token_public_key(), secrets.token_bytes(32)).blinded
    request = CheckinRequest(secrets.token_bytes(32), value, voters[1].certificate_der, bytes(256)).encode()
    for name in ("op1", "ledger", FORWARDER_NAME):
        with HubClient(station, name).connect() as intruder:
            for target in (name, "t1"):
                assert intruder.publish(topics.checkin(target), CheckinChallengeRequest().encode()) == NOT_AUTHORIZED
                assert intruder.publish(topics.checkin(target), request) == NOT_AUTHORIZED, (name, target)
                assert intruder.publish(topics.ballot(target), ballot) == NOT_AUTHORIZED, (name, target)
            # Nor can it read the replies a terminal would get.
            intruder.subscribe(topics.checkin_reply("t1"))
            intruder.subscribe(topics.ack("t1"))
    assert held_of(station) == before_held
    assert marked(station) == before_marked


def test_the_roll_answers_only_terminal_certificates(hub: Hub, station: Station, voters: list[SoftCard]):
    """Defence behind the ACL: the roll checks the sender's certificate role itself."""
    assert hub.roll is not None
    challenge = CheckinChallengeRequest().encode()
    for name in ("op1", "ledger", "roll", "nobody"):
        reply = parse_json(hub.roll._decide(name, challenge).encode())
        assert reply["result"] == "refused" and reply["reason"] == "not_a_terminal", name
    assert parse_json(hub.roll._decide("t1", challenge).encode())["result"] == "challenge"


def test_one_name_has_one_role(station: Station):
    ca = StationCA.load(station.directory / "ca")
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    try:
        ca.issue(key, "t1", Role.OPERATOR)
    except PkiError as error:
        assert "one name has one role" in str(error)
    else:
        raise AssertionError("an operator certificate named like a terminal was issued")
