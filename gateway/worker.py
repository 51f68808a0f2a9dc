"""``gateway run``: one ingest worker. Run several; the broker's shared subscription splits the load.

The network thread only queues messages (manual acknowledgement: the broker's PUBACK is held
back too). The worker thread checks a batch (phase 1, no lock), lets the store judge and
commit it (phase 2, one transaction), and only then publishes the confirm to the hub and
releases the PUBACK. A crash anywhere loses nothing: before the commit the hub resends, after
it the resend is a no-op.

``POLLING_STATION_FAILPOINT=gateway-after-commit`` stops the process (infra/failpoints.py)
right after it commits a batch with entries, before confirming, so fault tests can kill it
exactly there.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt

from election.encoding import canonical_bytes, parse_json
from election.errors import ElectionError
from gateway.central import Central
from gateway.checker import ElectionKeys, Incident, StationProfile, prevalidate
from gateway.store import Store
from infra.failpoints import failpoint
from infra.mqtt import connect, make_client
from infra.service import BrokerWatch, Vitals, run_service
from protocol.forwarding import (
    MAX_DETAIL,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST,
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
        self.store = Store(database or central.database_target, election.manifest)
        self.profiles: dict[str, StationProfile] = self.store.profiles()
        self.batches = 0
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.vitals = Vitals()
        self.broker_watch = BrokerWatch(log, name, "the central broker")
        self.client = make_client(central, name)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda client, userdata, message: self._inbox.put(message)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.broker_watch.refused(reason)
            return
        self.broker_watch.up()
        client.subscribe(shared_up_subscription(), qos=1)
        self.connected.set()
        self.vitals.mark_ready()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        self.broker_watch.down(reason, stopping=self._stop.is_set())

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("%s starting: %d station(s) registered; the store holds what was committed", self.name,
                 len(self.profiles))  # fmt: skip
        connect(self.client, self.central)  # type: ignore[arg-type]
        try:
            while not self._stop.is_set():
                self.vitals.beat()
                try:
                    message = self._inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.handle_safely(message)
                self.client.ack(message.mid, message.qos)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.store.close()

    def handle_safely(self, message: mqtt.MQTTMessage) -> None:
        """:meth:`handle`, where a bug or a failing store costs this one message, not the worker.

        The message is then acknowledged without an answer: the hub, hearing nothing, asks
        again (``hello``) after its timeout, so nothing is lost and nothing is redelivered in
        a loop. Nothing was committed (the store's transaction rolled back).
        """
        try:
            self.handle(message)
        except Exception:
            log.exception("%s: internal error handling a message on %r; not answered", self.name, message.topic)

    def handle(self, message: mqtt.MQTTMessage) -> None:
        """One up-message: parse it strictly, judge and commit a batch, answer the hub."""
        station_id = station_of_up_topic(message.topic)
        if station_id is None:
            log.warning("ignored a message on %r", message.topic[:200])
            return
        payload = bytes(message.payload)
        try:
            parsed = parse_up(payload, station_id)
        except ElectionError as error:
            detail = str(error)[:MAX_DETAIL]
            self._flag(Incident(station_id, None, "malformed", detail))
            self._reply(station_id, Refusal(station_id, request_of(payload), "malformed", detail))
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
        for incident in applied.audit:  # judged again at every later batch: a statement may follow its ballots
            log.warning("%s: %s", self.name, incident.describe())
        self.batches += 1
        if applied.entries:
            failpoint("gateway-after-commit")

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
    return request if type(request) is int and 0 <= request <= MAX_REQUEST else 0


def serve(central: Central, name: str, database: str | None = None) -> None:
    """Run one worker until SIGTERM or SIGINT."""
    run_service(GatewayWorker(central, name, database=database), f"gateway worker {name}")
