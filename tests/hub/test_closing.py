"""Two-phase closing over the real broker: ``closing`` stops check-ins but keeps ballots of
tokens issued before; the final close needs every terminal drained or declared unreachable;
a ballot arriving after it is chained ``late`` and the closing report is signed again."""

from __future__ import annotations

import time

import pytest
from hub_fixtures import Hub, chain_of

from election.chain import verify_document
from election.encoding import canonical_bytes, parse_json
from infra.mqtt import HubClient
from protocol.messages import TerminalStatus, polls_command
from station_hub.ledger_store import LedgerStore
from station_hub.operator import ClosingPending, PollsRefused, change_polls
from station_hub.station import Station
from station_hub.terminal_client import CheckinRefused, TerminalClient

CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}


def say_drained(terminal: TerminalClient, cast: int) -> None:
    status = TerminalStatus(True, "pcsc", False, cast, 0)
    assert terminal.publish(terminal.topics.terminal_status(terminal.terminal_id), status.encode(), retain=True) in (
        0,
        16,
    )


def ledger_polls(station: Station) -> str:
    with HubClient(station, "op1").connect() as client:
        client.subscribe(station.topics.ledger_status)
        return parse_json(client.next_message(5).payload)["polls"]


def test_closing_keeps_issued_tokens_and_final_close_chains_late_ballots(hub: Hub, station: Station, voters: list):
    ledger_key = station.signing_key("ledger").public_key()
    with HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open")
    with TerminalClient(station, "t1").connect() as t1, TerminalClient(station, "t2").connect() as t2:
        assert t1.submit(canonical_bytes(t1.seal(CHOICES, t1.check_in(voters[0])).to_json()))["result"] == "accepted"
        during_closing = t1.check_in(voters[1])  # issued before the close, cast during closing
        after_final = t2.check_in(voters[2])  # issued before the close, cast after the final close
        say_drained(t1, 1)

        with HubClient(station, "op1").connect() as operator, pytest.raises(ClosingPending) as pending:
            change_polls(operator, "close", unreachable=(), drain_wait=0.5)
        assert [p.terminal for p in pending.value.pending] == ["t2"]
        assert "never seen" in pending.value.pending[0].why
        assert ledger_polls(station) == "closing"
        with pytest.raises(CheckinRefused) as refused:
            t1.check_in(voters[3])
        assert refused.value.reason == "polls_not_open"

        ack = t1.submit(canonical_bytes(t1.seal(CHOICES, during_closing).to_json()))
        assert ack["result"] == "accepted" and ack["position"] == 2
        say_drained(t1, 2)

        with HubClient(station, "op1").connect() as operator:
            with pytest.raises(PollsRefused):
                change_polls(operator, "open")
            report = verify_document(change_polls(operator, "close", unreachable=("t2",), drain_wait=0.5), ledger_key)
        assert report["position"] == report["closed_position"] == 2
        assert report["unreachable"] == {"t2": {"device_seq": 0, "ballot_hash": "00" * 32}}
        assert report["ballots"] == 2 and report["check_ins"] == 3 and report["late"] == {}

        ack = t2.submit(canonical_bytes(t2.seal(CHOICES, after_final).to_json()))
        assert ack["result"] == "accepted" and ack["position"] == 3
        t2.subscribe(station.topics.closing_report)
        message = t2.next_message(
            5, lambda m: m.topic == station.topics.closing_report and b'"position":3' in m.payload
        )
        late = verify_document(parse_json(message.payload), ledger_key)
    assert late["late"] == {"t2": 1} and late["closed_position"] == 2
    assert late["ballots"] == late["check_ins"] == 3
    assert late["terminals"] == {"t1": 2, "t2": 1}
    assert late["unreachable"] == report["unreachable"]
    hub.stop()
    assert [e.kind for e in chain_of(station)] == ["cast", "cast", "late"]
    store = LedgerStore(station.ledger_db)
    try:
        state = store.load(station.genesis)
    finally:
        store.close()
    assert state.polls == "closed" and state.closed_position == 2 and set(state.unreachable) == {"t2"}
    assert state.late_per_device == {"t2": 1}


def send(station: Station, payload: bytes) -> None:
    with HubClient(station, "op1").connect() as operator:
        assert operator.publish(station.topics.polls_control, payload) in (0, 16)
    time.sleep(0.5)


def test_final_close_is_refused_before_closing_and_names_only_terminals(hub: Hub, station: Station):
    # One connection per identity at a time: a second one with the same certificate takes the session.
    with HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open")
    send(station, polls_command("final", ()))
    assert ledger_polls(station) == "open"
    with HubClient(station, "op1").connect() as operator, pytest.raises(Exception, match="not terminals of"):
        change_polls(operator, "close", unreachable=("t9",), drain_wait=0.1)
    send(station, polls_command("final", ("t9",)))
    assert ledger_polls(station) == "closing"
    with HubClient(station, "op1").connect() as operator:
        report = change_polls(operator, "close", drain_wait=0.1)  # scripts: declare what is not drained
    assert report["unreachable"].keys() == {"t1", "t2"}
