"""Record format 2 at the centre, over the real central broker, two workers and the store
(SQLite and PostgreSQL), with stations built from the election core (central_kit): a hub that
drops, adds or replaces one ballot of one terminal — signing its own chain and statements, as
root on the hub can — is caught by that terminal's device statement; a batch out of hash order
is refused; a batch smaller than batch_min before the close is flagged. The honest station is
complete once its terminals' statements arrive after the close (again after a late ballot),
`gateway lookup` names its station and batch, and the export carries the device statements."""

from __future__ import annotations

from pathlib import Path

import pytest
from central_kit import StationDouble, batch, enrol
from click.testing import CliRunner
from gateway_fixtures import confirmed_position, fresh_database, use_database

from election.chain import ChainEntry, tracking_code
from election.encoding import canonical_bytes, parse_json
from election.record import BALLOTS, DEVICE_STATEMENTS, SPOILED
from gateway.central import Central
from gateway.cli import main
from gateway.export import export_record
from gateway.harness import CentralOffice, station_states
from protocol.forwarding import ForwardedEntry


def stations(central: Central) -> dict[str, StationDouble]:
    election = central.election()
    names = ("honest", "drop", "add", "swap", "replace", "order", "small")
    return {
        name: StationDouble(
            election.manifest, election.context.joint_public_key, f"st-{name}", (f"{name}.1", f"{name}.2")
        )
        for name in names
    }


def open_incidents(central: Central, station_id: str) -> list[tuple[str, str]]:
    store = central.store()
    try:
        return sorted((i.kind, i.detail) for i in store.incidents(open_only=True) if i.station_id == station_id)
    finally:
        store.close()


