"""``gateway export RECORD``: the election record (``docs/formats.md`` §12) from the central store.

Everything the centre holds goes out exactly as received — each sealed ballot's bytes, each
station's chain of sorted batches up to the head the centre verified, the ledger's signed
checkpoint at that head, each terminal's final signed device statement — so the independent
verifier re-checks it all from scratch. What the centre could not complete (a station without
a checkpoint at its head, open incidents) is reported, never papered over: the verifier will
fail on it too.

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
from election.record import BALLOTS, DEVICE_STATEMENTS, DEVICES, RECORD_VERSION, SPOILED, RecordWriter
from election.simulation import write_election_package
from election.stations import CHAIN_FILE, CHECKPOINT_FILE, CLOSING_FILE, STATION_FILE, STATIONS, chain_lines
from gateway.central import Central
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
        if not state.complete:
            summary.problems.append(f"station {station_id}: the closing report has not been reached (incomplete)")
        if state.state != "ok":
            summary.problems.append(f"station {station_id}: {state.state.upper()}")
    summary.problems += [incident.describe() for incident in store.incidents(open_only=True)]
    return summary
