"""Tampered records of format 2: each fault fails exactly the check that owns it, nothing else.

A dishonest hub or centre holds the ledger's key and can rebuild everything it signs: the
station chain, the checkpoint and the closing report, even the tally (decryption is out of
its reach, here the simulation plays along). What it cannot forge is a terminal's statement of
how many ballots it sealed and which (check 8), nor a chain of batches that breaks the sorting
and size rules it publishes (check 16). So these records are consistent everywhere except in
the one place the fault must show.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from election.ballot import SealedBallot, seal_ballot
from election.chain import ChainEntry, ChainHead, ChainState
from election.encoding import canonical_bytes
from election.manifest import sample_manifest
from election.record import DirectoryRecord, RecordWriter
from election.simulation import SimulatedElection, SimulatedStation, random_choices
from election.verify import VerificationReport, verify_record

MANIFEST = sample_manifest(contests=1, selections=3, limit=1, batch_min=2)
VOTERS = 8
DEVICE = "terminal-1"


def election() -> SimulatedElection:
    """Two terminals at one station, eight voters (some challenge), not yet closed."""
    simulated = SimulatedElection(MANIFEST, trustee_count=2, quorum=2, device_count=2, station_count=1, seed=5)
    for voter in range(VOTERS):
        simulated.vote(voter, spoil_rate=0.25)
    return simulated


def rechain(simulated: SimulatedElection) -> None:
    """The hub's chain rebuilt from the ballots the record will hold, in batches of batch_min."""
    (station,) = simulated.stations
    station.chain, station.entries, station.pool = ChainState(station.chain.genesis), [], []
    for ballot in simulated.cast:
        station.receive((ballot.ballot_hash, "cast"))
    for ballot, _ in simulated.spoiled:
        station.receive((ballot.ballot_hash, "spoiled"))


def relink(station: SimulatedStation, entries: list[ChainEntry]) -> None:
    """Entries renumbered and relinked from the genesis, the head moved: what a ledger signs."""
    linked, prev_hash = [], station.chain.genesis
    for position, entry in enumerate(entries, start=1):
        entry = dataclasses.replace(entry, position=position, prev_hash=prev_hash)
        linked.append(entry)
        prev_hash = entry.entry_hash
    station.entries = linked
    station.chain.head = ChainHead(len(linked), prev_hash, linked[-1].batch)
    station.closed_position = len(linked)


def of_device(simulated: SimulatedElection) -> SealedBallot:
    return next(ballot for ballot in simulated.cast if ballot.device_id == DEVICE)


def sealed_by_device_behind_its_back(simulated: SimulatedElection) -> SealedBallot:
    """A ballot validly signed by the terminal's key but never in its own set: not sent by it."""
    device = next(d for d in simulated.devices if d.signer.device_id == DEVICE)
    token = simulated.stations[0].issue_token()
    choices = random_choices(MANIFEST, simulated.rng)
    ballot, _ = seal_ballot(MANIFEST, simulated.context.joint_public_key, choices, device.signer, token)
    return ballot


def drop(simulated: SimulatedElection) -> None:
    simulated.cast.remove(of_device(simulated))
    rechain(simulated)


def add(simulated: SimulatedElection) -> None:
    simulated.cast.append(sealed_by_device_behind_its_back(simulated))
    rechain(simulated)


def replace(simulated: SimulatedElection) -> None:
    simulated.cast[simulated.cast.index(of_device(simulated))] = sealed_by_device_behind_its_back(simulated)
    rechain(simulated)


def unsorted_batch(simulated: SimulatedElection) -> None:
    simulated.close()
    (station,) = simulated.stations
    entries = station.entries
    assert entries[0].batch == entries[1].batch
    relink(station, [entries[1], entries[0], *entries[2:]])


def small_batch_before_the_close(simulated: SimulatedElection) -> None:
    simulated.close()
    (station,) = simulated.stations
    split = [dataclasses.replace(e, batch=e.batch + (e.position > 1)) for e in station.entries]
    relink(station, split)  # batch 1 split after its first entry: a batch of one, polls still open


STATE_TAMPERING: list[tuple[str, Callable[[SimulatedElection], None], int, str]] = [
    ("a ballot of the device dropped", drop, 8, "the record holds"),
    ("a ballot signed by the device added", add, 8, "the record holds"),
    ("a ballot of the device replaced", replace, 8, "the record holds"),
    ("a batch out of ballot-hash order", unsorted_batch, 16, "out of ballot-hash order within batch 1"),
    ("a batch smaller than batch_min before the close", small_batch_before_the_close, 16, "fewer than"),
]


def failures(report: VerificationReport) -> dict[int, list[str]]:
    return {n: o.problems for n, o in report.outcomes.items() if not o.passed}


@pytest.mark.parametrize(("what", "tamper", "check", "problem"), STATE_TAMPERING, ids=[t[0] for t in STATE_TAMPERING])
def test_a_record_consistent_but_for_one_fault_fails_only_its_check(
    tmp_path: Path, what: str, tamper: Callable[[SimulatedElection], None], check: int, problem: str
) -> None:
    simulated = election()
    tamper(simulated)
    simulated.close()
    simulated.publish(RecordWriter(tmp_path))
    found = failures(verify_record(DirectoryRecord(tmp_path)))
    assert list(found) == [check], (what, found)
    assert any(problem in p for p in found[check]), found[check]


@pytest.fixture
def honest(tmp_path: Path) -> Path:
    simulated = election()
    simulated.close()
    simulated.publish(RecordWriter(tmp_path))
    assert failures(verify_record(DirectoryRecord(tmp_path))) == {}
    return tmp_path


def test_a_statement_with_a_bad_signature_fails_check_8_only(honest: Path) -> None:
    path = honest / "device_statements" / f"{DEVICE}.json"
    statement = json.loads(path.read_bytes())
    signature = bytearray.fromhex(statement["signature"])
    signature[7] ^= 0x20
    path.write_bytes(canonical_bytes({**statement, "signature": signature.hex()}))
    found = failures(verify_record(DirectoryRecord(honest)))
    assert list(found) == [8] and found[8] == [
        f"device_statements/{DEVICE}.json: the document's signature does not verify"
    ]


def test_a_device_with_ballots_and_no_statement_fails_check_8_only(honest: Path) -> None:
    (honest / "device_statements" / f"{DEVICE}.json").unlink()
    found = failures(verify_record(DirectoryRecord(honest)))
    assert list(found) == [8] and len(found[8]) == 1
    assert found[8][0].startswith(f"device {DEVICE}: ") and found[8][0].endswith("ballots and no device statement")


def test_another_devices_statement_under_this_devices_name_fails_check_8(honest: Path) -> None:
    folder = honest / "device_statements"
    (folder / f"{DEVICE}.json").write_bytes((folder / "terminal-2.json").read_bytes())
    found = failures(verify_record(DirectoryRecord(honest)))
    assert list(found) == [8] and any("holds the statement of device terminal-2" in p for p in found[8])
