"""Issue 15's fault scenario with real booths: a cast ballot committed in a booth's outbox is
not lost when the polls close while that booth is down.

Two ``booth run`` processes with PN532 readers (the emulator on a pty: no pcscd), the hub
(Mosquitto, ledger, roll), its forwarder and a central office (broker + gateway worker):

1. t1's voter casts normally; t2's voter casts and t2 is killed (kill -9) right after the
   ballot was committed to its outbox, before it was published.
2. ``polls close`` without declarations stops with t2 pending; the officials declare t2
   unreachable and the final close signs a report listing it.
3. t2 restarts: its outbox resends the ballot, the ledger chains it ``late``, the closing
   report is re-signed with ``late: {t2: 1}``.
4. The central office holds the whole chain, flags the late ballot, the exported record
   verifies (``election verify`` prints check-ins vs ballots, 1 late) and the decrypted totals
   equal what both voters chose (docs/ledger.md: a late ballot is counted like a cast one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from booth_fixtures import PIN, ROLL_SALT, Voters, ledger_rows, terminal_data_dir
from click.testing import CliRunner
from hub_fixtures import Hub
from test_outbox_faults import BoothProcess, wait_until

from appliance.card.authenticator import AuthMode
from appliance.config import load_config
from appliance.outbox import Outbox
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.scripted_voter import VoterError
from demo.linking import link_station
from election.chain import verify_document
from election.cli import main as election_cli
from election.devices import set_commitment
from election.encoding import parse_json
from election.manifest import sample_manifest
from election.record import DirectoryRecord
from election.simulation import ceremony_to_files
from election.verify import verify_record
from gateway.central import Central, init_central
from gateway.harness import CentralOffice, export_and_tally, start_forwarder, station_states
from infra.broker import Broker, free_port
from infra.mqtt import HubClient
from station_hub.operator import ClosingPending, change_polls
from station_hub.roll import RollStore, read_voter_keys
from station_hub.station import Station, init_station

STATION_ID = "st-late"
CHOICES = {
    "t1": {"contest-1": ["candidate-1"], "contest-2": ["candidate-3"]},
    "t2": {"contest-1": ["candidate-2"], "contest-2": ["candidate-3"]},
}


@dataclass
class Site:
    station: Station
    central: Central
    trustee_keys: list[Path]
    readers: dict[str, PtyPn532]
    configs: dict[str, Path]


@pytest.fixture
def site(voters: Voters, tmp_path: Path) -> Iterator[Site]:
    manifest = sample_manifest(contests=2, selections=3, limit=1)
    package = tmp_path / "package"
    _context, keys = ceremony_to_files(manifest, 3, 2, package, tmp_path / "trustee-keys")
    station = init_station(tmp_path / "station", STATION_ID, package, ["t1", "t2"], ["op1"], port=free_port(),
                           roll_salt=ROLL_SALT, jpki_anchors=[voters.ca.directory / "auth-ca.pem"],
                           jpki_crls=[voters.ca.crl_path(AuthMode.AUTH)])  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys((voters.ca.directory / "roll.json").read_bytes()))
    store.close()
    central = init_central(tmp_path / "central", package, port=free_port())
    link_station(central, station.directory)
    readers = {t: PtyPn532(Pn532Emulator(None)) for t in ("t1", "t2")}
    configs = {}
    for terminal, pty in readers.items():
        config = terminal_data_dir(station, voters, terminal, tmp_path / terminal, reader="")
        data = json.loads(config.read_text())
        data["reader"] = {"kind": "pn532-uart", "port": pty.port}
        config.write_text(json.dumps(data, indent=2))
        configs[terminal] = config
    try:
        yield Site(station, central, keys, readers, configs)
    finally:
        for pty in readers.values():
            pty.close()


def insert(pty: PtyPn532, card) -> None:
    with pty.lock:
        pty.emulator.insert(VirtualJpkiCard(card))


def remove(pty: PtyPn532) -> None:
    with pty.lock:
        pty.emulator.remove()


def vote_and_seal(booth: BoothProcess, choices: dict[str, list[str]]) -> None:
    try:
        booth.voter.wait_screen("pin", timeout=30)
        booth.voter.pin(PIN)
        booth.voter.vote(choices)
        booth.voter.seal()
    except VoterError as error:
        raise AssertionError(f"{error}; the booth logged: {booth.lines[-8:]}") from error


def kinds(station: Station) -> list[str]:
    """The kinds of the ballots the ledger holds (chained or pooled), sorted."""
    return sorted(row.kind for row in ledger_rows(station))


def test_ballot_of_a_booth_killed_after_commit_is_chained_late_counted_and_seen_centrally(
    site: Site, voters: Voters, tmp_path: Path
) -> None:
    station, central = site.station, site.central
    ledger_key = station.signing_key("ledger").public_key()
    with ExitStack() as stack:
        stack.enter_context(Broker(station, tmp_path / "mosquitto.log"))
        hub = Hub(station).start()
        stack.callback(hub.stop)
        stack.enter_context(CentralOffice(central, workers=1))
        forwarder = start_forwarder(station.directory, timeout=2.0)
        stack.callback(lambda: forwarder.terminate() or forwarder.wait(10))
        booths: list[BoothProcess] = []
        stack.callback(lambda: [booth.stop() for booth in booths])

        t1 = BoothProcess(site.configs["t1"])
        t2 = BoothProcess(site.configs["t2"], failpoint="after-commit")
        booths += [t1, t2]
        with HubClient(station, "op1").connect() as operator:
            change_polls(operator, "open", timeout=30)

        # t1: a voter casts and gets a tracking code.
        insert(site.readers["t1"], voters.eligible[0])
        vote_and_seal(t1, CHOICES["t1"])
        receipt = t1.voter.cast()
        assert receipt["receipt"] == "held", receipt
        t1.voter.tap("done")
        remove(site.readers["t1"])

        # t2: the voter casts; the booth dies right after the commit, before publishing.
        insert(site.readers["t2"], voters.eligible[1])
        vote_and_seal(t2, CHOICES["t2"])
        t2.voter.tap("cast")
        assert t2.failpoint_hit.wait(30), f"the failpoint was not reached: {t2.lines[-5:]}"
        t2.kill()
        remove(site.readers["t2"])
        assert kinds(station) == ["cast"], "t2's ballot left the booth before the failpoint"
        outbox = Outbox(load_config(site.configs["t2"]).outbox)
        assert outbox.depth() == 1, "the committed ballot is not in t2's outbox"
        outbox.close()

        # Closing: without a declaration it stops at `closing` and names t2; declared, it closes.
        with HubClient(station, "op1").connect() as operator:
            with pytest.raises(ClosingPending) as pending:
                change_polls(operator, "close", unreachable=(), drain_wait=3, timeout=30)
            assert [p.terminal for p in pending.value.pending] == ["t2"], pending.value.pending
            assert pending.value.pending[0].why == "offline"
            report = verify_document(
                change_polls(operator, "close", unreachable=("t2",), drain_wait=3, timeout=30), ledger_key
            )
        assert report["closed_position"] == report["position"] == 1
        assert report["unreachable"] == {"t2": {"sealed": 0, "commitment": set_commitment([]).hex()}}
        assert (report["ballots"], report["check_ins"], report["late"]) == (1, 2, {})

        # t2 comes back: its outbox resends the ballot, chained as late; the report is re-signed.
        started = time.monotonic()
        t2 = BoothProcess(site.configs["t2"])
        booths.append(t2)
        wait_until(lambda: kinds(station) == ["cast", "late"], 30, f"the ballot was not chained late: {t2.lines[-5:]}")
        with HubClient(station, "op1").connect() as operator:
            operator.subscribe(station.topics.closing_report)
            message = operator.next_message(10, lambda m: b'"position":2' in m.payload)
        late = verify_document(parse_json(message.payload), ledger_key)
        assert late["late"] == {"t2": 1} and late["closed_position"] == 1
        assert (late["ballots"], late["check_ins"], late["terminals"]) == (2, 2, {"t1": 1, "t2": 1})
        assert late["unreachable"] == report["unreachable"]
        t2.stop()
        outbox = Outbox(load_config(site.configs["t2"]).outbox)
        assert outbox.depth() == 0, "t2 still holds the ballot after the late ack"
        outbox.close()
        print(f"late ballot chained {time.monotonic() - started:.1f} s after t2 restarted")

        # The central office holds the chain up to the re-signed closing report, flags the late one.
        def centre_complete() -> bool:
            state = station_states(central).get(STATION_ID)
            return state is not None and state.complete and state.head.position == 2

        wait_until(centre_complete, 60, f"the centre did not get the whole chain: {station_states(central)}")
        store = central.store()
        try:
            incidents = {(i.station_id, i.position, i.kind): i.resolved for i in store.incidents()}
        finally:
            store.close()
        # The first closing report (1 ballot, 2 check-ins) was flagged; the re-signed one accounts for it.
        # The late ballot reached the centre a message before t2's statement covering it: flagged,
        # then resolved once the statement came (gateway/checker.py, RESOLVABLE_DEVICE_KIND).
        assert incidents == {(STATION_ID, 1, "count_mismatch"): True, (STATION_ID, None, "device_mismatch"): True,
                             (STATION_ID, 2, "late"): False}, incidents  # fmt: skip

        record = tmp_path / "record"
        summary, results = export_and_tally(central, record, site.trustee_keys[:2])
    # Export lists the open late incident for the officials; nothing else.
    assert [p.split(":")[0] for p in summary.problems] == [f"LATE at station {STATION_ID} position 2"], summary.problems
    assert (summary.cast, summary.spoiled) == (2, 0)
    closing = parse_json((record / "stations" / STATION_ID / "closing.json").read_bytes())
    assert closing["late"] == {"t2": 1} and closing["position"] == 2
    expected: dict[tuple[str, str], int] = {}
    for choices in CHOICES.values():
        for contest, marked in choices.items():
            for selection in marked:
                expected[contest, selection] = expected.get((contest, selection), 0) + 1
    assert {p: n for p, n in results.totals.items() if n} == expected
    verification = verify_record(DirectoryRecord(record))
    assert verification.passed, {n: o.problems for n, o in verification.outcomes.items() if not o.passed}
    printed = CliRunner().invoke(election_cli, ["verify", str(record), "--workers", "1"])
    assert printed.exit_code == 0, printed.output
    assert f"station {STATION_ID}: 2 check-ins, 2 ballots counted (1 late)" in printed.output, printed.output
