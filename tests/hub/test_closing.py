"""Two-phase closing over the real broker: ``closing`` stops check-ins but keeps ballots of
tokens issued before; the final close needs every terminal drained or declared unreachable;
the final close chains the pool whatever its size; a ballot arriving after it is chained
``late`` (once no ballot came for a few seconds) and the closing report is signed again."""

from __future__ import annotations

import time

import pytest
from hub_fixtures import Hub, chain_of

from election.chain import verify_chain, verify_document
from election.devices import set_commitment
from election.encoding import parse_json
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
        assert t1.submit(t1.submission(t1.seal(CHOICES, t1.check_in(voters[0]))))["result"] == "held"
        during_closing = [t1.check_in(voters[1]), t1.check_in(voters[4])]  # issued before the close, cast during it
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

        for token in during_closing:
            assert t1.submit(t1.submission(t1.seal(CHOICES, token)))["result"] == "held"
        say_drained(t1, 3)

        with HubClient(station, "op1").connect() as operator:
            with pytest.raises(PollsRefused):
                change_polls(operator, "open")
            report = verify_document(change_polls(operator, "close", unreachable=("t2",), drain_wait=0.5), ledger_key)
        # Batches of 2: the first two ballots made one; the final close chained the third alone.
        assert report["position"] == report["closed_position"] == 3
        assert report["unreachable"] == {"t2": {"sealed": 0, "commitment": set_commitment([]).hex()}}
        assert report["ballots"] == 3 and report["check_ins"] == 4 and report["late"] == {}

        late_ballot = t2.seal(CHOICES, after_final)
        ack = t2.submit(t2.submission(late_ballot))
        assert ack["result"] == "held"
        t2.subscribe(station.topics.closing_report)
        message = t2.next_message(  # chained once no other ballot came for LATE_QUIET seconds
            10, lambda m: m.topic == station.topics.closing_report and b'"position":4' in m.payload
        )
        late = verify_document(parse_json(message.payload), ledger_key)
    assert late["late"] == {"t2": 1} and late["closed_position"] == 3
    assert late["ballots"] == late["check_ins"] == 4
    assert late["terminals"] == {"t1": 3, "t2": 1}
    assert late["unreachable"] == report["unreachable"]
    hub.stop()
    chain = chain_of(station)
    assert [(e.batch, e.kind) for e in chain] == [(1, "cast"), (1, "cast"), (2, "cast"), (3, "late")]
    verify_chain(station.genesis, chain, batch_min=2, closed_position=3)
    store = LedgerStore(station.ledger_db)
    try:
        state = store.load(station.genesis, station.election().manifest.base_hash)
    finally:
        store.close()
    assert state.polls == "closed" and state.closed_position == 3 and set(state.unreachable) == {"t2"}
    assert state.late_per_device == {"t2": 1} and state.statements["t2"].sealed == 1


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
