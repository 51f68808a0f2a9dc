"""Helpers for the gateway tests: an election with trustee keys, stations with voters, voting,
a real PostgreSQL server, and a raw client that speaks the forwarding protocol to the centre."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hub"))

from hub_fixtures import Hub, SoftCard, cards_of, copy_station, jpki_files, make_electorate, roll_of

from election.encoding import parse_json
from election.manifest import sample_manifest
from election.simulation import ceremony_to_files
from gateway.central import Central
from infra.broker import Broker, free_port
from infra.link import CentralLink
from infra.mqtt import BrokerSite, HubClient, connect, make_client
from protocol.forwarding import Confirm, DownMessage, down_topic, parse_down, up_topic
from station_hub.operator import change_polls
from station_hub.roll import VOTER_KEYS_FORMAT, RollStore, read_voter_keys
from station_hub.station import Station, init_station
from station_hub.terminal_client import TerminalClient

STATIONS = {"st-a": ["a1", "a2"], "st-b": ["b1", "b2"]}
VOTERS = 12
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/lib/postgresql/bin"))


def make_election(root: Path) -> tuple[Path, list[Path]]:
    """An election package (2 contests × 3 candidates, 3 trustees, any 2 decrypt) and key files."""
    manifest = sample_manifest(contests=2, selections=3, limit=1)
    package = root / "package"
    _context, keys = ceremony_to_files(manifest, 3, 2, package, root / "secrets")
    return package, keys


def make_station_template(root: Path, station_id: str, package: Path) -> tuple[Path, list[SoftCard]]:
    """A station whose roll lists the ``VOTERS`` cards of its own JPKI test CA; returns the
    station directory and the voters' cards (check-ins are card-proven, the salt stays on the hub)."""
    electorate = make_electorate(root / f"{station_id}-jpki", VOTERS)
    salt = secrets.token_bytes(32)
    station = init_station(root / station_id, station_id, package, STATIONS[station_id], [f"op-{station_id}"], port=1,
                           roll_salt=salt, **jpki_files(electorate))  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    document = json.dumps({"format": VOTER_KEYS_FORMAT, "voter_keys": roll_of(electorate, salt)}).encode()
    store.import_voters(read_voter_keys(document))
    store.close()
    return root / station_id, cards_of(electorate)


@dataclass
class RunningStation:
    """A station hub with its broker and both services, as in a polling station."""

    station: Station
    voters: list[SoftCard]
    """The cards of the voters on this station's roll."""
    broker: Broker
    hub: Hub
    expected: dict[tuple[str, str], int] = field(default_factory=dict)
    next_voter: int = 0

    @property
    def station_id(self) -> str:
        return self.station.station_id

    def operator(self) -> HubClient:
        return HubClient(self.station, self.station.operators[0]).connect()

    def polls(self, command: str) -> dict[str, Any]:
        with self.operator() as client:
            return change_polls(client, command)

    def vote(self, count: int, rng_seed: int = 0) -> list[dict[str, Any]]:
        """``count`` voters check in and cast at the station's terminals in turn; returns the acks."""
        import random

        rng = random.Random(rng_seed)
        election = self.station.election()
        acks = []
        terminals = [TerminalClient(self.station, t).connect() for t in self.station.terminals]
        try:
            for n in range(count):
                terminal = terminals[n % len(terminals)]
                token = terminal.check_in(self.voters[self.next_voter])
                self.next_voter += 1
                choices = {c.id: {rng.choice(c.selection_ids())} for c in election.manifest.contests}
                ack = terminal.submit(terminal.submission(terminal.seal(choices, token)))
                assert ack["result"] == "held", ack
                acks.append(ack)
                for contest, marked in choices.items():
                    for selection in marked:
                        self.expected[contest, selection] = self.expected.get((contest, selection), 0) + 1
        finally:
            for terminal in terminals:
                terminal.close()
        return acks

    def stop(self) -> None:
        self.hub.stop()
        self.broker.stop()


