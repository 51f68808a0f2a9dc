"""``gateway export RECORD``: the election record (``docs/formats.md`` §12) from the central store.

Everything the centre holds goes out exactly as received — each sealed ballot's bytes, each
station's chain of sorted batches up to the head the centre verified, the ledger's signed
checkpoint at that head, each terminal's final signed device statement — so the independent
verifier re-checks it all from scratch. What the centre could not complete (a station without
a checkpoint at its head, open incidents) is reported, never papered over: the verifier will
fail on it too.

``reconciliation.json`` (formats.md §13) carries the reconciliation of ``gateway status``: per
station its kind, municipality, check-ins (from its verified closing report) and counted ballots
(from the chain written here); per municipality on the municipal roll its token key, the marks of
its register and the sums. Without a municipal roll every station is listed as election-day.

Nothing written keeps the order of arrival (docs/design-record-v2.md §1): ballot files are
named by their ballot ids (random) and written in chain order, which within a batch is
ballot-hash order; nothing is numbered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from election.chain import COUNTED_KINDS
from election.encoding import parse_json
from election.reconciliation import (
    ELECTION_DAY,
    RECONCILIATION,
    MunicipalityLine,
    Reconciliation,
    StationLine,
    StationMarks,
)
from election.record import BALLOTS, DEVICE_STATEMENTS, DEVICES, RECORD_VERSION, SPOILED, RecordWriter
from election.simulation import write_election_package
from election.stations import CHAIN_FILE, CHECKPOINT_FILE, CLOSING_FILE, STATION_FILE, STATIONS, chain_lines
from gateway.central import Central
from gateway.reconcile import MunicipalSnapshot, closing_counts, municipal_snapshot
from gateway.store import Store


@dataclass
class ExportSummary:
    cast: int = 0
    spoiled: int = 0
    stations: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def export_record(
    central: Central,
    store: Store,
    out: Path,
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> ExportSummary:
    election = central.election()
    snapshot = municipal_snapshot(central.directory)  # first: unreachable, nothing is written
    writer = RecordWriter(out)
    write_election_package(writer, election.manifest, election.context, list(election.trustees))
    devices = store.device_keys()
    writer.write(
        DEVICES,
        {
            "version": RECORD_VERSION,
            "devices": [{"device_id": d, "public_key": key.hex()} for d, key in sorted(devices.items())],
        },
    )
    for device_id, statement in store.device_statements().items():
        writer.write_bytes(f"{DEVICE_STATEMENTS}/{device_id}.json", statement)
    summary = ExportSummary()
    lines: list[StationLine] = []
    profiles = store.profiles()
    for station_id, profile in profiles.items():
        state = store.station_state(station_id)
        assert state is not None
        folder = f"{STATIONS}/{station_id}"
        writer.write(f"{folder}/{STATION_FILE}", profile.keys.to_json())
        chain = []
        for stored in store.entries(station_id):
            chain.append(stored.entry)
            name = stored.ballot_id
            if stored.entry.kind in COUNTED_KINDS:  # a late ballot is counted like a cast one
                writer.write_bytes(f"{BALLOTS}/{name}.json", stored.ballot)
                summary.cast += 1
            else:
                opening = parse_json(stored.opening) if stored.opening is not None else None
                document = {"version": RECORD_VERSION, "ballot": parse_json(stored.ballot), "opening": opening}
                writer.write(f"{SPOILED}/{name}.json", document)
                summary.spoiled += 1
            progress(f"exporting {station_id}", len(chain), state.head.position)
        writer.write_bytes(f"{folder}/{CHAIN_FILE}", chain_lines(chain))
        summary.stations[station_id] = len(chain)
        checkpoint = store.verified_checkpoint(station_id, state.head.position)
        if checkpoint is None:
            summary.problems.append(f"station {station_id}: no signed checkpoint at its head {state.head.position}")
        else:
            writer.write(f"{folder}/{CHECKPOINT_FILE}", parse_json(checkpoint))
        closing = store.verified_closing_report(station_id)
        if closing is not None:
            writer.write(f"{folder}/{CLOSING_FILE}", parse_json(closing))
        ballots = sum(1 for entry in chain if entry.kind in COUNTED_KINDS)
        lines.append(station_line(station_id, closing_counts(closing)[0], ballots, snapshot))
        if not state.complete:
            summary.problems.append(f"station {station_id}: the closing report has not been reached (incomplete)")
        if state.state != "ok":
            summary.problems.append(f"station {station_id}: {state.state.upper()}")
    reconciliation = reconciliation_of(election.manifest.base_hash, lines, snapshot)
    writer.write(RECONCILIATION, reconciliation.to_json())
    if snapshot is not None:
        missing = sorted(set(snapshot.kinds) - set(profiles))
        summary.problems += [f"station {s} is on the municipal roll but has no chain at the centre" for s in missing]
    summary.problems += [f"reconciliation: {problem}" for problem in reconciliation.problems()]
    summary.problems += [incident.describe() for incident in store.incidents(open_only=True)]
    return summary


def station_line(
    station_id: str, check_ins: int | None, ballots: int, snapshot: MunicipalSnapshot | None
) -> StationLine:
    """One station of ``reconciliation.json``; a station the municipal roll does not know is an
    election-day station outside any municipality (every station, without a municipal roll)."""
    municipality, kind = (
        (None, ELECTION_DAY) if snapshot is None else snapshot.kinds.get(station_id, (None, ELECTION_DAY))
    )
    marks = None
    if snapshot is not None and kind == ELECTION_DAY and municipality is not None and station_id in snapshot.marks:
        marks = StationMarks(*snapshot.marks[station_id])
    return StationLine(station_id, kind, municipality, check_ins, ballots, marks)


def reconciliation_of(base_hash: bytes, lines: list[StationLine], snapshot: MunicipalSnapshot | None) -> Reconciliation:
    """The record's reconciliation: the stations' lines and, per municipality, the register's
    figures beside the sums over its stations in the record."""
    municipalities = []
    for figures in snapshot.municipalities if snapshot is not None else ():
        mine = [line for line in lines if line.municipality == figures.municipality]
        check_ins = None if any(line.check_ins is None for line in mine) else sum(line.check_ins or 0 for line in mine)
        days = [line.marks for line in mine if line.kind == ELECTION_DAY and line.marks is not None]
        municipalities.append(MunicipalityLine(
            figures.municipality, snapshot.token_keys[figures.municipality], figures.polls, figures.eligible,
            check_ins, sum(line.ballots for line in mine), figures.early_marks, figures.day_marks,
            sum(m.voted_twice for m in days), sum(m.not_registered for m in days),
        ))  # fmt: skip
    return Reconciliation.make(base_hash, lines, municipalities)
