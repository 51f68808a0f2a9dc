"""The terminal's MQTT link to the station hub (paho-mqtt, MQTT v5, mutual TLS, QoS 1).

- Ballots: every outbox item not held is published on connect (after a restart or a
  reconnect) and whenever the booth releases some (a cast ballot, with the same voter's
  spoiled ones in the same burst); the ledger's held ack removes it from the outbox. A resend
  of a ballot the ledger already holds gets the same ack, so resending is safe.
- Check-in: MQTT v5 request/response with the roll (response topic + correlation data).
- Status: retained ``terminal_status`` with a last will saying ``online: false``.
- Polls: the ledger's retained ``ledger_status`` tells the booth the polls state (``on_polls``);
  when it says ``closed`` the booth purges every check-in never cast (appliance/outbox.py).

Every message received is validated; a malformed one is logged and dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.outbox import Outbox, OutboxItem
from election.errors import FormatError
from infra.mqtt import publish_last_words
from protocol.messages import AckHeld, LedgerStatus, TerminalStatus, decode_ack, offline_status
from protocol.topics import Topics

log = logging.getLogger("appliance.publisher")
RESEND_AFTER = 3.0


class HubUnreachable(Exception):
    """The broker cannot be reached, or the roll did not answer in time."""


@dataclass(frozen=True, slots=True)
class HubAddress:
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path


class HubLink:
    """Connects in the background and keeps reconnecting; never blocks the voter's flow."""

    def __init__(
        self,
        address: HubAddress,
        station_id: str,
        terminal_id: str,
        outbox: Outbox,
        *,
        on_ack: Callable[[AckHeld], None] = lambda ack: None,
        on_link: Callable[[bool], None] = lambda online: None,
        on_polls: Callable[[str], None] = lambda polls: None,
    ) -> None:
        self.address = address
        self.topics = Topics(station_id)
        self.terminal_id = terminal_id
        self.outbox = outbox
        self.on_ack = on_ack
        self.on_link = on_link
        self.on_polls = on_polls
        self.polls: str | None = None
        """The polls state in the ledger's last status (None until one arrived)."""
        self.status = {"reader": "unknown", "tamper": False}
        self._connected = threading.Event()
        self._last_send = time.monotonic()
        self._published: set[bytes] = set()
        """Ballots published at least once since start: only they are resent when acks are
        overdue. A ballot just committed is published by the cast itself (``send``, with a
        challenged one in the same burst), never first by a resend racing it."""
        self._lock = threading.Lock()
        self._replies: dict[bytes, tuple[threading.Event, list[bytes]]] = {}
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=terminal_id, protocol=mqtt.MQTTv5)
        self._client.tls_set(ca_certs=str(address.ca_file), certfile=str(address.cert_file),
                             keyfile=str(address.key_file))  # fmt: skip
        self._client.reconnect_delay_set(0.2, 2)
        self._client.will_set(self.topics.terminal_status(terminal_id), offline_status("terminal_status"), 1, True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> HubLink:
        self._client.connect_async(self.address.host, self.address.port, keepalive=10, clean_start=True)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        if self._connected.is_set():
            publish_last_words(self._client, self.topics.terminal_status(self.terminal_id), "terminal_status")
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def online(self) -> bool:
        return self._connected.is_set()

    def wait_online(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # --- network thread -------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the terminal: %s", reason)
            return
        client.subscribe([(self.topics.ack(self.terminal_id), 1), (self.topics.checkin_reply(self.terminal_id), 1),
                          (self.topics.ledger_status, 1)])  # fmt: skip
        self._connected.set()
        self.publish_status()
        for item in self.outbox.unacknowledged():
            self._publish_item(item)
        self.on_link(True)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected.is_set():
            log.warning("lost the broker: %s", reason)
        self._connected.clear()
        self.on_link(False)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        if message.topic == self.topics.checkin_reply(self.terminal_id):
            correlation = getattr(message.properties, "CorrelationData", None)
            with self._lock:
                waiter = self._replies.get(correlation) if correlation else None
            if waiter is None:
                log.warning("dropped a check-in reply nobody waits for")
                return
            waiter[1].append(payload)
            waiter[0].set()
            return
        if message.topic == self.topics.ledger_status:
            self._ledger_status(payload)
            return
        try:
            ack = decode_ack(payload)
        except FormatError as error:
            log.warning("dropped a malformed ack: %s", error)
            return
        if isinstance(ack, AckHeld):
            if self.outbox.acknowledge(ack.ballot_hash):
                self.publish_status()
            self.on_ack(ack)
        elif self.outbox.mark_refused(ack.ballot_hash, ack.reason.value):
            # Not which ballot: a log line naming a ballot with its time would date it.
            log.error("the ledger REFUSED a ballot of this terminal: %s (it stays in the outbox)", ack.reason.value)

    def _ledger_status(self, payload: bytes) -> None:
        try:
            status = LedgerStatus.decode(payload)
        except FormatError as error:
            log.warning("dropped a malformed ledger status: %s", error)
            return
        if status.online and status.polls is not None:
            self.polls = status.polls
            self.on_polls(status.polls)

    # --- sending --------------------------------------------------------------------------

    def _publish_item(self, item: OutboxItem) -> None:
        self._last_send = time.monotonic()
        self._published.add(item.ballot_hash)
        self._client.publish(self.topics.ballot(self.terminal_id), item.payload, qos=1)

    def resend_if_due(self, now: float) -> None:
        """Publish the outbox again when acks are overdue (e.g. the ledger was not subscribed yet
        when the broker came back and dropped our resend); the ledger answers duplicates alike."""
        if not self._connected.is_set() or now - self._last_send < RESEND_AFTER:
            return
        self._last_send = now
        for item in self.outbox.unacknowledged():
            if item.ballot_hash in self._published:
                self._publish_item(item)

    def send(self, items: Sequence[OutboxItem]) -> None:
        """Publish released ballots now, back to back (one burst), if connected; else they go
        out on reconnect."""
        if self._connected.is_set():
            for item in items:
                self._publish_item(item)
        self.publish_status()

    def publish_status(self, **changes: Any) -> None:
        self.status.update(changes)
        if not self._connected.is_set():
            return
        status = TerminalStatus(
            True,
            str(self.status["reader"]),
            bool(self.status["tamper"]),
            self.outbox.ballots_cast(),
            self.outbox.depth(),
        )
        self._client.publish(self.topics.terminal_status(self.terminal_id), status.encode(), 1, True)

    def request_checkin(self, payload: bytes, timeout: float) -> bytes:
        """Send a check-in request to the roll and wait for its reply's bytes (HubUnreachable if
        none); the caller decodes it (``protocol.messages.decode_checkin_reply``)."""
        if not self._connected.is_set():
            raise HubUnreachable("not connected to the station hub")
        correlation = uuid.uuid4().bytes
        event, answers = threading.Event(), []
        with self._lock:
            self._replies[correlation] = (event, answers)
        try:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = self.topics.checkin_reply(self.terminal_id)
            properties.CorrelationData = correlation
            info = self._client.publish(self.topics.checkin(self.terminal_id), payload, 1, properties=properties)
            if info.rc != mqtt.MQTT_ERR_SUCCESS or not event.wait(timeout):
                raise HubUnreachable(f"the roll did not answer within {timeout} s")
        finally:
            with self._lock:
                self._replies.pop(correlation, None)
        return answers[0]
