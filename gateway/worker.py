"""``gateway run``: one ingest worker. Run several; the broker's shared subscription splits the load.

The network thread only queues messages (manual acknowledgement: the broker's PUBACK is held
back too). The worker thread checks a batch (phase 1, no lock), lets the store judge and
commit it (phase 2, one transaction), and only then publishes the confirm to the hub and
releases the PUBACK. A crash anywhere loses nothing: before the commit the hub resends, after
it the resend is a no-op.

``GATEWAY_FAILPOINT=after-commit`` stops the process (SIGSTOP) right after its first commit
of a batch with entries, before confirming, printing ``FAILPOINT after-commit`` to stderr,
so fault tests can kill it exactly there.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from election.encoding import canonical_bytes, parse_json
from election.errors import ElectionError
from gateway.central import Central
from gateway.checker import ElectionKeys, Incident, StationProfile, prevalidate
from gateway.store import Store
from infra.mqtt import connect, make_client
from protocol.forwarding import (
    MAX_MESSAGE_BYTES,
    Batch,
    Confirm,
    Refusal,
    UpMessage,
    down_topic,
    parse_up,
    shared_up_subscription,
    station_of_up_topic,
)

log = logging.getLogger("gateway.worker")


class GatewayWorker:
    def __init__(self, central: Central, name: str, *, database: str | None = None) -> None:
        self.central = central
        self.name = name
        election = central.election()
        self.election = ElectionKeys(election.manifest, election.context.joint_public_key)
        self.store = Store(database or central.database_target, election.manifest.base_hash)
        self.profiles: dict[str, StationProfile] = self.store.profiles()
        self.failpoint = os.environ.get("GATEWAY_FAILPOINT")
        self.batches = 0
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.client = make_client(central, name)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_message = lambda client, userdata, message: self._inbox.put(message)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("%s: the central broker refused the connection: %s", self.name, reason)
            return
        client.subscribe(shared_up_subscription(), qos=1)
        self.connected.set()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        connect(self.client, self.central)  # type: ignore[arg-type]
        try:
            while not self._stop.is_set():
                try:
                    message = self._inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.handle(message)
                self.client.ack(message.mid, message.qos)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.store.close()

    def handle(self, message: mqtt.MQTTMessage) -> None:
        station_id = station_of_up_topic(message.topic)
        if station_id is None:
            log.warning("ignored a message on %s", message.topic)
            return
        try:
            parsed = parse_up(bytes(message.payload), station_id)
        except ElectionError as error:
            self._flag(Incident(station_id, None, "malformed", str(error)))
            self._reply(station_id, Refusal(station_id, request_of(bytes(message.payload)), "malformed", str(error)))
            return
        profile = self._profile(station_id)
        if profile is None:
            detail = "the station is not registered at the central office"
            self._flag(Incident(station_id, None, "unknown_station", detail))
            self._reply(station_id, Refusal(station_id, parsed.request, "unknown_station", detail))
            return
        if isinstance(parsed, Batch):
            self._ingest(profile, parsed)
        self._confirm(station_id, parsed)

    def _profile(self, station_id: str) -> StationProfile | None:
        """Registration may happen while workers run: look again before calling it unknown."""
        if station_id not in self.profiles:
            self.profiles = self.store.profiles()
        return self.profiles.get(station_id)

    def _ingest(self, profile: StationProfile, batch: Batch) -> None:
        checked = prevalidate(profile, self.election, batch)
        applied = self.store.ingest(profile.station_id, checked)
        for incident in [*checked.incidents, *applied.incidents]:
            log.error("%s: %s", self.name, incident.describe())
        self.batches += 1
        if applied.entries and self.failpoint == "after-commit":
            print("FAILPOINT after-commit", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    def _confirm(self, station_id: str, message: UpMessage) -> None:
        state = self.store.station_state(station_id)
        assert state is not None
        confirm = Confirm(station_id, message.request, state.head, state.checkpoint, state.closing, state.state)
        self._reply(station_id, confirm)

    def _flag(self, incident: Incident) -> None:
        log.error("%s: %s", self.name, incident.describe())
        self.store.add_incidents([incident])

    def _reply(self, station_id: str, answer: Confirm | Refusal) -> None:
        self.client.publish(down_topic(station_id), canonical_bytes(answer.to_json()), qos=1)


def request_of(payload: bytes) -> int:
    """The request number of a message that is otherwise not the protocol (0 if there is none)."""
    try:
        data = parse_json(payload, max_size=MAX_MESSAGE_BYTES)
    except ElectionError:
        return 0
    request = data.get("request") if isinstance(data, dict) else None
    return request if type(request) is int and 0 <= request < 2**63 else 0


def serve(central: Central, name: str, database: str | None = None) -> None:
    """Run one worker until SIGTERM or SIGINT."""
    worker = GatewayWorker(central, name, database=database)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    worker.run()
