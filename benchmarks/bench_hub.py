"""Ledger throughput and acknowledgement latency, and the roll's card-proven check-ins, over
TLS on loopback (real Mosquitto).

Prints, for 1 check worker and for one per core:

- ballots/s held end to end (parse, device signature, device statement, token, durable commit
  in the pool or straight into a batch of the chain; no ZK proof checks), with the four
  terminals publishing and reading their acknowledgements on the same cores as the broker
  and the ledger;
- the same ledger draining a backlog that waited at the broker, with no terminal on these
  cores (on site the terminals are other machines): the ledger's own capacity;
- the proof checks apart: the check workers alone (parse, signatures, token, proofs) as
  ballots/s per core, and end to end with proofs;
- ack latency p50/p99 paced at 500 ballots/s;
- the ledger's CPU per ballot in its own process and in its workers, for each run.

Goal (issue 18): >= 2,000/s without proofs, >= 1.8x from 1 to 2 workers with proofs, p99 <
200 ms at 500/s. The manifest's ``batch_min`` is :data:`BATCH_MIN` (20: production elections
need >= 10; tests use 1-3, which makes a batch, a second transaction and a rebuild of the
pool's file, due after nearly every ballot). Then card-proven check-ins/s and their latency
p50/p99 (both rounds: challenge, then the JPKI test card's signature, which the roll checks
against the CA, the CRL and the binding before it derives the voter key, marks the voter and
blind-signs), with four terminals asking at once. Usage: .venv/bin/python
benchmarks/bench_hub.py [--ballots N] [--paced N] [--rate R] [--checkins N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from appliance.card import AuthMode
from appliance.card.testca import TestCa
from election.ballot import DeviceSigner, Token, seal_ballot
from election.devices import DeviceStatement
from election.encoding import parse_json
from election.manifest import sample_manifest
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from infra.broker import Broker, free_port
from infra.mqtt import HubClient
from protocol.messages import BallotSubmission
from station_hub.ledger import Examined, Examiner
from station_hub.ledger_service import examine_job, proof_pool
from station_hub.ledger_store import pool_file
from station_hub.operator import change_polls
from station_hub.roll import RollStore, read_voter_keys
from station_hub.station import DeviceDirectory, Station, init_station
from station_hub.terminal_client import TerminalClient

TERMINALS = [f"t{i}" for i in range(1, 5)]
BATCH_MIN = 20
"""A realistic batch size (a production manifest may not set fewer than 10)."""


@dataclass(frozen=True)
class BenchCard:
    """A JPKI test card in software: its authentication certificate and the key the card keeps."""

    certificate_der: bytes
    key: rsa.RSAPrivateKey

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def make_station(root: Path, voters: int = 0) -> tuple[Station, list[BenchCard]]:
    """A station whose roll lists ``voters`` cards of a JPKI test CA (the roll alone has the salt)."""
    manifest = sample_manifest(contests=1, selections=2, limit=1, batch_min=BATCH_MIN)
    _trustees, publics, context = ceremony(manifest, 2, 2)
    package = root / "package"
    write_election_package(RecordWriter(package), manifest, context, publics)
    ca = TestCa.create(root / "jpki")
    issued = [ca.issue_card() for _ in range(voters)]
    salt = secrets.token_bytes(32)
    station = init_station(root / "station", "bench", package, TERMINALS, ["op1"], port=free_port(),
                           roll_salt=salt, jpki_anchors=[ca.directory / "auth-ca.pem"],
                           jpki_crls=[ca.crl_path(AuthMode.AUTH)])  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys(json.dumps(ca.roll(salt, AuthMode.AUTH)).encode()))
    store.close()
    cards = []
    for card in issued:
        credential = card.credential(AuthMode.AUTH)
        cards.append(BenchCard(credential.certificate.public_bytes(serialization.Encoding.DER), credential.private_key))
    return station, cards


def seal_all(station: Station, count: int) -> dict[str, list[tuple[str, bytes]]]:
    """Pre-sealed submissions per terminal (ballot hash, payload), each ballot with a roll-signed
    token (signed directly) and its terminal's statement over every ballot sealed so far."""
    election, roll_key = station.election(), station.token_private_key()
    manifest = election.manifest
    pss = padding.PSS(padding.MGF1(hashes.SHA384()), 48)
    out: dict[str, list[tuple[str, bytes]]] = {}
    for terminal in TERMINALS:
        signer = DeviceSigner(terminal, station.signing_key(terminal))
        sealed: list[bytes] = []
        payloads = []
        for _ in range(count // len(TERMINALS)):
            message = secrets.token_bytes(32)
            token = Token(message, roll_key.sign(message, pss, hashes.SHA384()))
            ballot, _ = seal_ballot(manifest, election.context.joint_public_key, {"contest-1": {"candidate-1"}},
                                    signer, token)  # fmt: skip
            sealed.append(ballot.ballot_hash)
            statement = DeviceStatement.make(signer, manifest.base_hash, sealed)
            payloads.append((ballot.ballot_hash.hex(), BallotSubmission(ballot, None, statement).encode(manifest)))
        out[terminal] = payloads
    return out


def send(station: Station, ballots: dict[str, list[tuple[str, bytes]]], rate: float | None) -> list[float]:
    """Publish every ballot (paced at ``rate``/s overall, or as fast as possible); latencies."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()
    total = sum(len(v) for v in ballots.values())
    lock = threading.Lock()
    clients = []
    for terminal in ballots:
        client = HubClient(station, terminal).connect()
        client.subscribe(station.topics.ack(terminal))

        def on_message(_c, _u, message, client=client) -> None:
            data = parse_json(message.payload)
            with lock:
                started = sent.pop(data["ballot_hash"], None)
                if started is not None and data["result"] == "held":
                    latencies.append(time.perf_counter() - started)
                if len(latencies) == total:
                    done.set()
            client._client.ack(message.mid, message.qos)

        client._client.on_message = on_message
        clients.append(client)
    start = time.perf_counter()
    for index in range(max(len(v) for v in ballots.values())):
        for client, terminal in zip(clients, ballots, strict=True):
            ballot_hash, payload = ballots[terminal][index]
            with lock:
                sent[ballot_hash] = time.perf_counter()
            client._client.publish(station.topics.ballot(terminal), payload, qos=1)
        if rate:
            time.sleep(max(0.0, start + (index + 1) * len(clients) / rate - time.perf_counter()))
    finished = done.wait(120)
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    if not finished:
        sys.exit(f"only {len(latencies)} of {total} ballots acknowledged")
    latencies.append(elapsed)  # last item: wall time of the whole run
    return latencies


def check_in_all(station: Station, cards: list[BenchCard]) -> list[float]:
    """Every card checks in once, four terminals at a time; latencies, then the wall time."""
    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def terminal(name: str, mine: list[BenchCard]) -> None:
        try:
            with TerminalClient(station, name).connect() as client:
                for card in mine:
                    started = time.perf_counter()
                    client.check_in(card)
                    with lock:
                        latencies.append(time.perf_counter() - started)
        except BaseException as error:  # reported after the run
            failures.append(error)

    threads = [threading.Thread(target=terminal, args=(name, cards[index :: len(TERMINALS)]))
               for index, name in enumerate(TERMINALS)]  # fmt: skip
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures or len(latencies) != len(cards):
        sys.exit(f"only {len(latencies)} of {len(cards)} check-ins granted: {failures[:1]}")
    latencies.append(elapsed)
    return latencies


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by process ``pid`` and by its descendants (the
    check workers under their fork server), from /proc (0 where it cannot be read)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    below, todo = 0.0, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        below += used.get(child, 0.0)
        todo += children.get(child, [])
    return used.get(pid, 0.0), below


def run(count: int, proofs: bool, rate: float | None, checkins: int = 0, proof_workers: int = 1) -> list[float]:
    """Ballots (``count``, sealed with directly signed tokens) or, with ``checkins``, card-proven
    check-ins; latencies, then the wall time. The ledger's CPU time over the ballots goes to
    :data:`LAST_CPU` (the machine may be shared: CPU per ballot does not depend on that)."""
    with tempfile.TemporaryDirectory() as tmp:
        station, cards = make_station(Path(tmp), checkins)
        ballots = seal_all(station, count) if not checkins else {}
        with Broker(station):
            command = [sys.executable, "-m", "station_hub.cli", "ledger", str(station.directory),
                       "--proof-workers", str(proof_workers)]  # fmt: skip
            roll = subprocess.Popen([sys.executable, "-m", "station_hub.cli", "roll", tmp + "/station"])
            ledger = subprocess.Popen(command + ([] if proofs else ["--no-proofs"]))
            try:
                with HubClient(station, "op1").connect() as operator:
                    change_polls(operator, "open")
                if checkins:
                    return check_in_all(station, cards)
                before = cpu_seconds(ledger.pid)
                latencies = send(station, ballots, rate)
                after = cpu_seconds(ledger.pid)
                LAST_CPU.update(main=after[0] - before[0], workers=after[1] - before[1])
                return latencies
            finally:
                for process in (ledger, roll):
                    process.terminate()
                    process.wait(10)


LAST_CPU: dict[str, float] = {}
"""CPU seconds of the last run's ballots: the ledger's own process and its check workers."""


def drain(count: int, proof_workers: int) -> tuple[int, float]:
    """The ledger's own capacity: ``count`` ballots (no proof checks) wait at the broker for the
    ledger's persistent session, published while it was stopped; then it starts and drains
    them. Nobody reads the acknowledgements, so the cores hold only the broker and the ledger,
    as on site, where the terminals are other machines. Returns (ballots drained, seconds
    from the first commit to the last): the count is read from the ledger's files."""
    with tempfile.TemporaryDirectory() as tmp:
        station, _ = make_station(Path(tmp))
        ballots = seal_all(station, count)
        with Broker(station):
            command = [sys.executable, "-m", "station_hub.cli", "ledger", str(station.directory),
                       "--proof-workers", str(proof_workers), "--no-proofs"]  # fmt: skip
            roll = subprocess.Popen([sys.executable, "-m", "station_hub.cli", "roll", tmp + "/station"])
            ledger = subprocess.Popen(command)
            try:
                with HubClient(station, "op1").connect() as operator:
                    change_polls(operator, "open")
                ledger.terminate()
                ledger.wait(10)
                for terminal, payloads in ballots.items():
                    with HubClient(station, terminal).connect() as client:
                        sent = [client._client.publish(station.topics.ballot(terminal), payload, qos=1)
                                for _, payload in payloads]  # fmt: skip
                        for info in sent:
                            info.wait_for_publish(30)
                ledger = subprocess.Popen(command)
                before = (0.0, 0.0)
                first: tuple[int, float] | None = None
                held, deadline = 0, time.monotonic() + 300
                while held < count and time.monotonic() < deadline:
                    time.sleep(0.02)
                    held = ledger_count(station)
                    if first is None and held:
                        first, before = (held, time.perf_counter()), cpu_seconds(ledger.pid)
                if held < count or first is None:
                    sys.exit(f"the ledger held only {held} of {count} ballots")
                elapsed, after = time.perf_counter() - first[1], cpu_seconds(ledger.pid)
                LAST_CPU.update(main=after[0] - before[0], workers=after[1] - before[1])
                return count - first[0], elapsed
            finally:
                for process in (ledger, roll):
                    process.terminate()
                    process.wait(10)


def ledger_count(station: Station) -> int:
    """Ballots the ledger holds (chained and pooled), read-only from its two files."""
    total = 0
    for path, table in ((station.ledger_db, "entries"), (pool_file(station.ledger_db), "pool")):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
                total += db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0
    return total


def proof_rates(count: int, workers: int) -> float:
    """Ballots/s of the ledger's check workers alone (parse, signatures, token and proofs) on
    ``workers`` processes (the ledger's own pool, warmed up), fed in chunks: no broker, no commit."""
    with tempfile.TemporaryDirectory() as tmp:
        station, _ = make_station(Path(tmp))
        jobs = []
        lookup = DeviceDirectory(station).lookup
        for terminal, payloads in seal_all(station, count).items():
            key = lookup(terminal)
            assert not isinstance(key, str), key
            jobs += [(payload, key.public_bytes_raw()) for _, payload in payloads]
        election = station.election()
        examiner = Examiner(election.manifest, election.context.joint_public_key, station.token_public_key(), True)
        pool = proof_pool(workers, examiner)
        try:
            list(pool.map(examine_job, jobs[: 4 * workers], chunksize=1))  # warm, like a running ledger's workers
            started = time.perf_counter()
            found = list(pool.map(examine_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
            elapsed = time.perf_counter() - started
        finally:
            pool.shutdown()
        refused = [f for f in found if not isinstance(f, Examined) or f.proof_failures or not f.token_ok]
        if refused:
            sys.exit(f"{len(refused)} ballots failed their checks: {refused[0]}")
        return len(jobs) / elapsed


def cpu_note(count: int) -> str:
    """The ledger's CPU time per ballot of the last run, split between its process and workers."""
    main_ms, workers_ms = LAST_CPU["main"] * 1000 / count, LAST_CPU["workers"] * 1000 / count
    return f"ledger CPU {main_ms + workers_ms:.2f} ms/ballot: {main_ms:.2f} in its process, {workers_ms:.2f} in workers"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ballots", type=int, default=4000)
    parser.add_argument("--paced", type=int, default=2000, help="ballots of the paced latency run")
    parser.add_argument("--rate", type=float, default=500.0, help="ballots/s of the paced latency run")
    parser.add_argument("--checkins", type=int, default=100, help="card-proven check-ins (one test card each)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} core(s); manifest batch_min {BATCH_MIN}; 4 terminals; ledger, broker and these terminals share "
          "the cores")  # fmt: skip
    for workers in sorted({1, cores}):
        *latencies, elapsed = run(args.ballots, False, None, proof_workers=workers)
        print(f"throughput without proof checks, {workers} check worker(s): {len(latencies) / elapsed:,.0f} "
              f"ballots/s ({len(latencies)} ballots in {elapsed:.2f} s; {cpu_note(len(latencies))})")  # fmt: skip
    for workers in sorted({1, cores}):
        drained, seconds = drain(args.ballots, workers)
        print(f"ledger draining a backlog (terminals off these cores), {workers} check worker(s): "
              f"{drained / seconds:,.0f} ballots/s ({drained} in {seconds:.2f} s; {cpu_note(drained)})")  # fmt: skip
    alone = {workers: proof_rates(args.ballots // 4, workers) for workers in sorted({1, cores})}
    print("check workers alone, with proofs:  " + "  |  ".join(
        f"{w} worker(s): {r:,.0f} ballots/s, {r / w:,.0f} per core" for w, r in alone.items()
    ) + f"  |  scaling {alone[max(alone)] / alone[1]:.2f}x")  # fmt: skip
    rates = {}
    for workers in sorted({1, cores}):
        *latencies, elapsed = run(args.ballots // 4, True, None, proof_workers=workers)
        rates[workers] = (len(latencies) / elapsed, len(latencies), elapsed)
        print(f"  with proof checks, {workers} worker(s): {cpu_note(len(latencies))}")
    print("with proof checks:  " + "  |  ".join(
        f"{w} worker(s): {r:,.0f} ballots/s, {r / w:,.0f} per core ({n} in {t:.2f} s)" for w, (r, n, t) in rates.items()
    ) + f"  |  scaling {rates[max(rates)][0] / rates[1][0]:.2f}x")  # fmt: skip
    *latencies, elapsed = run(args.paced, False, args.rate, proof_workers=cores)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"ack latency paced at {args.rate:,.0f} ballots/s, no proofs ({len(latencies)} ballots, "
          f"{len(latencies) / elapsed:,.0f}/s achieved): p50 {cuts[49] * 1000:.1f} ms, "
          f"p99 {cuts[98] * 1000:.1f} ms; {cpu_note(len(latencies))}")  # fmt: skip
    if args.checkins:
        *latencies, elapsed = run(0, False, None, checkins=args.checkins)
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        print(f"card-proven check-ins, 4 terminals at once: {len(latencies) / elapsed:,.1f}/s "
              f"({len(latencies)} in {elapsed:.2f} s), latency p50 {cuts[49] * 1000:.1f} ms, "
              f"p99 {cuts[98] * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
