"""Real booth↔hub and hub↔centre messages follow the schemas, and hostile variants do not.

A real station hub runs (its Mosquitto with mutual TLS, the ledger and the roll services), a
terminal checks in, casts, challenges and sends bad ballots, the booth's own link (``HubLink``)
publishes its status and checks in, an operator opens and closes the polls, and a second
operator captures every retained statement and status as published. The forwarding messages
are built by the forwarder's and gateway's own functions from that hub's ledger, and the
registration and link grant by the hub's and the centre's registration code.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import root_variants, variants
from hub_fixtures import Hub, SoftCard, copy_station
from schema_tools import SchemaTemplate, assert_invalid, assert_valid, payload_json

from appliance.outbox import Outbox
from appliance.publisher import HubAddress, HubLink
from election import tokens
from election.ballot import Token
from election.chain import ChainHead
from election.devices import DeviceStatement
from election.encoding import canonical_bytes
from gateway.central import init_central, register_station
from infra.broker import Broker, free_port
from infra.errors import SiteError
from infra.mqtt import HubClient
from protocol.forwarding import ClosingSeen, Confirm, Refusal, batch_payload, hello_payload
from protocol.messages import (
    CheckinChallenge,
    CheckinChallengeRequest,
    CheckinGranted,
    CheckinRequest,
    checkin_binding,
    decode_checkin_reply,
)
from station_hub.forwarder import LedgerReader
from station_hub.operator import change_polls
from station_hub.registration import registration
from station_hub.terminal_client import TerminalClient

CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}
GOOD_CHECKIN = {
    "version": 1,
    "type": "checkin",
    "challenge": "ab" * 32,
    "blinded": "cd" * 384,
    "certificate": "30" * 1000,
    "signature": "ef" * 256,
}
"""Valid by checkin.schema.json (the targeted hostile cases each change one thing of it)."""
Captured = list[tuple[str, str, Any]]
"""(what, schema, parsed message)"""


def statement_schema(topic: str, data: Any, root: str) -> str:
    leaf = topic.removeprefix(root + "/")
    if leaf.startswith("terminal/") and leaf.endswith("/status"):
        return "terminal-status.schema.json"
    return {
        "ledger/status": "ledger-status.schema.json",
        "ledger/checkpoint": "checkpoint.schema.json",
        "ledger/report/zero": "zero-report.schema.json",
        "ledger/report/closing": "closing-report.schema.json",
        "ledger/polls/challenge": "polls-challenge.schema.json",
        "ledger/polls/result": "polls-result.schema.json",
        "roll/status": "roll-status.schema.json",
        "roll/report": "roll-report.schema.json",
    }[leaf]


def drain(client: HubClient, quiet: float = 1.0) -> list[Any]:
    found = []
    while True:
        try:
            found.append(client.next_message(quiet))
        except SiteError:
            return found


def run_station(station: Any, template: SchemaTemplate, tmp_path: Path) -> Captured:
    captured: Captured = []
    topics = station.topics
    with Broker(station, tmp_path / "mosquitto.log"):
        hub = Hub(station).start()
        try:
            watcher = HubClient(station, "op2").connect()
            for topic in (
                topics.terminal_status("+"),
                topics.roll_status,
                topics.roll_report,
                f"{topics.root}/ledger/#",
            ):
                watcher.subscribe(topic)
            with HubClient(station, "op1").connect() as operator:
                change_polls(operator, "open")
            with TerminalClient(station, "t1").connect() as t1:
                captured += terminal_session(t1, template)
            captured += booth_link_session(station, template.voters[3], tmp_path)
            with HubClient(station, "op1").connect() as operator:
                change_polls(operator, "close")
        finally:
            hub.stop()  # the services say "offline" on the way out
        for message in drain(watcher):
            if message.payload:
                data = payload_json(message.payload)
                captured.append((message.topic, statement_schema(message.topic, data, topics.root), data))
        watcher.close()
    captured += forwarding_messages(station, captured)
    captured += registration_messages(station, template.election, tmp_path)
    return captured


def forged_signature(t1: TerminalClient) -> bytes:
    """A spoiled-ballot submission whose ballot signature is not the device's."""
    spoiled, opening = t1.seal_with_opening(CHOICES, None)
    message = payload_json(t1.submission(spoiled, opening))
    return canonical_bytes({**message, "ballot": {**message["ballot"], "signature": "00" * 64}})


