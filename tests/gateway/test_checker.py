"""The sans-I/O parts: the centre's judgement of forwarded batches of record format 2 (sorted
batches, spoiled and cast entries, device statements, the after-close audit), the protocol's
refusal of bad messages, and the hub's stop-and-wait state machine."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from central_kit import StationDouble

from election.chain import ChainEntry, ChainHead
from election.devices import DeviceStatement
from election.encoding import canonical_bytes
from election.errors import FormatError
from election.manifest import sample_manifest
from election.simulation import ceremony
from gateway.checker import (
    Applied,
    ElectionKeys,
    Prevalidated,
    StationJudge,
    StationProfile,
    StationSnapshot,
    batch_rule_problem,
    device_problems,
    prevalidate,
)
from protocol.forwarding import Batch, ClosingSeen, Confirm, ForwardedEntry, batch_payload, parse_up
from station_hub.forwarder import ForwarderCore, SendBatch, SendHello

MANIFEST = sample_manifest(contests=2, selections=3, limit=1, batch_min=3)


@pytest.fixture(scope="module")
def election() -> ElectionKeys:
    _trustees, _publics, context = ceremony(MANIFEST, 2, 2)
    return ElectionKeys(MANIFEST, context.joint_public_key)


@pytest.fixture
def station(election: ElectionKeys) -> StationDouble:
    return StationDouble(MANIFEST, election.joint_key, "st-x", ("x1", "x2"))


def judge(
    election: ElectionKeys,
    station: StationDouble,
    entries: list[ForwardedEntry],
    snapshot: StationSnapshot | None = None,
    devices: tuple[DeviceStatement, ...] = (),
) -> tuple[Prevalidated, Applied]:
    profile = StationProfile(station.keys, station.devices)
    checked = prevalidate(profile, election, Batch("st-x", 1, tuple(entries), (), devices))
    genesis = station.chain.genesis
    return checked, StationJudge("st-x", genesis).apply(snapshot or StationSnapshot(ChainHead(0, genesis)), checked)


def test_a_sorted_batch_of_spoiled_and_cast_ballots_is_chained(election, station) -> None:
    entries = station.commit([station.spoil("x1"), station.cast("x1"), station.cast("x2")])
    checked, applied = judge(election, station, entries)
    assert checked.incidents == [] and applied.incidents == []
    assert sorted(e.entry.kind for e in applied.entries) == ["cast", "cast", "spoiled"]
    assert applied.head == station.chain.head and applied.head.batch == 1


def test_spoiled_whose_opening_does_not_reproduce_it_is_refused(election, station) -> None:
    spoiled = station.spoil("x1")
    opening = copy.deepcopy(spoiled.opening)
    opening["contests"][0]["selections"][0]["vote"] = 1 - opening["contests"][0]["selections"][0]["vote"]
    entries = station.commit([replace(spoiled, opening=opening)])
    checked, applied = judge(election, station, entries)
    assert [(i.position, i.kind) for i in checked.incidents] == [(1, "invalid")]
    assert "opening does not reproduce" in checked.incidents[0].detail
    assert applied.head.position == 0  # nothing beyond the refused entry is chained


def test_cast_entry_without_token_and_spoiled_entry_with_token_are_refused(election, station) -> None:
    first, second = station.commit([station.spoil("x1"), station.cast("x1")])
    swapped = [
        replace(first, entry=replace(first.entry, kind="cast" if first.entry.kind == "spoiled" else "spoiled"),
                opening=None if first.opening else second.opening),
        replace(second, entry=replace(second.entry, kind="cast" if second.entry.kind == "spoiled" else "spoiled"),
                opening=None if second.opening else first.opening),
    ]  # fmt: skip
    checked, _ = judge(election, station, swapped)
    assert sorted(i.detail for i in checked.incidents) == [
        "a cast ballot without a token",
        "a spoiled ballot must not carry a token",
    ]


def relinked(entries: list[ForwardedEntry], head: ChainHead) -> list[ForwardedEntry]:
    """``entries`` in the order given, each linked to the one before (a forger's careful work)."""
    out, prev = [], head.entry_hash
    for position, item in enumerate(entries, start=head.position + 1):
        entry = ChainEntry(position, item.entry.batch, prev, item.entry.ballot_hash, item.entry.kind)
        out.append(ForwardedEntry(entry, item.ballot, item.opening))
        prev = entry.entry_hash
    return out


def test_a_batch_out_of_ballot_hash_order_is_refused_where_the_order_breaks(election, station) -> None:
    entries = station.commit([station.cast("x1"), station.cast("x2"), station.cast("x1")])
    reordered = relinked([entries[1], entries[0], entries[2]], ChainHead(0, station.chain.genesis))
    checked, applied = judge(election, station, reordered)
    assert checked.incidents == []
    assert [(i.position, i.kind) for i in applied.incidents] == [(2, "invalid")]
    assert "out of ballot-hash order" in applied.incidents[0].detail
    assert applied.head.position == 1  # the head stays where the order broke, for an honest resend


def test_a_ballot_replayed_into_the_same_chain_is_refused_and_one_from_another_station_flagged(
    election, station
) -> None:
    first = station.commit([station.cast("x1"), station.cast("x2")])
    head = station.chain.head
    replay = relinked([first[0]], head)
    replay = [replace(replay[0], entry=replace(replay[0].entry, batch=2))]
    held = {first[0].entry.ballot_hash: ("st-x", first[0].entry.position)}
    snapshot = StationSnapshot(head, last_ballot=first[1].entry.ballot_hash, ballot_owners=held)
    _, applied = judge(election, station, replay, snapshot)
    assert [i.kind for i in applied.incidents] == ["invalid"] and applied.head == head
    assert "already chained at position 1 of this station (replayed?)" in applied.incidents[0].detail
    elsewhere = StationSnapshot(head, last_ballot=first[1].entry.ballot_hash, ballot_owners={
        first[0].entry.ballot_hash: ("st-y", 7)})  # fmt: skip
    _, applied = judge(election, station, replay, elsewhere)
    assert [(i.kind, i.detail) for i in applied.incidents] == [
        ("ballot_reused", "the same ballot is already chained at station st-y position 7")
    ]
    assert applied.head.position == 3


def test_a_batch_spanning_two_messages_continues_from_the_head_ballot(election, station) -> None:
    entries = station.commit([station.cast("x1"), station.cast("x2"), station.cast("x1")])
    _, first = judge(election, station, entries[:2])
    resumed = StationSnapshot(first.head, last_ballot=entries[1].entry.ballot_hash)
    _, second = judge(election, station, entries[2:], resumed)
    assert second.incidents == [] and second.head == station.chain.head
    # Without knowing the head's ballot the order could not be checked; with a wrong one it fails.
    lower = StationSnapshot(first.head, last_ballot=b"\xff" * 32)
    _, refused = judge(election, station, entries[2:], lower)
    assert [i.kind for i in refused.incidents] == ["invalid"] and refused.head == first.head


def test_device_statements_keep_the_largest_sealed_and_refuse_forgeries(election, station) -> None:
    station.cast("x1")
    older = station.statements()[0]
    station.cast("x1")
    newer = station.statements()[0]
    stranger = StationDouble(MANIFEST, election.joint_key, "st-y", ("x1",))
    stranger.cast("x1")
    forged = stranger.statements()[0]  # device id x1, signed by another key
    checked, applied = judge(election, station, [], devices=(newer,))
    assert applied.devices == [newer]
    kept = StationSnapshot(ChainHead(0, station.chain.genesis), device_statements={"x1": newer})
    _, again = judge(election, station, [], kept, devices=(older,))
    assert again.devices == [] and again.incidents == []  # an older one resent changes nothing
    checked, _ = judge(election, station, [], devices=(forged,))
    assert checked.devices == [] and "not signed by that device" in checked.incidents[0].detail
    other_set = DeviceStatement.make(station.signers["x1"], MANIFEST.base_hash, [bytes(32), b"\x01" * 32])
    _, conflict = judge(election, station, [], kept, devices=(other_set,))
    assert conflict.devices == [] and "two different sets of 2 ballots" in conflict.incidents[0].detail


def test_device_problems_name_a_dropped_added_or_replaced_ballot(station) -> None:
    for _ in range(3):
        station.cast("x1")
    station.cast("x2")
    statements = {s.device_id: s for s in station.statements()}
    sent = {device: list(hashes) for device, hashes in station.sent.items()}
    assert device_problems("st-x", sent, statements) == []
    unsent = station.cast("x1", sent=False).ballot_hash
    cases = {
        "dropped": {**sent, "x1": sent["x1"][1:]},
        "added": {**sent, "x1": [*sent["x1"], unsent]},
        "replaced by one of its own it never sent": {**sent, "x1": [*sent["x1"][1:], unsent]},
        "replaced by another terminal's": {"x1": sent["x1"][1:], "x2": [*sent["x2"], sent["x1"][0]]},
    }
    found = {name: [i.detail for i in device_problems("st-x", held, statements)] for name, held in cases.items()}
    assert found["dropped"] == ["device x1 signed 3 ballots sealed, the centre holds 2: 1 missing (dropped?)"]
    assert found["added"] == ["device x1 signed 3 ballots sealed, the centre holds 4: 1 too many (added?)"]
    assert found["replaced by one of its own it never sent"] == [
        "device x1: the 3 ballots held are not the set it signed (a ballot replaced?)"
    ]
    assert len(found["replaced by another terminal's"]) == 2
    no_statement = device_problems("st-x", sent, {"x1": statements["x1"]})
    assert [i.detail for i in no_statement] == ["device x2: 1 ballots held but no device statement after the close"]
    assert {i.kind for i in no_statement} == {"device_mismatch"}


def test_the_batch_rule_up_to_the_close(election, station) -> None:
    station.commit([station.cast("x1") for _ in range(3)])
    station.commit([station.cast("x2")])  # the batch committed at the final close may be small
    station.close()
    station.commit([station.cast("x1")])  # so may a late one
    genesis, chain = station.chain.genesis, [item.entry for item in station.entries]
    assert batch_rule_problem("st-x", genesis, chain, 3, 4) is None
    small = StationDouble(MANIFEST, election.joint_key, "st-x", ("x1",))
    small.commit([small.cast("x1") for _ in range(2)])  # fewer than batch_min while the polls were open
    small.commit([small.cast("x1") for _ in range(3)])
    problem = batch_rule_problem("st-x", genesis, [item.entry for item in small.entries], 3, 5)
    assert problem is not None and problem.kind == "batch_rule" and "batch 1 holds 2 ballots" in problem.detail
    inside = batch_rule_problem("st-x", genesis, chain[:4], 3, 2)
    assert inside is not None and "not the end of a batch" in inside.detail


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"request":1,"station_id":"st-x","type":"hello","version":1}',
        b'{"request":1,"station_id":"st-y","type":"hello","version":2}',
        b'{"request":-1,"station_id":"st-x","type":"hello","version":2}',
        b'{"extra":0,"request":1,"station_id":"st-x","type":"hello","version":2}',
        b'{"devices":[],"entries":[{"entry":{}}],"request":1,"station_id":"st-x","statements":[],"type":"batch",'
        b'"version":2}',
        b'{"devices":[],"entries":[],"request":1,"station_id":"st-x","statements":[{"type":"x"}],"type":"batch",'
        b'"version":2}',
        b'{"entries":[],"request":1,"station_id":"st-x","statements":[],"type":"batch","version":2}',
        b'{"devices":{},"entries":[],"request":1,"station_id":"st-x","statements":[],"type":"batch","version":2}',
        b'{"devices":[{"type":"device_statement"}],"entries":[],"request":1,"station_id":"st-x","statements":[],'
        b'"type":"batch","version":2}',
        b'{"request":1.5,"station_id":"st-x","type":"hello","version":2}',
    ],
)
def test_bad_up_messages_are_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(FormatError):
        parse_up(payload, "st-x")


