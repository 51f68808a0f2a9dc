"""The sans-I/O parts: the centre's judgement of spoiled and cast entries, the protocol's
refusal of bad messages, and the hub's stop-and-wait state machine."""

from __future__ import annotations

import copy

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from election.ballot import GENESIS_HASH, DeviceSigner, seal_ballot
from election.chain import ChainHead, ChainState, genesis_hash
from election.encoding import canonical_bytes
from election.errors import FormatError
from election.manifest import sample_manifest
from election.simulation import SimulatedStation, ceremony
from election.stations import StationKeys
from gateway.checker import ElectionKeys, StationJudge, StationProfile, StationSnapshot, prevalidate
from protocol.forwarding import Batch, ClosingSeen, Confirm, ForwardedEntry, batch_payload, parse_up
from station_hub.forwarder import ForwarderCore, SendBatch, SendHello

MANIFEST = sample_manifest(contests=2, selections=3, limit=1)
CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}


@pytest.fixture(scope="module")
def setting():
    _trustees, _publics, context = ceremony(MANIFEST, 2, 2)
    station = SimulatedStation("st-x", MANIFEST.base_hash)
    signer = DeviceSigner("x1", Ed25519PrivateKey.generate())
    keys = StationKeys("st-x", station.ledger_key.public_key(), station.roll_key.public_key())
    profile = StationProfile(keys, {"x1": signer.public_key})
    return ElectionKeys(MANIFEST, context.joint_public_key), station, signer, profile


def entries_for(setting, spoil_opening_tamper: bool = False) -> list[ForwardedEntry]:
    """A challenged ballot (spoiled, with its opening) then the voter's cast ballot."""
    election, station, signer, _profile = setting
    chain = ChainState(genesis_hash(MANIFEST.base_hash, "st-x"))
    spoiled, opening = seal_ballot(MANIFEST, election.joint_key, CHOICES, signer, 1, GENESIS_HASH)
    opening_json = opening.to_json(MANIFEST)
    if spoil_opening_tamper:
        opening_json = copy.deepcopy(opening_json)
        opening_json["contests"][0]["selections"][0]["vote"] = 1
    cast, _ = seal_ballot(MANIFEST, election.joint_key, CHOICES, signer, 2, spoiled.ballot_hash, station.issue_token())
    out = []
    for ballot, kind, extra in ((spoiled, "spoiled", opening_json), (cast, "cast", None)):
        entry = chain.next_entry(ballot.ballot_hash, kind)
        chain.append(entry)
        out.append(ForwardedEntry(entry, ballot.to_json(), extra))
    return out


def judge(setting, entries: list[ForwardedEntry]):
    election, _station, _signer, profile = setting
    checked = prevalidate(profile, election, Batch("st-x", 1, tuple(entries), ()))
    genesis = genesis_hash(MANIFEST.base_hash, "st-x")
    snapshot = StationSnapshot(ChainHead(0, genesis), "ok", {}, {}, {}, {}, [])
    return checked, StationJudge("st-x", genesis).apply(snapshot, checked)


def test_spoiled_with_its_opening_and_then_cast_are_both_chained(setting) -> None:
    checked, applied = judge(setting, entries_for(setting))
    assert checked.incidents == [] and applied.incidents == []
    assert [e.entry.kind for e in applied.entries] == ["spoiled", "cast"]
    assert applied.head.position == 2 and applied.device_heads["x1"][0] == 2


def test_spoiled_whose_opening_does_not_reproduce_it_is_refused(setting) -> None:
    checked, applied = judge(setting, entries_for(setting, spoil_opening_tamper=True))
    assert [(i.position, i.kind) for i in checked.incidents] == [(1, "invalid")]
    assert "opening does not reproduce" in checked.incidents[0].detail
    assert applied.head.position == 0  # nothing beyond the refused entry is chained


def test_cast_entry_without_token_and_spoiled_entry_with_token_are_refused(setting) -> None:
    spoiled, cast = entries_for(setting)
    swapped = [
        ForwardedEntry(spoiled.entry.__class__(1, spoiled.entry.prev_hash, spoiled.entry.ballot_hash, "cast"),
                       spoiled.ballot, None),
        ForwardedEntry(cast.entry.__class__(2, cast.entry.prev_hash, cast.entry.ballot_hash, "spoiled"),
                       cast.ballot, spoiled.opening),
    ]  # fmt: skip
    checked, _ = judge(setting, swapped)
    details = [i.detail for i in checked.incidents]
    assert details == ["a cast ballot without a token", "a spoiled ballot must not carry a token"]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"version":2,"type":"hello","station_id":"st-x","request":1}',
        b'{"version":1,"type":"hello","station_id":"st-y","request":1}',
        b'{"version":1,"type":"hello","station_id":"st-x","request":-1}',
        b'{"version":1,"type":"hello","station_id":"st-x","request":1,"extra":0}',
        b'{"version":1,"type":"batch","station_id":"st-x","request":1,"entries":[{"entry":{}}],"statements":[]}',
        b'{"version":1,"type":"batch","station_id":"st-x","request":1,"entries":[],"statements":[{"type":"x"}]}',
        b'{"version":1,"type":"hello","station_id":"st-x","request":1.5}',
    ],
)
def test_bad_up_messages_are_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(FormatError):
        parse_up(payload, "st-x")


def test_a_batch_round_trips(setting) -> None:
    entries = entries_for(setting)
    parsed = parse_up(batch_payload("st-x", 9, entries, []), "st-x")
    assert isinstance(parsed, Batch) and parsed.entries == tuple(entries) and parsed.request == 9
    assert canonical_bytes(parsed.entries[1].ballot) == canonical_bytes(entries[1].ballot)


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