def terminal_session(t1: TerminalClient, template: SchemaTemplate) -> Captured:
    """Card-proven check-in (both rounds), cast, challenge, and refusals — as the ledger and the
    roll answer them."""
    out: Captured = []
    topics = t1.topics
    voters = template.voters

    def ask(payload: bytes) -> bytes:
        return t1.request(topics.checkin("t1"), topics.checkin_reply("t1"), payload, 10).payload

    challenge_request = CheckinChallengeRequest().encode()
    challenge_reply = ask(challenge_request)
    out += [("check-in challenge request", "checkin-challenge-request.schema.json", payload_json(challenge_request)),
            ("check-in challenge", "checkin-reply.schema.json", payload_json(challenge_reply))]  # fmt: skip
    challenge = bytes.fromhex(payload_json(challenge_reply)["challenge"])
    message = secrets.token_bytes(32)
    request = tokens.blind(t1.token_key, message)
    checkin = t1.checkin_payload(voters[0], request.blinded, challenge)
    reply = ask(checkin)
    out += [("check-in", "checkin.schema.json", payload_json(checkin)),
            ("check-in granted", "checkin-reply.schema.json", payload_json(reply))]  # fmt: skip
    granted = payload_json(reply)
    assert granted["result"] == "granted", granted
    token = Token(message, tokens.finalize(t1.token_key, message, bytes.fromhex(granted["blind_signature"]), request))

    spoiled, opening = t1.seal_with_opening(CHOICES, None)
    challenged = t1.submission(spoiled, opening)
    out.append(("spoiled ballot", "ballot-submission.schema.json", payload_json(challenged)))
    # A held spoiled ballot's ack names the sealed ballot's hash, not the message's.
    t1.publish(topics.ballot("t1"), challenged)
    wanted = spoiled.ballot_hash.hex()
    ack = payload_json(
        t1.next_message(10, lambda m: m.topic == topics.ack("t1") and wanted.encode() in m.payload).payload
    )
    assert ack["result"] == "held", ack
    out.append(("ack of the spoiled ballot", "ack.schema.json", ack))

    ballot = t1.seal(CHOICES, token)
    cast = t1.submission(ballot)
    out.append(("cast ballot", "ballot-submission.schema.json", payload_json(cast)))
    out.append(("its sealed ballot", "sealed-ballot.schema.json", payload_json(cast)["ballot"]))
    out.append(("its device statement", "device-statement.schema.json", payload_json(cast)["statement"]))
    ack = t1.submit(cast)
    assert ack["result"] == "held", ack
    out.append(("ack held", "ack.schema.json", ack))
    assert t1.submit(cast) == ack, "an exact resend gets the same ack"

    refusals = [
        (cast.replace(b'{"ballot_id"', b'{"a":"\\ud800","ballot_id"', 1), "a lone surrogate"),
        (cast[:-1] + b',"z":1}', "an extra field"),
        (
            canonical_bytes({**payload_json(cast), "ballot": {**ballot.to_json(), "device_seq": 3}}),
            "format 1's device_seq",
        ),
        (canonical_bytes(ballot.to_json()), "a bare sealed ballot without a statement"),
        (forged_signature(t1), "a ballot whose device signature does not verify"),
        (b'{"version":' + b"9" * 5000 + b"}", "a 5000-digit integer"),
    ]
    for payload, what in refusals:
        ack = t1.submit(payload)
        assert ack["result"] == "refused", (what, ack)
        out.append((f"ack refusing {what}", "ack.schema.json", ack))

    def fresh_blinded() -> bytes:
        return tokens.blind(t1.token_key, secrets.token_bytes(32)).blinded

    other_blinded = fresh_blinded()
    over_another = CheckinRequest(
        (fresh := t1.challenge()), other_blinded, voters[1].certificate_der,
        voters[1].sign(checkin_binding(topics.station, "t1", fresh, fresh_blinded())),
    ).encode()  # fmt: skip
    answers = [
        (ask(t1.checkin_payload(voters[0], fresh_blinded())), "already_voted"),
        (ask(t1.checkin_payload(template.stranger, request.blinded)), "not_eligible"),
        (ask(b'{"version":1,"type":"checkin"}'), "malformed"),
        (ask(checkin), "bad_challenge"),  # the granted check-in replayed: its challenge is spent
        (ask(over_another), "bad_card_signature"),
        (ask(t1.checkin_payload(template.foreign, fresh_blinded())), "unknown_issuer"),
    ]
    for raw, reason in answers:
        reply_data = payload_json(raw)
        assert reply_data.get("reason") == reason, reply_data
        out.append((f"check-in refused: {reason}", "checkin-reply.schema.json", reply_data))
    return out


