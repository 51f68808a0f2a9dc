"""An attacker holding one real terminal certificate: single hostile messages through the real
Mosquitto to the real ledger and roll. Each is refused with a reason, the services stay up,
nothing is written, the broker does not redeliver them, and the next good ballot goes in."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from hub_fixtures import Hub, chain_of, file_digests, held_of
from test_ledger import CHOICES, open_polls, resign, submission

from audit.chain import AuditEntry
from audit.store import read_log
from election import tokens
from election.ballot import Token
from election.encoding import canonical_bytes, parse_json
from infra.broker import Broker
from infra.errors import SiteError
from infra.mqtt import HubClient
from protocol.messages import TerminalStatus
from station_hub.ledger_service import ledger_audit_paths
from station_hub.monitor import MonitorState, subscribe_all
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient


def logical_dump(station: Station) -> list[str]:
    """Every row of the ledger's and the roll's databases, as SQL (independent of file layout)."""
    dump = []
    for path in (station.ledger_db, station.roll_db):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dump += list(db.iterdump())
        finally:
            db.close()
    return dump


def hostile_ballots(good: dict[str, Any], t1: TerminalClient) -> list[tuple[str, bytes, str]]:
    """(name, payload, expected reason): what issue 11 found, and their cousins."""
    payload = submission(t1, good)
    version_true = resign(t1, {**good, "version": True})
    as_float = payload.replace(b'"version":2}', b'"version":2.0}')
    assert as_float != payload
    sealed = parse_json(payload)["statement"]["sealed"]
    huge_count = payload.replace(f'"sealed":{sealed}'.encode(), b'"sealed":' + b"9" * 5000)
    assert huge_count != payload
    return [
        ("lone surrogate", b'{"a":"\\ud800"}', "malformed"),
        ("lone surrogate in a ballot", payload[:-1] + b',"z":"\\udfff"}', "malformed"),
        ("5,000-digit integer", b'{"sealed":' + b"9" * 5000 + b"}", "malformed"),
        ("5,000-digit count in a statement", huge_count, "malformed"),
        ("version true", version_true, "malformed"),
        ("UTF-16 ballot", payload.decode().encode("utf-16"), "malformed"),
        ("UTF-8 byte-order mark", b"\xef\xbb\xbf" + payload, "malformed"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "malformed"),
        ("duplicate key", b'{"version":1,"version":1}', "malformed"),
        ("empty payload", b"", "malformed"),
        ("not an object", b"[]", "malformed"),
        ("float", as_float, "malformed"),
    ]


def test_hostile_ballots_are_refused_the_ledger_stays_up_and_nothing_changes(
    hub: Hub, station: Station, voters: list[str]
) -> None:
    open_polls(station)
    with TerminalClient(station, "t1").connect() as t1:
        first = t1.seal(CHOICES, t1.check_in(voters[0]))
        assert t1.submit(t1.submission(first))["result"] == "held"
        good = t1.seal(CHOICES, t1.check_in(voters[1]))  # sealed, not sent yet
        good_payload = t1.submission(good)
        cases = hostile_ballots(good.to_json(), t1)
    hub.stop()
    before, dump_before = file_digests(station), logical_dump(station)
    hub.start()
    with TerminalClient(station, "t1").connect() as t1:
        for name, payload, reason in cases:
            ack = t1.submit(payload)
            assert (ack["result"], ack.get("reason")) == ("refused", reason), (name, ack)
            assert hub.ledger is not None and all(thread.is_alive() for thread in hub.threads), name
    hub.stop()
    assert file_digests(station) == before
    assert logical_dump(station) == dump_before
    # Restarted with its persistent session: nothing is redelivered, the good ballot goes in.
    hub.start()
    with TerminalClient(station, "t1").connect() as t1:
        assert t1.submit(good_payload)["result"] == "held"
        time.sleep(0.5)
    assert hub.ledger is not None and hub.ledger.refused == 0
    hub.stop()
    assert len(chain_of(station)) == 2, "the good ballot filled the pool: one batch of two"
    log_path, _key = ledger_audit_paths(station)
    lines, _torn = read_log(log_path)
    counted = [AuditEntry.parse(line).data for line in lines if AuditEntry.parse(line).kind == "refusals_counted"]
    assert sum(entry["count"] for entry in counted) == len(cases)
    assert len(counted) < len(cases), "refusals are aggregated per terminal, reason and interval"


def test_a_copied_ballot_and_another_terminals_resend_are_refused(
    hub: Hub, station: Station, voters: list[str]
) -> None:
    open_polls(station)
    with TerminalClient(station, "t1").connect() as t1, TerminalClient(station, "t2").connect() as t2:
        ballot = t1.seal(CHOICES, t1.check_in(voters[0]))
        payload = t1.submission(ballot)
        accepted = t1.submit(payload)
        assert accepted["result"] == "held"
        # The same ballot id, ciphertexts and proofs, with a fresh token, re-signed by t1.
        message = tokens.blind(t1.token_key, b"\x07" * 32)
        signature = tokens.blind_sign(station.token_private_key(), message.blinded)
        fresh = Token(b"\x07" * 32, tokens.finalize(t1.token_key, b"\x07" * 32, signature, message))
        copy = {**ballot.to_json(), "token": fresh.to_json()}
        refused = t1.submit(resign(t1, copy))
        assert (refused["result"], refused["reason"]) == ("refused", "duplicate_ballot_id")
        # t2 resending t1's held ballot learns nothing and gets no "held".
        stolen = t2.submit(payload)
        assert (stolen["result"], stolen["reason"]) == ("refused", "device_mismatch")
        assert t1.submit(payload) == accepted  # the sealing terminal's own resend is idempotent
    hub.stop()
    assert held_of(station) == {ballot.ballot_hash}


def test_the_broker_drops_a_message_over_its_size_limit(hub: Hub, station: Station) -> None:
    """Mosquitto answers PUBACK "implementation specific error", which paho 2.x cannot parse
    (it drops the connection as a protocol error): either way nothing reaches the ledger."""
    with TerminalClient(station, "t1").connect() as t1:
        try:
            code: int | None = t1.publish(station.topics.ballot("t1"), b"x" * (600 * 1024), timeout=5)
        except SiteError:
            code = None
        assert code not in (0, 16), "the broker must refuse an oversized PUBLISH"
    time.sleep(0.5)
    assert hub.ledger is not None and hub.ledger.refused == 0
    assert all(thread.is_alive() for thread in hub.threads)


def test_hostile_check_ins_are_refused_and_mark_no_voter(hub: Hub, station: Station, voters: list[str]) -> None:
    open_polls(station)
    with TerminalClient(station, "t1").connect() as t1:
        good = parse_json(t1.checkin_payload(voters[0], b"\x05" * t1.modulus_length))
        canonical = canonical_bytes(good)
        cases = [
            ("not canonical", canonical.replace(b",", b", ")),
            ("UTF-16", canonical.decode().encode("utf-16")),
            ("version true", canonical.replace(b'"version":1', b'"version":true')),
            ("lone surrogate", canonical[:-1] + b',"x":"\\ud800"}'),
            ("huge integer", b'{"version":' + b"1" * 5000 + b"}"),
        ]
        for name, payload in cases:
            reply = parse_json(t1.ask_roll(payload))
            assert (reply["result"], reply["reason"]) == ("refused", "malformed"), name
        t1.check_in(voters[0])  # the voter was not marked by any of them
    hub.stop()


def test_the_monitor_survives_a_hostile_retained_status(station: Station, broker: Broker) -> None:
    topics = station.topics
    with TerminalClient(station, "t1").connect() as t1:
        t1.publish(topics.terminal_status("t1"), b'{"ballots_cast":' + b"9" * 5000 + b"}", retain=True)
    with TerminalClient(station, "t2").connect() as t2:
        t2.publish(topics.terminal_status("t2"), TerminalStatus(True, "pn532", False, 3, 0).encode(), retain=True)
    state = MonitorState(topics)
    with HubClient(station, "op1").connect() as operator:
        subscribe_all(operator)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (state.unreadable and "t2" in state.terminals):
            for message in operator.pending():
                state.apply(message.topic, message.payload, 0.0)
            time.sleep(0.05)
    assert [row[:6] for row in state.rows() if row[0] == "t2"] == [("t2", "online", "pn532", "ok", "3", "0")]
    assert "t1" not in state.terminals, "an unreadable status replaces nothing"
    assert any(alert.startswith(f"unreadable status on {topics.terminal_status('t1')}") for alert in state.alerts(0))


@pytest.mark.parametrize("where", ["ledger", "roll"])
def test_a_bug_in_a_handler_costs_one_refusal_not_the_service(
    hub: Hub, station: Station, voters: list[str], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no decoder foresaw is answered ``internal_error`` and acknowledged."""
    open_polls(station)
    assert hub.ledger is not None and hub.roll is not None
    target = hub.ledger.core if where == "ledger" else hub.roll.core
    original = target.decide
    calls = {"n": 0}

    def first_call_fails(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ZeroDivisionError("a bug")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, "decide", first_call_fails)
    with TerminalClient(station, "t1").connect() as t1:
        if where == "roll":
            reply = parse_json(t1.ask_roll(t1.checkin_payload(voters[0], b"\x05" * t1.modulus_length)))
            assert (reply["result"], reply["reason"]) == ("refused", "internal_error")
            token = t1.check_in(voters[0])
        else:
            token = t1.check_in(voters[0])
            ballot = t1.seal(CHOICES, token)
            ack = t1.submit(t1.submission(ballot))
            assert (ack["result"], ack["reason"]) == ("refused", "internal_error")
            assert t1.submit(t1.submission(ballot))["result"] == "held"
    assert all(thread.is_alive() for thread in hub.threads)


@pytest.mark.parametrize("where", ["examiner", "device lookup"])
def test_a_failing_check_before_the_judgement_costs_one_refusal_not_the_service(
    hub: Hub, station: Station, voters: list[str], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stateless checks of a round run before the core judges each ballot: an exception
    there (a bug in a decoder, an unreadable CRL behind the key lookup) is answered
    ``internal_error`` for that ballot, the resend is held, and nothing else is stored."""
    open_polls(station)
    assert hub.ledger is not None
    core = hub.ledger.core
    target, name = (core.examiner, "examine") if where == "examiner" else (core, "devices")
    original = getattr(target, name)
    calls = {"n": 0}

    def fails_for_the_first_ballot(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:  # before the judgement, and again inside it
            raise OSError("unreadable")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, fails_for_the_first_ballot)
    with TerminalClient(station, "t1").connect() as t1:
        token = t1.check_in(voters[0])
        ballot = t1.seal(CHOICES, token)
        ack = t1.submit(t1.submission(ballot))
        assert (ack["result"], ack["reason"]) == ("refused", "internal_error")
        assert core.state.pool == {} and core.state.head.position == 0
        assert t1.submit(t1.submission(ballot))["result"] == "held"
    assert all(thread.is_alive() for thread in hub.threads)
