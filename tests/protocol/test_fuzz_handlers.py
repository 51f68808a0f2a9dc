"""Property-based fuzzing of the handlers behind the decoders, without a broker: the ledger
core, the roll service's decision path, the forwarder's state machine and the operator
monitor. Hostile input gives only documented refusals — never an exception, never
``internal_error`` — and the next good message is still handled."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mutations import FUZZ, LIGHT, hostile_bytes
from protocol_kit import STATION_ID, Sub, kit
from protocol_samples import samples

from election.encoding import canonical_bytes, parse_json, sha256
from election.errors import FormatError
from election.record import RecordWriter
from election.simulation import write_election_package
from protocol.errors import CheckinReason, Reason, Refusal
from protocol.forwarding import Confirm, parse_down
from protocol.messages import CheckinChallenge, CheckinGranted, CheckinRefused
from protocol.topics import Topics
from station_hub.forwarder import ForwarderCore, SendBatch, SendHello
from station_hub.ledger import Duplicate, Held, LedgerCore, Refused
from station_hub.monitor import MonitorState

SENDERS = st.sampled_from(["x1", "x1", "x2", "x9", "x1\n", ""])


def _maybe_resigned(payload: bytes, resign: bool) -> bytes:
    """A hostile ballot signed by its terminal, so that it gets past the signature check."""
    if not resign:
        return payload
    try:
        document = parse_json(payload)
        if isinstance(document, dict) and isinstance(document.get("ballot"), dict):
            return canonical_bytes({**document, "ballot": kit().resign(document["ballot"])})
        return canonical_bytes(kit().resign(document)) if isinstance(document, dict) else payload
    except FormatError:
        return payload


def _assert_documented(decision: Any) -> None:
    assert isinstance(decision, Held | Duplicate | Refused), decision
    if isinstance(decision, Refused):
        assert isinstance(decision.reason, Reason) and decision.reason is not Reason.INTERNAL_ERROR
        decision.ack().encode()  # the refusal can always be sent back


# --- ledger ---------------------------------------------------------------------------------


@LIGHT
@given(
    payloads=st.lists(
        st.tuples(
            st.one_of(hostile_bytes(samples()["cast ballot"].valid), hostile_bytes(samples()["spoiled ballot"].valid)),
            SENDERS,
            st.booleans(),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_the_ledger_core_refuses_hostile_ballots_with_a_reason_and_takes_the_next_good_one(
    payloads: list[tuple[bytes, str, bool]],
) -> None:
    core = kit().ledger_core()
    for now, (payload, sender, resign) in enumerate(payloads):
        _assert_documented(core.decide(_maybe_resigned(payload, resign), sender, now=float(now)))
        _assert_batches_hold(core, float(now))
    decision = core.decide(_next_good(core), "x1", now=100.0)
    assert isinstance(decision, Held), decision
    _assert_batches_hold(core, 100.0)


def _next_good(core: LedgerCore) -> bytes:
    """A good cast ballot of x1 whose statement follows what the core holds of x1."""
    held = [ballot_hash for ballot_hash, device in core.state.held.items() if device == "x1"]
    statement = core.state.statements.get("x1")
    ballot = kit().cast()
    hashes = [*held, sha256(canonical_bytes(ballot))]
    if statement is not None and statement.sealed >= len(hashes):  # a hostile statement claimed more
        hashes += [secrets.token_bytes(32) for _ in range(statement.sealed + 1 - len(hashes))]
    return Sub(ballot, statement=kit().statement("x1", hashes)).payload()


def _assert_batches_hold(core: LedgerCore, now: float) -> None:
    """Whatever was held, a due batch takes the whole pool, sorted, and chains it."""
    if core.batch_due(now):
        pool = set(core.state.pool)
        batch = core.take_batch()
        assert [b.entry.ballot_hash for b in batch] == sorted(pool)
        assert not core.state.pool and core.state.head.position == batch[-1].entry.position


@FUZZ
@given(st.binary(max_size=400), SENDERS)
def test_the_ledger_core_on_random_bytes(payload: bytes, sender: str) -> None:
    _assert_documented(kit().ledger_core().decide(payload, sender))


# --- roll -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roll(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real roll service of a real station directory, never connected: its decision path
    (decode → prove the card → decide → mark) is called as the network thread calls it."""
    from station_hub.roll_service import RollService
    from station_hub.station import init_station

    root = tmp_path_factory.mktemp("roll")
    k = kit()
    write_election_package(RecordWriter(root / "election"), k.manifest, k.context, list(k.publics))
    station = init_station(root / "station", STATION_ID, root / "election", ["t1", "t2"], ["op1"], port=1)
    service = RollService(station)
    try:
        yield service
    finally:
        with contextlib.suppress(Exception):
            service.store.close()