def booth_link_session(station: Any, voter: SoftCard, tmp_path: Path) -> Captured:
    """The booth's own MQTT link publishes its statuses (online, reader, tamper, its will) and
    checks a voter in (challenge, then the card-signed request)."""
    address = HubAddress(station.host, station.port, station.ca_file, station.cert_file("t2"), station.key_file("t2"))
    link = HubLink(address, station.station_id, "t2", Outbox(tmp_path / "booth" / "outbox.db")).start()
    modulus_length = (station.token_public_key().key_size + 7) // 8
    try:
        assert link.wait_online(10)
        link.publish_status(reader="ok")
        link.publish_status(reader="unavailable", tamper=True)
        challenge_request = CheckinChallengeRequest().encode()
        challenge_reply = link.request_checkin(challenge_request, 10)
        challenge = decode_checkin_reply(challenge_reply, modulus_length)
        assert isinstance(challenge, CheckinChallenge), challenge
        request = tokens.blind(station.token_public_key(), secrets.token_bytes(32))
        binding = checkin_binding(station.station_id, "t2", challenge.challenge, request.blinded)
        payload = CheckinRequest(challenge.challenge, request.blinded, voter.certificate_der,
                                 voter.sign(binding)).encode()  # fmt: skip
        reply = link.request_checkin(payload, 10)
    finally:
        link.stop()
    assert isinstance(decode_checkin_reply(reply, modulus_length), CheckinGranted)
    return [("booth check-in challenge request", "checkin-challenge-request.schema.json",
             payload_json(challenge_request)),
            ("booth check-in challenge", "checkin-reply.schema.json", payload_json(challenge_reply)),
            ("booth check-in", "checkin.schema.json", payload_json(payload)),
            ("booth check-in reply", "checkin-reply.schema.json", payload_json(reply))]  # fmt: skip


def forwarding_messages(station: Any, captured: Captured) -> Captured:
    """hello/batch as the forwarder builds them from this ledger; confirm/refused as the gateway does."""
    latest = {}
    for _what, schema, data in captured:
        if schema in ("checkpoint.schema.json", "zero-report.schema.json", "closing-report.schema.json"):
            latest[schema] = data
    assert len(latest) == 3, "checkpoint, zero and closing report were all published"
    reader = LedgerReader(station.ledger_db)
    try:
        entries = reader.entries_from(1)
        head = reader.head()
        head_hash = reader.entry_hash(head)
    finally:
        reader.close()
    assert sorted(e.opening is not None for e in entries) == [False, True], "a spoiled entry and a cast one"
    statements = [DeviceStatement.from_json(d) for what, _, d in captured if what == "its device statement"]
    closing = latest["closing-report.schema.json"]
    sid = station.station_id
    return [
        ("hello", "hello.schema.json", payload_json(hello_payload(sid, 1))),
        ("batch", "batch.schema.json", payload_json(batch_payload(sid, 2, entries, list(latest.values()), statements))),
        ("empty batch", "batch.schema.json", payload_json(batch_payload(sid, 3, [], []))),
        ("confirm", "confirm.schema.json",
         Confirm(sid, 2, ChainHead(head, head_hash), head, ClosingSeen(closing["position"], closing["check_ins"]),
                 "ok").to_json()),
        ("first confirm", "confirm.schema.json", Confirm(sid, 1, ChainHead(0, station.genesis), None, None,
                                                         "ok").to_json()),
        ("refused", "refused.schema.json", Refusal(sid, 4, "malformed", "not valid JSON").to_json()),
    ]  # fmt: skip


