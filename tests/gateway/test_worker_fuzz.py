"""Property-based fuzzing of the gateway worker's handling of one up-message
(:meth:`GatewayWorker.handle`), with its real store (SQLite) and without a broker: whatever a
hub's certificate publishes on any topic, the worker answers with a message the hub's own
strict decoder reads (or does not answer), never raises, and the next honest batch is still
confirmed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "protocol"))  # the shared protocol kit

from mutations import FUZZ, hostile_bytes
from protocol_kit import STATION_ID, Sub, forwarded, kit
from protocol_samples import samples

from election.stations import StationKeys
from gateway.store import Store
from gateway.worker import GatewayWorker
from protocol.forwarding import Confirm, batch_payload, down_topic, parse_down, up_topic


@dataclass
class Message:
    """What paho hands the worker: a topic and a payload (the broker is not under test)."""

    topic: str
    payload: bytes


@dataclass
class Outbox:
    """The lowest layer only: the worker's MQTT client, recording what it publishes."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((topic, payload))


def make_worker(database: Path) -> GatewayWorker:
    k = kit()
    store = Store(database, k.manifest)
    profile = k.profile
    store.register_station(
        StationKeys(STATION_ID, profile.keys.ledger_key, profile.keys.roll_key), dict(profile.devices)
    )
    worker = object.__new__(GatewayWorker)  # everything __init__ sets except the central directory and broker
    worker.name = "gateway-fuzz"
    worker.election = k.election_keys
    worker.store = store
    worker.profiles = store.profiles()
    worker.failpoint = None
    worker.batches = 0
    worker.client = Outbox()  # type: ignore[assignment]
    return worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayWorker]:
    running = make_worker(tmp_path_factory.mktemp("gateway") / "gateway.db")
    try:
        yield running
    finally:
        running.store.close()


TOPICS = st.sampled_from(
    [up_topic(STATION_ID), up_topic(STATION_ID), up_topic("st-unknown"), up_topic("st-x\n"), "central/station/up",
     "central/station/a/b/up", up_topic("\udc80"), down_topic(STATION_ID), ""]
)  # fmt: skip
PAYLOADS = st.one_of(
    hostile_bytes(samples()["hello"].valid), hostile_bytes(samples()["batch"].valid), st.binary(max_size=200)
)


@FUZZ
@given(topic=TOPICS, payload=PAYLOADS)
def test_the_worker_answers_any_up_message_with_a_valid_down_message(
    worker: GatewayWorker, topic: str, payload: bytes
) -> None:
    outbox: Outbox = worker.client  # type: ignore[assignment]
    outbox.sent.clear()
    worker.handle(Message(topic, payload))  # type: ignore[arg-type]
    assert len(outbox.sent) <= 1
    for down, answer in outbox.sent:
        station = down.split("/")[2]
        assert down == down_topic(station)
        parse_down(answer, station)  # the hub's own strict decoder reads every answer


def test_after_hostile_messages_an_honest_batch_is_confirmed(tmp_path: Path) -> None:
    running = make_worker(tmp_path / "gateway.db")
    outbox: Outbox = running.client  # type: ignore[assignment]
    for payload in (
        b'{"a":"\\ud800"}',
        b"9" * 5000,
        samples()["batch"].valid.replace(b'"version":2', b'"version":true'),
    ):
        running.handle(Message(up_topic(STATION_ID), payload))  # type: ignore[arg-type]
    assert [parse_down(answer, STATION_ID).reason for _, answer in outbox.sent] == ["malformed"] * 3  # type: ignore[union-attr]
    k = kit()
    spoiled, opening = k.spoiled()
    honest = batch_payload(STATION_ID, 5, forwarded([Sub(spoiled, opening), Sub(k.cast())]), [])
    running.handle(Message(up_topic(STATION_ID), honest))  # type: ignore[arg-type]
    answer = parse_down(outbox.sent[-1][1], STATION_ID)
    assert isinstance(answer, Confirm) and answer.request == 5 and answer.head.position == 2
    running.store.close()


def test_a_failing_store_costs_one_message_not_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = make_worker(tmp_path / "gateway.db")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(running.store, "station_state", broken)
    running.handle_safely(Message(up_topic(STATION_ID), samples()["hello"].valid))  # type: ignore[arg-type]
    assert running.client.sent == []  # type: ignore[attr-defined]
    monkeypatch.undo()
    running.handle_safely(Message(up_topic(STATION_ID), samples()["hello"].valid))  # type: ignore[arg-type]
    assert isinstance(parse_down(running.client.sent[-1][1], STATION_ID), Confirm)  # type: ignore[attr-defined]
    running.store.close()
