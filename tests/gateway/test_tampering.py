"""A ballot deleted, altered or inserted between hub and centre (with a real hub) is caught and
reported with its station and position; the honest hub's resend then heals the chain; a
different entry at a position the centre already holds is a FORK; an unregistered station is
refused. (What a dishonest hub itself does to a terminal's ballots: test_tampered_forwarding.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway_fixtures import CentreClient, confirmed_position, running_station

from demo.linking import link_station
from election.chain import ChainEntry
from election.encoding import canonical_bytes, sha256
from election.record import DirectoryRecord
from election.verify import verify_record
from gateway.central import Central
from gateway.export import export_record
from gateway.harness import CentralOffice, start_forwarder, wait_until_complete
from protocol.forwarding import ForwardedEntry, Refusal, batch_payload, hello_payload
from station_hub.forwarder import LedgerReader


def relinked(entries: list[ForwardedEntry], first_prev: bytes) -> list[ForwardedEntry]:
    """What a careful attacker sends: every entry's prev_hash recomputed so the chain links."""
    out, prev = [], first_prev
    for item in entries:
        entry = ChainEntry(
            item.entry.position, item.entry.batch, prev, sha256(canonical_bytes(item.ballot)), item.entry.kind
        )
        out.append(ForwardedEntry(entry, item.ballot, item.opening))
        prev = entry.entry_hash
    return out


def swap_votes(ballot: dict) -> dict:
    """Exchange the first two selections' ciphertexts: a different vote, every proof intact."""
    selections = [dict(s) for s in ballot["contests"][0]["selections"]]
    selections[0]["ciphertext"], selections[1]["ciphertext"] = selections[1]["ciphertext"], selections[0]["ciphertext"]
    contests = [{**ballot["contests"][0], "selections": selections}, *ballot["contests"][1:]]
    return {**ballot, "contests": contests}


def test_deleted_altered_inserted_entries_are_reported_and_healed(
    central: Central, station_templates, tmp_path: Path
) -> None:
    with running_station(station_templates["st-a"], tmp_path / "st-a") as station:
        link_station(central, station.station.directory)
        station.polls("open")
        station.vote(5)
        station.polls("close")
        reader = LedgerReader(station.station.ledger_db)
        honest = reader.entries_from(1)
        reader.close()
        sid = station.station_id
        with CentralOffice(central, workers=1), CentreClient.of_station(station.station.directory) as centre:
            assert confirmed_position(centre.send(lambda r: hello_payload(sid, r))) == 0
            head2 = honest[1].entry.entry_hash

            deleted = [honest[0], honest[1], honest[3], honest[4]]
            assert confirmed_position(centre.send(lambda r: batch_payload(sid, r, deleted, []))) == 2

            altered = relinked([replace(honest[2], ballot=swap_votes(honest[2].ballot)), *honest[3:]], head2)
            assert confirmed_position(centre.send(lambda r: batch_payload(sid, r, altered, []))) == 2

            inserted = relinked([replace(honest[2], ballot=honest[0].ballot), *honest[2:]], head2)
            assert confirmed_position(centre.send(lambda r: batch_payload(sid, r, inserted, []))) == 2

            forwarder = start_forwarder(station.station.directory, timeout=2.0)
            try:
                wait_until_complete(central, [sid], timeout=30)
            finally:
                forwarder.terminate()
                forwarder.wait(10)

            forged = relinked([replace(honest[1], ballot=honest[0].ballot)], honest[0].entry.entry_hash)
            answer = centre.send(lambda r: batch_payload(sid, r, forged, []))
            assert confirmed_position(answer) == 5 and answer.state == "forked"

    store = central.store()
    try:
        incidents = [(i.station_id, i.position, i.kind, i.resolved, i.detail) for i in store.incidents()]
        record = tmp_path / "record"
        summary = export_record(central, store, record)
    finally:
        store.close()
    found = {(s, p, k, r) for s, p, k, r, _ in incidents}
    assert (sid, 3, "gap", True) in found  # deleted on the way; healed by the hub's resend
    details = {d for s, p, k, r, d in incidents if (s, p, k) == (sid, 3, "invalid")}
    assert any("signature of device" in d for d in details)  # altered
    assert any("already chained at position 1 of this station (replayed?)" in d for d in details)  # inserted
    assert (sid, 2, "fork", False) in found
    assert summary.stations == {sid: 5} and any("FORKED" in p for p in summary.problems)
    report = verify_record(DirectoryRecord(record))
    assert report.failed_checks() == [13, 14, 15]  # every chain and ballot check passes; not yet tallied


def test_unregistered_station_is_refused_and_flagged(central: Central, station_templates, tmp_path: Path) -> None:
    with running_station(station_templates["st-b"], tmp_path / "st-b") as station:
        link_station(central, station.station.directory)
        store = central.store()
        store._run("DELETE FROM devices WHERE station_id = ?", ("st-b",))  # the registration is lost
        store._run("DELETE FROM stations WHERE station_id = ?", ("st-b",))
        store.close()
        with CentralOffice(central, workers=1), CentreClient.of_station(station.station.directory) as centre:
            answer = centre.send(lambda r: hello_payload("st-b", r))
            assert isinstance(answer, Refusal) and answer.reason == "unknown_station"
            not_a_batch = (
                '{{"devices":[],"entries":"none","request":{},"station_id":"st-b","statements":[],"type":"batch",'
                '"version":2}}'
            )
            malformed = centre.send(lambda r: not_a_batch.format(r).encode())
            assert isinstance(malformed, Refusal) and malformed.reason == "malformed"
    store = central.store()
    try:
        kinds = {(i.station_id, i.kind) for i in store.incidents()}
    finally:
        store.close()
    assert {("st-b", "unknown_station"), ("st-b", "malformed")} <= kinds