def registration_messages(station: Any, election_dir: Path, tmp_path: Path) -> Captured:
    document = registration(station).encode()
    central = init_central(tmp_path / "central", election_dir, port=free_port())
    *_, grant = register_station(central, document)
    return [("station registration", "station-registration.schema.json", payload_json(document)),
            ("link grant", "link-grant.schema.json", payload_json(grant.encode()))]  # fmt: skip


@pytest.fixture(scope="module")
def captured(schema_station_template: SchemaTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    root = tmp_path_factory.mktemp("schema-hub")
    station = copy_station(schema_station_template.station, root / "station")
    yield run_station(station, schema_station_template, root)


def test_real_messages_follow_the_schemas(captured: Captured):
    for what, schema, data in captured:
        assert_valid(schema, data, what)


def test_every_message_schema_met_a_real_message(captured: Captured):
    seen = {schema for _, schema, _ in captured}
    expected = {
        "sealed-ballot.schema.json", "ballot-submission.schema.json", "ack.schema.json", "checkin.schema.json",
        "checkin-challenge-request.schema.json", "checkin-reply.schema.json", "terminal-status.schema.json",
        "ledger-status.schema.json", "checkpoint.schema.json", "zero-report.schema.json", "closing-report.schema.json",
        "roll-status.schema.json", "roll-report.schema.json", "hello.schema.json", "batch.schema.json",
        "confirm.schema.json", "refused.schema.json", "station-registration.schema.json", "link-grant.schema.json",
    }  # fmt: skip
    assert expected <= seen, sorted(expected - seen)
    by_kind = {(schema, data.get("online"), data.get("result")) for _, schema, data in captured}
    for status in ("terminal-status.schema.json", "ledger-status.schema.json", "roll-status.schema.json"):
        assert {(status, True, None), (status, False, None)} <= by_kind, f"{status}: online and offline both seen"
    assert {("ack.schema.json", None, "held"), ("ack.schema.json", None, "refused")} <= by_kind
    reasons = {data["reason"] for _, schema, data in captured if schema == "ack.schema.json" and "reason" in data}
    assert "malformed" in reasons and "bad_signature" in reasons
    tamper = [d for _, s, d in captured if s == "terminal-status.schema.json" and d.get("tamper") is True]
    assert tamper and tamper[-1]["reader"] == "unavailable"
    replies = {(d["result"], d.get("reason")) for _, s, d in captured if s == "checkin-reply.schema.json"}
    assert {("challenge", None), ("granted", None), ("refused", "bad_challenge"),
            ("refused", "bad_card_signature"), ("refused", "unknown_issuer")} <= replies, replies  # fmt: skip
    closing = [d for _, s, d in captured if s == "closing-report.schema.json" and d["check_ins"] is not None]
    assert closing and closing[-1]["ballots"] == 1 and closing[-1]["spoiled"] == 1


def test_hostile_variants_of_every_real_message_are_refused(captured: Captured):
    picked: dict[tuple[str, Any, Any], tuple[str, Any]] = {}
    for what, schema, data in captured:
        picked.setdefault((schema, data.get("online"), data.get("result")), (what, data))
    checked = 0
    for (schema, *_), (what, data) in sorted(picked.items(), key=lambda item: str(item[0])):
        for label, variant in [*root_variants(data), *variants(data, limit=400)]:
            assert_invalid(schema, variant, f"{what}: {label}")
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize(
    ("schema", "document", "what"),
    [
        ("polls.schema.json", {"version": True, "type": "polls", "command": "open"}, "version true"),
        ("polls.schema.json", {"version": 1, "type": "polls", "command": "reopen"}, "an unknown command"),
        (
            "ack.schema.json",
            {
                "version": 1,
                "type": "ack",
                "result": "refused",
                "ballot_hash": "00" * 32,
                "reason": "because",
                "detail": "",
            },
            "an undocumented refusal reason",
        ),
        (
            "ack.schema.json",
            {
                "version": 2,
                "type": "ack",
                "result": "refused",
                "ballot_hash": "00" * 32,
                "reason": "malformed",
                "detail": "x" * 501,
            },
            "a detail of 501 characters",
        ),
        (
            "ack.schema.json",
            {
                "version": 2,
                "type": "ack",
                "result": "held",
                "ballot_hash": "00" * 32,
                "tracking_code": "x66l-mkwe-74pt-prjq",
            },
            "a lowercase tracking code",
        ),
        (
            "ack.schema.json",
            {
                "version": 2,
                "type": "ack",
                "result": "held",
                "ballot_hash": "00" * 32,
                "tracking_code": "X66L-MIWE-74IT-PRJQ",
            },
            "a tracking code with I, which codes never hold",
        ),
        (
            "terminal-status.schema.json",
            {
                "version": 1,
                "type": "terminal_status",
                "online": True,
                "reader": "ok",
                "tamper": False,
                "ballots_cast": 10,
                "outbox_depth": 2**41,
            },
            "an outbox depth beyond 2^40",
        ),
        (
            "terminal-status.schema.json",
            {"version": 1, "type": "terminal_status", "online": False, "reader": "ok"},
            "an offline status with fields",
        ),
        (
            "ledger-status.schema.json",
            {
                "version": 1,
                "type": "ledger_status",
                "online": True,
                "polls": "reopened",
                "position": 0,
                "head_hash": "00" * 32,
                "refused": 0,
                "forward_lag": None,
            },
            "an unknown polls state",
        ),
        ("checkin.schema.json", {**GOOD_CHECKIN, "blinded": "00" * 384}, "a zero blinded value"),
        ("checkin.schema.json", {**GOOD_CHECKIN, "blinded": "ab" * 128}, "a blinded value of an RSA-1024 key"),
        ("checkin.schema.json", {**GOOD_CHECKIN, "voter_key": "00" * 32}, "a voter key (the roll derives it)"),
        (
            "checkin.schema.json",
            {k: v for k, v in GOOD_CHECKIN.items() if k not in ("certificate", "signature")},
            "a check-in without the card's proof",
        ),
        ("checkin.schema.json", {**GOOD_CHECKIN, "signature": "cd" * 128}, "a card signature of an RSA-1024 key"),
        ("checkin.schema.json", {**GOOD_CHECKIN, "certificate": ""}, "an empty card certificate"),
        ("checkin.schema.json", {**GOOD_CHECKIN, "certificate": "30" * 8193}, "a card certificate over 8192 bytes"),
        ("checkin.schema.json", {**GOOD_CHECKIN, "challenge": "ab" * 16}, "a 16-byte challenge"),
        (
            "checkin-challenge-request.schema.json",
            {"version": 1, "type": "checkin_challenge_request", "terminal": "t1"},
            "a challenge request naming a terminal",
        ),
        (
            "checkin-reply.schema.json",
            {"version": 1, "type": "checkin_reply", "result": "challenge", "challenge": "ab" * 32, "expires_in": 0},
            "a challenge that is already expired",
        ),
        (
            "checkin-reply.schema.json",
            {"version": 1, "type": "checkin_reply", "result": "refused", "reason": "card_lost", "detail": ""},
            "an undocumented check-in refusal reason",
        ),
        (
            "confirm.schema.json",
            {
                "version": 1,
                "type": "confirm",
                "station_id": "st-1",
                "request": 1,
                "position": 0,
                "head_hash": "00" * 32,
                "checkpoint": None,
                "closing": None,
                "state": "maybe",
            },
            "an unknown state",
        ),
        (
            "hello.schema.json",
            {"version": 1, "type": "hello", "station_id": "st-1\n", "request": 1},
            "a station id with a trailing newline",
        ),
        (
            "hello.schema.json",
            {"version": 1, "type": "hello", "station_id": "st-1", "request": 2**63},
            "a request number of 2^63",
        ),
        (
            "zero-report.schema.json",
            {
                "version": 1,
                "type": "zero_report",
                "station_id": "st-1",
                "base_hash": "00" * 32,
                "head_hash": "00" * 32,
                "position": 0,
                "terminals": {"t1": 1},
                "signature": "00" * 64,
            },
            "a zero report that is not zero",
        ),
    ],
)
def test_targeted_hostile_messages_are_refused(schema: str, document: Any, what: str):
    assert_invalid(schema, document, what)


def test_the_targeted_check_in_is_valid_before_it_is_changed():
    assert_valid("checkin.schema.json", GOOD_CHECKIN)
