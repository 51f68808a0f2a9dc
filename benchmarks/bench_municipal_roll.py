"""Municipal roll throughput (issue 17): card-proven check-ins per second through the real path,
PostgreSQL's commit latency for the atomic mark, and what a streaming replica costs.

Starts a real PostgreSQL primary (Debian ``postgresql``; fsync and synchronous_commit ON,
unlike the tests) and a real streaming replica of it (``pg_basebackup -R``,
infra/pgserver.py), a real central Mosquitto (mutual TLS), the municipal roll service, and
``--stations`` early/common station hubs (each its own Mosquitto and station roll relay; their
polls opened). Terminals (software JPKI test cards: the card's own ~1-5 s signing time is not
counted) check voters in over both request/response rounds: terminal → station broker →
relay → central broker → municipal roll (JPKI chain + CRL + card signature, atomic mark,
RSA-3072 blind signature) → back.

Prints: the latency of one atomic mark (one UPDATE … RETURNING, one commit), median and 99th
percentile, on the primary alone; marks/s committed from 1 and from 16 connections at once
(alone and with the synchronous replica); the replica's lag (commit on the primary returned → the
mark visible on the replica) with asynchronous streaming; the commit latency with synchronous
replication (``synchronous_commit = remote_apply``: the commit returns once the replica has
applied it); then, with the replica kept synchronous, check-ins/s through the store + core
in-process (1 and 2 threads, no MQTT) and through the real path with S stations x T terminals.

Usage: .venv/bin/python benchmarks/bench_municipal_roll.py [--voters N] [--stations S] [--no-replica]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from appliance.card.authenticator import AuthMode
from appliance.card.testca import TestCa
from election import tokens
from election.manifest import sample_manifest
from election.record import RecordWriter
from election.simulation import ceremony, write_election_package
from gateway.central import init_central
from gateway.municipal_roll import (
    MunicipalRoll,
    MunicipalRollService,
    MunicipalStore,
    create_municipality,
    grant_relay_identity,
)
from infra.broker import Broker, free_port
from infra.pgserver import PostgresServer
from infra.pki import Role
from protocol.messages import CheckinChallenge, CheckinChallengeRequest, CheckinGranted, CheckinRequest
from protocol.messages import checkin_binding as binding_of
from protocol.municipal import municipal_roll_identity
from station_hub.municipal_relay import RelayService, install_municipal_link, relay_request
from station_hub.station import init_station
from station_hub.terminal_client import CheckinRefused, TerminalClient

MUNICIPALITY = "bench-city"


class Card:
    def __init__(self, certificate_der: bytes, key) -> None:
        self.certificate_der, self.key = certificate_der, key

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def electorate(root: Path, count: int) -> tuple[TestCa, list[Card]]:
    ca = TestCa.create(root / "jpki")
    for _ in range(count):
        ca.issue_card(pin="1234", password="PASSWORD1")
    cards = []
    for card in ca.issued_cards():
        credential = card.credential(AuthMode.AUTH)
        cards.append(Card(credential.certificate.public_bytes(serialization.Encoding.DER), credential.private_key))
    return ca, cards


def percentiles(timings: list[float]) -> tuple[float, float]:
    timings = sorted(timings)
    return statistics.median(timings), timings[int(0.99 * (len(timings) - 1))]


def commit_latency(url: str, modulus_length: int, samples: int, name: str = "latency") -> tuple[float, float, str]:
    """Median and p99 (ms) of one atomic mark on its own connection (one statement, one commit)."""
    store = MunicipalStore(url)
    try:
        store.add_municipality(name, modulus_length)
        keys = [secrets.token_bytes(32) for _ in range(samples)]
        store.import_voters(name, keys)
        store.set_polls(name, "open")
        timings = []
        for key in keys:
            blinded = secrets.token_bytes(modulus_length)
            began = time.perf_counter()
            assert store.mark(name, key, blinded)
            timings.append((time.perf_counter() - began) * 1000)
        settings = store._db.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
        fsync, sync = settings.fetchone()
    finally:
        store.close()
    return (*percentiles(timings), f"fsync={fsync} synchronous_commit={sync}")


def mark_rate(url: str, modulus_length: int, connections: int, per_connection: int, name: str) -> float:
    """Marks/s committed by ``connections`` connections at once (each its own voters): what one
    primary sustains, PostgreSQL sharing WAL flushes between concurrent commits (group commit)."""
    stores = [MunicipalStore(url) for _ in range(connections)]
    try:
        stores[0].add_municipality(name, modulus_length)
        shares = [[secrets.token_bytes(32) for _ in range(per_connection)] for _ in range(connections)]
        stores[0].import_voters(name, [key for share in shares for key in share])
        stores[0].set_polls(name, "open")
        barrier = threading.Barrier(connections + 1)

        def mark(store: MunicipalStore, keys: list[bytes]) -> None:
            barrier.wait()
            for key in keys:
                assert store.mark(name, key, secrets.token_bytes(modulus_length))

        threads = [threading.Thread(target=mark, args=(st, sh)) for st, sh in zip(stores, shares, strict=True)]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        return connections * per_connection / (time.perf_counter() - began)
    finally:
        for store in stores:
            store.close()


def replica_lag(primary_url: str, replica_url: str, modulus_length: int, samples: int) -> tuple[float, float]:
    """Median and p99 (ms) from a mark's commit returning on the primary to the mark being
    visible on the asynchronous streaming replica (polled on one open connection)."""
    import psycopg

    name = "lag"
    store = MunicipalStore(primary_url)
    watcher = psycopg.connect(replica_url, autocommit=True)
    try:
        store.add_municipality(name, modulus_length)
        keys = [secrets.token_bytes(32) for _ in range(samples)]
        store.import_voters(name, keys)
        store.set_polls(name, "open")
        query = "SELECT blinded IS NOT NULL FROM mr_voters WHERE municipality = %s AND voter_key = %s"
        deadline = time.monotonic() + 30
        while watcher.execute(query, (name, keys[-1])).fetchone() is None:  # the register reached the replica
            assert time.monotonic() < deadline, "the replica never received the register"
            time.sleep(0.01)
        timings = []
        for key in keys:
            assert store.mark(name, key, secrets.token_bytes(modulus_length))
            committed = time.perf_counter()
            while not watcher.execute(query, (name, key)).fetchone()[0]:
                pass
            timings.append((time.perf_counter() - committed) * 1000)
    finally:
        watcher.close()
        store.close()
    return percentiles(timings)


def core_rate(url: str, municipality, cards: list[Card], threads: int) -> float:
    """Check-ins/s through MunicipalRoll (store + core), ``threads`` connections, no MQTT."""
    core = municipality.core()
    key = municipality.token_public_key()
    rolls = [MunicipalRoll(MunicipalStore(url), {MUNICIPALITY: core}) for _ in range(threads)]
    shares = [cards[i::threads] for i in range(threads)]

    def run(roll: MunicipalRoll, mine: list[Card], station: str) -> None:
        for card in mine:
            challenge = roll.handle(station, "t1", CheckinChallengeRequest().encode())
            assert isinstance(challenge, CheckinChallenge)
            blinded = tokens.blind(key, secrets.token_bytes(32)).blinded
            signature = card.sign(binding_of(station, "t1", challenge.challenge, blinded))
            reply = roll.check_in(station, "t1", CheckinRequest(challenge.challenge, blinded, card.certificate_der,
                                                                 signature))  # fmt: skip
            assert isinstance(reply, CheckinGranted), reply

    began = time.monotonic()
    workers = [threading.Thread(target=run, args=(rolls[i], shares[i], f"core-{i}")) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    for roll in rolls:
        roll.store.close()
    return len(cards) / elapsed


def wait_for_roll(client: TerminalClient, timeout: float = 30.0) -> None:
    """Until the municipal roll answers (a challenge request: harmless, it expires)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.challenge(timeout=15)
            return
        except CheckinRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def unmark(url: str) -> None:
    """Clear the marks between runs (a benchmark only: the same cards check in again)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE mr_voters SET blinded = NULL WHERE municipality = %s", (MUNICIPALITY,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voters", type=int, default=160, help="voters (each run: in-process x2, real path)")
    parser.add_argument("--stations", type=int, default=2)
    parser.add_argument("--terminals", type=int, default=2, help="terminals per station")
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument("--roll-processes", type=int, default=2, help="municipal-roll processes (0: a thread here)")
    parser.add_argument("--no-replica", dest="replica", action="store_false",
                        help="no streaming replica (the primary alone throughout)")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-mr-", dir="/tmp"))
    processes: list = []
    rolls: list[subprocess.Popen] = []
    servers = ExitStack()
    try:
        print(f"making {args.voters} JPKI test cards …", flush=True)
        ca, cards = electorate(root, args.voters)
        salt = secrets.token_bytes(32)
        municipality = create_municipality(root / MUNICIPALITY, MUNICIPALITY, roll_salt=salt,
                                           jpki_anchors=[ca.directory / "auth-ca.pem"],
                                           jpki_crls=[ca.crl_path(AuthMode.AUTH)])  # fmt: skip
        keys = [bytes.fromhex(k) for k in ca.roll(salt, AuthMode.AUTH)["voter_keys"]]  # type: ignore[union-attr]
        manifest = sample_manifest(contests=1, selections=2, limit=1)
        _t, publics, context = ceremony(manifest, 3, 2)
        package = root / "package"
        write_election_package(RecordWriter(package), manifest, context, publics)
        with servers:
            pg_root = Path(tempfile.mkdtemp(prefix="bench-mr-pg-", dir="/tmp"))  # short: socket paths are limited
            servers.callback(shutil.rmtree, pg_root, ignore_errors=True)
            print("starting PostgreSQL (primary) …", flush=True)
            primary = servers.enter_context(PostgresServer(pg_root / "primary"))
            admin_url = primary.url
            modulus = municipality.core().modulus_length
            median, p99, settings = commit_latency(admin_url, modulus, args.latency_samples)
            alone = [mark_rate(admin_url, modulus, n, args.latency_samples // n * 2, f"rate-{n}") for n in (1, 16)]
            replication = "no replica"
            if args.replica:
                print("starting a streaming replica (pg_basebackup -R) …", flush=True)
                replica = servers.enter_context(primary.replica(pg_root / "replica", name="replica_1"))
                primary.wait_streaming(replica.name)
                lag = replica_lag(admin_url, replica.url, modulus, args.latency_samples)
                primary.configure(synchronous_standby_names=replica.name, synchronous_commit="remote_apply")
                sync = commit_latency(admin_url, modulus, args.latency_samples, name="latency-sync")
                synced = [mark_rate(admin_url, modulus, n, args.latency_samples // n * 2, f"rate-sync-{n}")
                          for n in (1, 16)]  # fmt: skip
                replication = "synchronous replica (remote_apply)"
            print("measuring check-ins …", flush=True)
            store = MunicipalStore(admin_url)
            store.add_municipality(MUNICIPALITY, modulus)
            store.import_voters(MUNICIPALITY, keys)
            stations = [f"bench-{i}" for i in range(args.stations)]
            for i, station_id in enumerate(stations):
                store.add_station(station_id, MUNICIPALITY, "early" if i == 0 else "common")
            for i in range(2):
                store.add_station(f"core-{i}", MUNICIPALITY, "common")
            store.set_polls(MUNICIPALITY, "open")
            store.close()

            rate1 = core_rate(admin_url, municipality, cards, 1)
            unmark(admin_url)
            rate2 = core_rate(admin_url, municipality, cards, 2)
            unmark(admin_url)

            central = init_central(root / "central", package, port=free_port(), workers=1)
            for i in range(1, max(1, args.roll_processes) + 1):
                central.issue(municipal_roll_identity(i), Role.ROLL)
            central.write_broker_files(1)
            processes.append(Broker(central, root / "central.log"))
            service = None
            if args.roll_processes == 0:
                service = MunicipalRollService(central, admin_url, [municipality], workers=2)
                threading.Thread(target=service.run, daemon=True).start()
            else:  # one municipal-roll process per core, sharing the check-ins (shared subscription)
                config = root / "municipal-roll.json"
                config.write_text(json.dumps({"database": admin_url, "municipalities": [str(municipality.directory)]}))
                command = [sys.executable, "-m", "gateway.municipal_roll", str(central.directory), str(config)]
                for i in range(1, args.roll_processes + 1):
                    log = (root / f"municipal-roll-{i}.log").open("wb")  # the child keeps it
                    identity = ["--identity", municipal_roll_identity(i)]
                    rolls.append(subprocess.Popen([*command, "--workers", "1", *identity], stderr=log))
            relays = []
            for station_id in stations:
                terminals = [f"t{j}" for j in range(1, args.terminals + 1)]
                station = init_station(root / station_id, station_id, package, terminals, ["op1"], port=free_port())
                grant = grant_relay_identity(central.directory, station_id, relay_request(station))
                install_municipal_link(station, municipality=MUNICIPALITY, kind="common", host=central.host,
                                       port=central.port, ca_pem=central.ca_file.read_bytes(), certificate_pem=grant,
                                       token_public_pem=municipality.token_public_file.read_bytes())  # fmt: skip
                processes.append(Broker(station, root / f"{station_id}.log"))
                relay = RelayService(station, timeout=10.0)
                relay.store.set_polls("open")  # the station's own polls (opened by its officials in a real run)
                threading.Thread(target=relay.run, daemon=True).start()
                relays.append((station, relay))
            for _station, relay in relays:
                assert relay.central_ready.wait(10)
            clients = [TerminalClient(station, t).connect() for station, _ in relays for t in station.terminals]
            wait_for_roll(clients[0])
            real = cards
            shares = [real[i :: len(clients)] for i in range(len(clients))]
            errors: list[BaseException] = []

            def vote(client: TerminalClient, mine: list[Card]) -> None:
                try:
                    for card in mine:
                        client.check_in(card)
                except BaseException as error:
                    errors.append(error)

            began = time.monotonic()
            threads = [threading.Thread(target=vote, args=(c, s)) for c, s in zip(clients, shares, strict=True)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - began
            if errors:
                raise errors[0]
            for client in clients:
                client.close()
            store = MunicipalStore(admin_url)
            checked = store.checked_in(MUNICIPALITY)
            store.close()
            for _station, relay in relays:
                relay.stop()
            if service is not None:
                service.stop()
            for process in rolls:
                process.terminate()
                process.wait(10)
            where = "in this process" if service else f"in {len(rolls)} processes"
            print(f"machine: {os.cpu_count()} cores; PostgreSQL {settings}")
            print(f"atomic mark (UPDATE … WHERE blinded IS NULL RETURNING, one commit), primary alone: "
                  f"median {median:.2f} ms, p99 {p99:.2f} ms over {args.latency_samples}")  # fmt: skip
            print(f"marks/s committed, primary alone: {alone[0]:.0f} on 1 connection, {alone[1]:.0f} on 16 at once")
            if args.replica:
                print(f"marks/s committed, synchronous replica: {synced[0]:.0f} on 1 connection, "
                      f"{synced[1]:.0f} on 16 at once")  # fmt: skip
                print(f"replica lag, asynchronous streaming (commit returned → visible on the replica): "
                      f"median {lag[0]:.2f} ms, p99 {lag[1]:.2f} ms")  # fmt: skip
                print(f"atomic mark with a synchronous replica ({sync[2]}): "
                      f"median {sync[0]:.2f} ms, p99 {sync[1]:.2f} ms")  # fmt: skip
            print(f"store + core in-process ({replication}): {rate1:.0f} check-ins/s (1 thread), "
                  f"{rate2:.0f} check-ins/s (2 threads)")  # fmt: skip
            print(f"real path (municipal roll {where}; {replication}), {args.stations} stations x "
                  f"{args.terminals} terminals, "
                  f"{len(real)} voters: "
                  f"{len(real) / elapsed:.0f} check-ins/s ({elapsed:.1f} s; 2 MQTT round trips each)")  # fmt: skip
            print(f"voters marked on the municipal roll: {checked}")
    finally:
        for roll in rolls:
            if roll.poll() is None:
                roll.terminate()
                roll.wait(10)
        for process in reversed(processes):
            process.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