def test_a_batch_round_trips_with_its_device_statements(station) -> None:
    entries = station.commit([station.spoil("x1"), station.cast("x2")])
    devices = station.statements()
    parsed = parse_up(batch_payload("st-x", 9, entries, [], devices), "st-x")
    assert isinstance(parsed, Batch) and parsed.entries == tuple(entries) and parsed.request == 9
    assert parsed.devices == tuple(devices)
    assert canonical_bytes(parsed.entries[1].ballot) == canonical_bytes(entries[1].ballot)
    twice = batch_payload("st-x", 9, [], [], [devices[0], devices[0]])
    with pytest.raises(FormatError, match="one statement per device"):
        parse_up(twice, "st-x")


def confirm(request: int, position: int, **kw) -> Confirm:
    return Confirm("st-x", request, ChainHead(position, bytes(32)), kw.get("checkpoint"), kw.get("closing"), "ok")


def test_forwarder_resumes_from_what_the_centre_says_and_asks_again_when_unanswered() -> None:
    core = ForwarderCore("st-x", timeout=5.0, first_request=100)
    hello = core.connected(0.0)
    assert isinstance(hello, SendHello)
    assert core.tick(1.0, 10, {}) is None  # waiting for the answer
    assert not core.received(confirm(hello.request + 7, 0), 1.0)  # a stale answer is ignored
    assert core.received(confirm(hello.request, 4), 1.0)
    batch = core.tick(1.0, 10, {})
    assert isinstance(batch, SendBatch) and batch.first_position == 5
    again = core.tick(6.5, 10, {})  # no confirm within the timeout
    assert isinstance(again, SendHello)
    assert core.received(confirm(again.request, 4), 7.0)
    retry = core.tick(7.0, 10, {})
    assert isinstance(retry, SendBatch) and retry.first_position == 5
    assert core.received(confirm(retry.request, 4), 7.5)  # no progress: the centre refused an entry
    assert core.tick(8.0, 10, {}) is None and isinstance(core.tick(12.6, 10, {}), SendBatch)