def forward_all(client, station: StationDouble) -> None:
    """What a (dishonest) hub forwards after its final close: its chain with its signed
    statements, then its terminals' statements (the only thing it cannot forge)."""
    assert confirmed_position(client.send(batch(station, station.entries))) == station.chain.head.position
    assert confirmed_position(client.send(batch(station, [], devices=station.statements())))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_centre_catches_what_a_hub_does_to_one_terminals_ballots(
    backend: str, request: pytest.FixtureRequest, central: Central, tmp_path: Path
) -> None:
    if backend == "postgresql":
        central = use_database(central, fresh_database(request.getfixturevalue("postgres_admin")))
    assert central.election().manifest.batch_min == 2
    s = stations(central)
    clients = {name: enrol(central, station, tmp_path / "hubs") for name, station in s.items()}

    honest = s["honest"]
    honest.commit([honest.spoil("honest.1"), honest.cast("honest.1"), honest.cast("honest.2")])
    honest.commit([honest.cast("honest.2"), honest.cast("honest.1")])
    honest.close()

    drop = s["drop"]
    dropped = drop.cast("drop.1")  # sent by the terminal, held by the hub, never chained
    drop.commit([drop.cast("drop.1"), drop.cast("drop.2"), drop.cast("drop.2")])
    drop.close()

    add = s["add"]
    add.commit([add.cast("add.1"), add.cast("add.2"), add.cast("add.1", sent=False)])
    add.close()

    swap = s["swap"]  # one of swap.1's ballots replaced by one signed by swap.2 that swap.2 never sent
    swapped = swap.cast("swap.1")
    swap.commit([swap.cast("swap.1"), swap.cast("swap.2"), swap.cast("swap.2", sent=False)])
    swap.close()

    replace = s["replace"]  # one of replace.1's ballots replaced by another of replace.1 it never sent
    replaced = replace.cast("replace.1")
    replace.commit([replace.cast("replace.1"), replace.cast("replace.2"), replace.cast("replace.1", sent=False)])
    replace.close()

    order = s["order"]
    first, second, third = order.commit([order.cast("order.1"), order.cast("order.2"), order.cast("order.1")])
    swapped_order = [  # the first two exchanged, every link recomputed
        ForwardedEntry(ChainEntry(1, 1, order.chain.genesis, second.entry.ballot_hash, "cast"), second.ballot, None)
    ]
    swapped_order.append(
        ForwardedEntry(
            ChainEntry(2, 1, swapped_order[0].entry.entry_hash, first.entry.ballot_hash, "cast"), first.ballot, None
        )
    )

    small = s["small"]
    small.commit([small.cast("small.1")])  # one ballot chained alone while the polls were open
    small.commit([small.cast("small.2"), small.cast("small.1")])
    small.close()

    with CentralOffice(central, workers=2):
        for client in clients.values():
            client.__enter__()
        try:
            # The honest hub: the chain and the closing report first; until the terminals'
            # statements follow, the centre cannot call the station complete.
            assert confirmed_position(clients["honest"].send(batch(honest, honest.entries))) == 5
            waiting = open_incidents(central, "st-honest")
            assert {kind for kind, _ in waiting} == {"device_mismatch"} and len(waiting) == 2
            assert "no device statement after the close" in waiting[0][1]
            assert not station_states(central)["st-honest"].complete
            clients["honest"].send(batch(honest, [], devices=honest.statements()))
            assert open_incidents(central, "st-honest") == []
            assert station_states(central)["st-honest"].complete

            # A late ballot: its entry may arrive a message before the statement that covers it.
            late = honest.cast("honest.1")
            late_entries = honest.commit([late])
            clients["honest"].send(batch(honest, late_entries))
            (mismatch, flagged) = open_incidents(central, "st-honest")
            assert mismatch == (
                "device_mismatch",
                "device honest.1 signed 3 ballots sealed, the centre holds 4: 1 too many (added?)",
            )
            assert flagged[0] == "late" and not station_states(central)["st-honest"].complete
            clients["honest"].send(batch(honest, [], devices=honest.statements()))
            assert [kind for kind, _ in open_incidents(central, "st-honest")] == ["late"]
            assert station_states(central)["st-honest"].complete

            for name in ("drop", "add", "swap", "replace", "small"):
                forward_all(clients[name], s[name])
            answer = clients["order"].send(batch(order, [*swapped_order, third], statements=[]))
            assert confirmed_position(answer) == 1  # chained up to where the order breaks
        finally:
            for client in clients.values():
                client.__exit__(None, None, None)

    assert open_incidents(central, "st-drop") == [
        ("device_mismatch", "device drop.1 signed 2 ballots sealed, the centre holds 1: 1 missing (dropped?)")
    ]
    assert open_incidents(central, "st-add") == [
        ("device_mismatch", "device add.1 signed 1 ballots sealed, the centre holds 2: 1 too many (added?)")
    ]
    assert open_incidents(central, "st-swap") == [
        ("device_mismatch", "device swap.1 signed 2 ballots sealed, the centre holds 1: 1 missing (dropped?)"),
        ("device_mismatch", "device swap.2 signed 1 ballots sealed, the centre holds 2: 1 too many (added?)"),
    ]
    assert open_incidents(central, "st-replace") == [
        ("device_mismatch", "device replace.1: the 2 ballots held are not the set it signed (a ballot replaced?)")
    ]
    order_incidents = open_incidents(central, "st-order")
    assert [kind for kind, _ in order_incidents] == ["invalid"]
    assert "entry 2 is out of ballot-hash order within batch 1" in order_incidents[0][1]
    assert open_incidents(central, "st-small") == [
        ("batch_rule", "the chain up to the close: batch 1 holds 1 ballots, fewer than the election's 2")
    ]
    states = station_states(central)
    assert [sid for sid, state in sorted(states.items()) if state.complete] == ["st-honest", "st-small"]
    assert {dropped.ballot_hash, swapped.ballot_hash, replaced.ballot_hash}.isdisjoint(
        item.entry.ballot_hash for station in s.values() for item in station.entries
    )

    runner = CliRunner()
    status = runner.invoke(main, ["status", str(central.directory)])
    assert status.exit_code == 1
    assert "st-honest: position 6, ok, complete" in status.output
    assert "DEVICE_MISMATCH at station st-drop: device drop.1 signed 2 ballots sealed" in status.output
    code = tracking_code(honest.entries[3].entry.ballot_hash)
    found = runner.invoke(main, ["lookup", str(central.directory), code.lower().replace("-", " ")])
    assert found.exit_code == 0 and f"{code}: station st-honest, batch 2, counted" in found.output
    typo = runner.invoke(main, ["lookup", str(central.directory), "AB0D-1234-OOOO-IIII"])
    assert typo.exit_code == 2 and "never contains 0, 1, I, O" in typo.output

    store = central.store()
    try:
        summary = export_record(central, store, tmp_path / "record")
    finally:
        store.close()
    record = tmp_path / "record"
    for statement in honest.statements():
        written = (record / DEVICE_STATEMENTS / f"{statement.device_id}.json").read_bytes()
        assert written == canonical_bytes(statement.to_json())
    cast = {item.ballot["ballot_id"] for item in honest.entries if item.opening is None}
    assert cast <= {path.stem for path in (record / BALLOTS).iterdir()}
    assert {path.stem for path in (record / SPOILED).iterdir()} >= {
        item.ballot["ballot_id"] for item in honest.entries if item.opening is not None
    }
    chain = (record / "stations" / "st-honest" / "chain.jsonl").read_bytes().splitlines()
    assert [parse_json(line)["batch"] for line in chain] == [1, 1, 1, 2, 2, 3]
    assert any("DEVICE_MISMATCH" in problem for problem in summary.problems)
