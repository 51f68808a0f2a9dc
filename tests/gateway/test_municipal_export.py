"""`gateway export` with a municipal roll (issue 17): the record's ``reconciliation.json`` holds
each station's kind, municipality, check-ins and ballots and each municipality's token key and
marks, and the record passes all 20 checks — on a real PostgreSQL register, real station hubs
(broker, ledger, roll) and a real central office.

st-a is an early-voting place of kaga: its tokens are blind-signed with kaga's token key (its
roll holds the municipality's key here, standing in for the relay to the municipal roll, which
tests/gateway/test_municipal_roll_mqtt.py and the slow CLI test cover; the record has the same
shape either way) and kaga's register is marked for its voter. st-b is an election-day station
of kaga with its own key, whose marks come back after it closed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from gateway_fixtures import fresh_database, running_station
from municipal_fixtures import MUNICIPALITY, make_municipality, prepare_store, register_keys

from demo.linking import link_station
from election.encoding import parse_json
from election.reconciliation import RECONCILIATION, Reconciliation
from election.record import DirectoryRecord
from election.verify import CHECKS, verify_record
from gateway.central import Central
from gateway.export import export_record
from gateway.harness import CentralOffice, start_forwarder, wait_until_complete
from gateway.municipal_roll import MunicipalConfig, MunicipalStore, config_path
from gateway.results import tally_and_decrypt


def test_export_with_an_early_place_writes_the_reconciliation_and_the_record_verifies(
    central: Central, station_templates, postgres_admin: str, election_files, tmp_path: Path
) -> None:
    root = tmp_path / "municipality"
    electorate = make_municipality(root, key_bits=3072)  # the size of the station's own roll key
    kaga = electorate.municipality
    url = fresh_database(postgres_admin)
    prepare_store(url, electorate, root, {"st-a": "early"})
    path = config_path(central.directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    MunicipalConfig(path, url, (kaga.directory,)).write()
    register = MunicipalStore(url)
    try:
        register.add_day_station("st-b", MUNICIPALITY)
        with (
            running_station(station_templates["st-a"], tmp_path / "st-a", roll_key_of=kaga) as a,  # type: ignore[arg-type]
            running_station(station_templates["st-b"], tmp_path / "st-b") as b,
        ):
            for station in (a, b):
                link_station(central, station.station.directory)
                station.polls("open")
            a.vote(1)
            b.vote(2)
            for station in (a, b):
                station.polls("close")
            with CentralOffice(central, workers=1):
                forwarders = [start_forwarder(s.station.directory, timeout=2.0) for s in (a, b)]
                try:
                    wait_until_complete(central, ["st-a", "st-b"], timeout=60)
                finally:
                    for forwarder in forwarders:
                        forwarder.terminate()
                        forwarder.wait(10)
        voters = register_keys(root)
        assert register.mark(MUNICIPALITY, voters[0], secrets.token_bytes(384))  # st-a's voter, early
        marked, twice, unknown = register.mark_voted_elsewhere(MUNICIPALITY, voters[1:3])  # st-b's marks, back
        register.record_station_marks("st-b", MUNICIPALITY, hashlib.sha256(b"marks").digest(),
                                      (marked, len(twice), unknown))  # fmt: skip
        register.set_polls(MUNICIPALITY, "closed")
    finally:
        register.close()

    store = central.store()
    try:
        summary = export_record(central, store, tmp_path / "record")
    finally:
        store.close()
    assert summary.problems == [], summary.problems
    record = tmp_path / "record"
    tally_and_decrypt(record, election_files[1][:2])
    data = (record / RECONCILIATION).read_bytes()
    found = Reconciliation.from_json(parse_json(data, canonical=True))
    early, day = found.station("st-a"), found.station("st-b")
    assert early is not None and (early.kind, early.municipality, early.check_ins, early.ballots) == (
        "early", MUNICIPALITY, 1, 1)  # fmt: skip
    assert day is not None and (day.kind, day.municipality, day.check_ins, day.ballots) == (
        "election_day", MUNICIPALITY, 2, 2)  # fmt: skip
    assert day.marks is not None and (day.marks.marked, day.marks.voted_twice, day.marks.not_registered) == (2, 0, 0)
    (municipality,) = found.municipalities
    assert municipality.token_key_hex == json.loads((record / "stations/st-a/station.json").read_bytes())["roll_key"]
    assert (municipality.polls, municipality.registered, municipality.check_ins, municipality.ballots) == (
        "closed", len(voters), 3, 3)  # fmt: skip
    assert (municipality.marked_early, municipality.marked_election_day, municipality.voted_twice) == (1, 2, 0)
    report = verify_record(DirectoryRecord(record))
    assert report.passed, {n: o.problems for n, o in report.outcomes.items() if not o.passed}
    assert len(report.outcomes) == len(CHECKS) == 20

    # A voter of the election-day station who had voted early too: the record says so, and fails.
    document = json.loads(data)
    document["stations"]["st-b"]["marks"].update(marked=1, voted_twice=1)
    document["municipalities"][MUNICIPALITY].update(marked_election_day=1, voted_twice=1)
    (record / RECONCILIATION).write_bytes(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    failed = verify_record(DirectoryRecord(record)).outcomes[20]
    assert any("1 voter(s) voted twice" in problem for problem in failed.problems), failed.problems