@contextmanager
def running_station(
    template: tuple[Path, list[SoftCard]], target: Path, roll_key_of: Station | None = None
) -> Iterator[RunningStation]:
    """A copy of the template, running; ``roll_key_of``: share that station's roll key (one roll)."""
    station = copy_station(template[0], target)
    if roll_key_of is not None:
        shutil.copyfile(roll_key_of.token_key_file, station.token_key_file)
        shutil.copyfile(roll_key_of.token_public_file, station.token_public_file)
    broker = Broker(station, target.parent / f"{station.station_id}-mosquitto.log")
    try:
        hub = Hub(station).start()
    except BaseException:
        broker.stop()
        raise
    running = RunningStation(station, list(template[1]), broker, hub)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """A real PostgreSQL on a free loopback port, run as ``nobody``; yields an admin URL."""
    data = root / "pgdata"
    root.mkdir(parents=True, exist_ok=True)
    data.mkdir()
    shutil.chown(root, "nobody")
    shutil.chown(data, "nobody")
    os.chmod(root, 0o755)
    port = free_port()
    as_nobody = ["runuser", "-u", "nobody", "--"]
    subprocess.run([*as_nobody, str(PG_BIN / "initdb"), "-D", str(data), "-U", "nobody", "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_nobody, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "pg.log"),
                    "-w", "-t", "30", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://nobody@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_nobody, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(admin_url: str) -> str:
    import psycopg

    name = f"gw_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def use_database(central: Central, url: str) -> Central:
    """Point the central office's configuration at another store (a PostgreSQL URL)."""
    path = central.directory / "central.json"
    config = json.loads(path.read_text())
    config["database"] = url
    path.write_text(json.dumps(config))
    reopened = Central.open(central.directory)
    reopened.store().close()
    return reopened


class CentreClient:
    """Speaks the forwarding protocol with a hub's credentials, message by message (tests only)."""

    def __init__(self, site: BrokerSite, station_id: str, *, cert_file: Path | None = None,
                 key_file: Path | None = None) -> None:  # fmt: skip
        """``site``: where the central broker is and its CA; the certificate is the hub's (CN =
        ``station_id``), by default ``site``'s own for that name."""
        self.site, self.station_id = site, station_id
        self.answers: queue.Queue[DownMessage] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = make_client(site, station_id, cert_file=cert_file, key_file=key_file)
        self.client.on_connect = lambda c, *a: c.subscribe(down_topic(station_id), qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.request = int(time.time() * 1000)

    @classmethod
    def of_station(cls, station_dir: Path) -> CentreClient:
        """With the hub's own link to the centre (``station-hub link``)."""
        link = CentralLink.open(station_dir)
        return cls(link, link.station_id)  # type: ignore[arg-type]

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        client.ack(message.mid, message.qos)
        self.answers.put(parse_down(bytes(message.payload), self.station_id))

    def __enter__(self) -> CentreClient:
        connect(self.client, self.site)
        assert self.subscribed.wait(10), "no subscription at the central broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def send(self, build: Any, timeout: float = 30.0, retry_every: float = 2.0) -> DownMessage:
        """Publish ``build(request)`` until the centre answers it, as a hub does (resends are no-ops)."""
        self.request += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.client.publish(up_topic(self.station_id), build(self.request), qos=1)
            resend_at = time.monotonic() + retry_every
            while time.monotonic() < resend_at:
                try:
                    answer = self.answers.get(timeout=max(0.0, resend_at - time.monotonic()))
                except queue.Empty:
                    break
                if answer.request == self.request:
                    return answer
        raise AssertionError(f"no answer from the centre within {timeout} s")


def confirmed_position(answer: DownMessage) -> int:
    assert isinstance(answer, Confirm), answer
    return answer.head.position


def read_json(path: Path) -> Any:
    return parse_json(path.read_bytes())
