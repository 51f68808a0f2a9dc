"""Ledger throughput and acknowledgement latency over TLS on loopback (real Mosquitto).

Prints ballots/s accepted (signature, device chain, token, durable commit; with and without
ZK proof checks) and ack latency p50/p99 at a paced rate. Goal: >= 2,000/s without proofs on
2 cores, p99 < 200 ms. Usage: .venv/bin/python benchmarks/bench_hub.py [--ballots N]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from election.ballot import GENESIS_HASH, DeviceSigner, Token, seal_ballot
from election.encoding import canonical_bytes, parse_json, sha256
from election.manifest import sample_manifest
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from infra.broker import Broker, free_port
from infra.mqtt import HubClient
from station_hub.operator import change_polls
from station_hub.station import Station, init_station

TERMINALS = [f"t{i}" for i in range(1, 5)]


def make_station(root: Path) -> Station:
    manifest = sample_manifest(contests=1, selections=2, limit=1)
    _trustees, publics, context = ceremony(manifest, 2, 2)
    package = root / "package"
    write_election_package(RecordWriter(package), manifest, context, publics)
    return init_station(root / "station", "bench", package, TERMINALS, ["op1"], port=free_port())


def seal_all(station: Station, count: int) -> dict[str, list[bytes]]:
    """Pre-sealed ballots per terminal, each with a roll-signed token (signed directly)."""
    election, roll_key = station.election(), station.token_private_key()
    pss = padding.PSS(padding.MGF1(hashes.SHA384()), 48)
    out: dict[str, list[bytes]] = {}
    for terminal in TERMINALS:
        signer = DeviceSigner(terminal, station.signing_key(terminal))
        prev, payloads = GENESIS_HASH, []
        for seq in range(1, count // len(TERMINALS) + 1):
            message = secrets.token_bytes(32)
            token = Token(message, roll_key.sign(message, pss, hashes.SHA384()))
            ballot, _ = seal_ballot(election.manifest, election.context.joint_public_key,
                                    {"contest-1": {"candidate-1"}}, signer, seq, prev, token)  # fmt: skip
            prev = ballot.ballot_hash
            payloads.append(canonical_bytes(ballot.to_json()))
        out[terminal] = payloads
    return out


def send(station: Station, ballots: dict[str, list[bytes]], rate: float | None) -> list[float]:
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
                if started is not None and data["result"] == "accepted":
                    latencies.append(time.perf_counter() - started)
                if len(latencies) == total:
                    done.set()
            client._client.ack(message.mid, message.qos)

        client._client.on_message = on_message
        clients.append(client)
    start = time.perf_counter()
    for index in range(max(len(v) for v in ballots.values())):
        for client, terminal in zip(clients, ballots, strict=True):
            payload = ballots[terminal][index]
            with lock:
                sent[sha256(payload).hex()] = time.perf_counter()
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


def run(count: int, proofs: bool, rate: float | None) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        station = make_station(Path(tmp))
        ballots = seal_all(station, count)
        with Broker(station):
            command = [sys.executable, "-m", "station_hub.cli", "ledger", str(station.directory)]
            roll = subprocess.Popen([sys.executable, "-m", "station_hub.cli", "roll", tmp + "/station"])
            ledger = subprocess.Popen(command + ([] if proofs else ["--no-proofs"]))
            try:
                with HubClient(station, "op1").connect() as operator:
                    change_polls(operator, "open")
                return send(station, ballots, rate)
            finally:
                for process in (ledger, roll):
                    process.terminate()
                    process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ballots", type=int, default=4000)
    args = parser.parse_args()
    for proofs, count in ((False, args.ballots), (True, args.ballots // 4)):
        *latencies, elapsed = run(count, proofs, None)
        label = "with proof checks" if proofs else "without proof checks"
        print(f"throughput {label}: {len(latencies) / elapsed:,.0f} ballots/s "
              f"({len(latencies)} ballots in {elapsed:.2f} s)")  # fmt: skip
    *latencies, _ = run(1000, False, 200.0)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"ack latency at 200 ballots/s, no proofs: p50 {cuts[49] * 1000:.1f} ms, "
          f"p99 {cuts[98] * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
