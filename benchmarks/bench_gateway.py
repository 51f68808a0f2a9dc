"""Central ingest throughput and tally time (real Mosquitto over TLS on loopback, SQLite store).

Two stations' ledgers are filled with N sealed ballots in total (each with a roll-signed
token), chained in hash-sorted batches of ``--batch`` (record format 2); their forwarders send
them to the central office, whose workers check everything (chain links and hash order within
each batch, device signature, proofs, token signature, token and ballot reuse) and commit.
Prints ballots/s ingested and verified with one and with two workers, then the time to export
the record, tally it homomorphically and decrypt the totals with a quorum of trustees.

Usage: .venv/bin/python benchmarks/bench_gateway.py [--ballots N] [--batch K]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from demo.linking import link_station
from election.ballot import DeviceSigner, Token, seal_ballot
from election.chain import ChainState, PoolBallot
from election.devices import DeviceStatement
from election.encoding import canonical_bytes
from election.manifest import sample_manifest
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from gateway.central import Central, init_central
from gateway.harness import CentralOffice, export_and_tally, start_forwarder, station_states
from infra.broker import free_port
from station_hub.ledger import BatchEntry, Held
from station_hub.ledger_store import LedgerStore
from station_hub.station import Station, init_station

STATIONS = {"bench-a": ["ta1", "ta2"], "bench-b": ["tb1", "tb2"]}


def fill_ledger(station: Station, count: int, batch: int) -> None:
    """Write ``count`` ballots straight into the station's ledger database, as its ledger holds
    them in its pool and commits them in sorted batches of ``batch`` (with each terminal's
    latest device statement)."""
    election, roll_key = station.election(), station.token_private_key()
    base_hash = election.manifest.base_hash
    pss = padding.PSS(padding.MGF1(hashes.SHA384()), 48)
    chain = ChainState(station.genesis)
    signers = {t: DeviceSigner(t, station.signing_key(t)) for t in station.terminals}
    sent: dict[str, list[bytes]] = {t: [] for t in station.terminals}
    store = LedgerStore(station.ledger_db)
    pool: list[Held] = []
    for n in range(count):
        signer = signers[station.terminals[n % len(station.terminals)]]
        message = secrets.token_bytes(32)
        token = Token(message, roll_key.sign(message, pss, hashes.SHA384()))
        ballot, _ = seal_ballot(election.manifest, election.context.joint_public_key,
                                {"contest-1": {"candidate-1"}}, signer, token)  # fmt: skip
        sent[signer.device_id].append(ballot.ballot_hash)
        statement = DeviceStatement.make(signer, base_hash, sent[signer.device_id])  # as the terminal sends it
        pool.append(Held(ballot, "cast", canonical_bytes(ballot.to_json()), statement))
        if len(pool) == batch or n == count - 1:
            store.hold(pool)
            devices = {held.ballot.ballot_hash: held.ballot.device_id for held in pool}
            entries = chain.next_batch(PoolBallot(ballot_hash, "cast") for ballot_hash in devices)
            store.commit_batch([BatchEntry(e, chain.append(e), devices[e.ballot_hash]) for e in entries])
            pool = []
    store.close()


def ingest(root: Path, package: Path, stations: list[Path], total: int, workers: int) -> tuple[float, Path]:
    central_dir = root / f"central-{workers}"
    central = init_central(central_dir, package, port=free_port(), workers=workers)
    for station in stations:
        shutil.rmtree(station / "forward", ignore_errors=True)
        link_station(central, station)
    with CentralOffice(central, workers=workers):
        started = time.monotonic()
        forwarders = [start_forwarder(s, timeout=30.0) for s in stations]
        try:
            while sum(s.head.position for s in station_states(central).values()) < total:
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            for forwarder in forwarders:
                forwarder.terminate()
                forwarder.wait(10)
    return elapsed, central_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ballots", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20, help="ballots per sorted batch of the ledgers")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        manifest = sample_manifest(contests=2, selections=3, limit=1)
        trustees, publics, context = ceremony(manifest, 3, 2)
        package = root / "package"
        write_election_package(RecordWriter(package), manifest, context, publics)
        keys = []
        for trustee in trustees[:2]:
            path = root / f"{trustee.trustee_id}.key"
            path.write_bytes(canonical_bytes(trustee.secret_json()))
            keys.append(path)
        station_dirs = []
        for station_id, terminals in STATIONS.items():
            station = init_station(root / station_id, station_id, package, terminals, ["op"], port=free_port())
            fill_ledger(station, args.ballots // len(STATIONS), args.batch)
            station_dirs.append(station.directory)
        total = args.ballots // len(STATIONS) * len(STATIONS)
        print(f"{total} ballots (2 contests × 3 candidates) from {len(STATIONS)} stations, proofs checked")
        central_dir = root
        for workers in (1, 2):
            elapsed, central_dir = ingest(root, package, station_dirs, total, workers)
            print(f"  {workers} worker(s): {total / elapsed:8.1f} ballots/s ingested and verified ({elapsed:.1f} s)")
        started = time.monotonic()
        summary, _results = export_and_tally(Central.open(central_dir), root / "record", keys)
        elapsed = time.monotonic() - started
        print(f"  export + tally + decrypt of {summary.cast} ballots: {elapsed:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