def test_forwarder_sends_statements_the_centre_lacks_and_then_idles() -> None:
    core = ForwarderCore("st-x", timeout=5.0, first_request=0)
    hello = core.connected(0.0)
    closing = {"position": 3, "check_ins": 3}
    statements = {"checkpoint": {"position": 3}, "closing_report": closing}
    core.received(confirm(hello.request, 3, checkpoint=3, closing=ClosingSeen(3, None)), 0.1)
    batch = core.tick(0.2, 3, statements)
    assert isinstance(batch, SendBatch)  # the closing report now carries the check-ins
    core.received(confirm(batch.request, 3, checkpoint=3, closing=ClosingSeen(3, 3)), 0.3)
    assert core.tick(0.4, 3, statements) is None
    undelivered = core.tick(9.0, 4, statements)
    core.undelivered(undelivered.request, 9.1)  # PUBACK 16: no gateway is subscribed
    assert core.tick(9.5, 4, statements) is None and isinstance(core.tick(10.2, 4, statements), SendHello)


def test_forwarder_idles_once_the_centre_holds_the_checkpoint_at_position_0() -> None:
    """Before the first ballot the ledger signs checkpoints at position 0: once the centre holds
    one, nothing is missing (0 is a position, not "none"; this was a false error at every start)."""
    core = ForwarderCore("st-x", timeout=5.0, first_request=0)
    hello = core.connected(0.0)
    statements = {"checkpoint": {"position": 0}}
    assert core.received(confirm(hello.request, 0), 0.1)
    batch = core.tick(0.2, 0, statements)
    assert isinstance(batch, SendBatch) and batch.first_position == 1
    assert core.received(confirm(batch.request, 0, checkpoint=0), 0.3)
    assert core.tick(0.4, 0, statements) is None and core.tick(20.0, 0, statements) is None