@LIGHT
@given(
    payload=st.one_of(
        hostile_bytes(samples()["check-in"].valid),
        hostile_bytes(samples()["check-in challenge request"].valid),
        st.binary(max_size=300),
    ),
    terminal=st.sampled_from(["t1", "t2", "t9"]),
)
def test_the_roll_answers_hostile_check_ins_with_a_documented_refusal(roll: Any, payload: bytes, terminal: str) -> None:
    reply = roll._decide(terminal, payload)
    assert isinstance(reply, CheckinChallenge | CheckinGranted | CheckinRefused), reply
    if isinstance(reply, CheckinRefused):
        assert isinstance(reply.reason, CheckinReason) and reply.reason is not CheckinReason.INTERNAL_ERROR, reply
    assert not isinstance(reply, CheckinGranted), "a hostile check-in was granted"
    reply.encode()


# --- forwarder ------------------------------------------------------------------------------


@FUZZ
@given(
    answers=st.lists(
        st.one_of(hostile_bytes(samples()["confirm"].valid), hostile_bytes(samples()["refused"].valid)),
        min_size=1,
        max_size=4,
    ),
    ledger_head=st.integers(0, 2**63 - 1),
)
def test_the_forwarder_core_takes_any_answer_from_the_centre(answers: list[bytes], ledger_head: int) -> None:
    core = ForwarderCore(STATION_ID, timeout=5.0, first_request=6)  # its hello is request 7, as in the samples
    assert isinstance(core.connected(0.0), SendHello)
    statements = {"checkpoint": {"position": 3}, "closing_report": {"position": 3, "check_ins": 3}}
    for step, payload in enumerate(answers, start=1):
        try:
            answer = parse_down(payload, STATION_ID)
        except Refusal:
            continue  # the forwarder logs and ignores it
        assert isinstance(core.received(answer, float(step)), bool)
        action = core.tick(float(step), ledger_head, statements)
        assert action is None or isinstance(action, SendHello | SendBatch)
        if isinstance(action, SendBatch) and isinstance(answer, Confirm):
            assert action.first_position == answer.head.position + 1
    assert isinstance(core.tick(1000.0, ledger_head, statements), SendHello | SendBatch | type(None))


# --- monitor --------------------------------------------------------------------------------

TOPICS = Topics(STATION_ID)


@FUZZ
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(
                [TOPICS.terminal_status("t1"), TOPICS.terminal_status("t2"), TOPICS.ledger_status, TOPICS.roll_status,
                 TOPICS.terminal_status("a/b"), "station/other/ledger/status"]
            ),
            st.one_of(
                hostile_bytes(samples()["terminal status"].valid),
                hostile_bytes(samples()["ledger status"].valid),
                hostile_bytes(samples()["roll status"].valid),
            ),
        ),
        min_size=1,
        max_size=5,
    )
)  # fmt: skip
def test_the_monitor_shows_or_flags_any_retained_status(messages: list[tuple[str, bytes]]) -> None:
    state = MonitorState(TOPICS)
    for now, (topic, payload) in enumerate(messages):
        state.apply(topic, payload, float(now))
        assert all(isinstance(alert, str) for alert in state.alerts(float(now)))
        state.rows()
        state.summary()
    state.apply(TOPICS.terminal_status("t1"), samples()["terminal status"].valid, 99.0)
    assert TOPICS.terminal_status("t1") not in state.unreadable
    assert state.terminals["t1"].online
