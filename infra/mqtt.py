"""MQTT v5 over mutual TLS for every site identity, and a small synchronous client.

:class:`HubClient` is what a terminal, an operator console, the tests and the benchmark use
to talk to the hub: connect with a certificate, wait for the connection, publish and wait for
the broker's verdict (PUBACK reason), ask the roll with request/response, wait for messages.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from infra.errors import SiteError
from protocol.messages import offline_status
from protocol.topics import Topics

CONNECT_TIMEOUT = 10.0


class BrokerSite(Protocol):
    """What a client needs of a site to reach its broker: address, CA, certificates and keys."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ca_file(self) -> Path: ...
    def cert_file(self, name: str) -> Path: ...
    def key_file(self, name: str) -> Path: ...


def make_client(
    station: BrokerSite,
    name: str,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    ca_file: Path | None = None,
    clean_start: bool = True,
) -> mqtt.Client:
    """A paho client for identity ``name`` (CN = user name = client id at the broker)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5, manual_ack=True)
    client.tls_set(
        ca_certs=str(ca_file or station.ca_file),
        certfile=str(cert_file or station.cert_file(name)),
        keyfile=str(key_file or station.key_file(name)),
    )
    client.reconnect_delay_set(0.2, 2)
    client._hub_clean_start = clean_start  # type: ignore[attr-defined]
    return client


def connect(client: mqtt.Client, station: BrokerSite, *, session_expiry: int = 0) -> None:
    """Connect and start the network loop (reconnects on its own afterwards)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry
    client.connect_async(
        station.host,
        station.port,
        keepalive=15,
        clean_start=client._hub_clean_start,  # type: ignore[attr-defined]
        properties=properties,
    )
    client.loop_start()


def set_will(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.will_set(topic, payload, qos=1, retain=True)


def publish_last_words(client: mqtt.Client, topic: str, kind: str, timeout: float = 2.0) -> None:
    """On a clean stop, say "offline" ourselves (the broker sends the will only on a crash)."""
    info = client.publish(topic, offline_status(kind), qos=1, retain=True)
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    correlation: bytes | None
    retain: bool


class HubClient:
    """A blocking client: every wait has a timeout and raises SiteError when it runs out."""

    def __init__(
        self,
        station: BrokerSite,
        name: str,
        *,
        will: tuple[str, bytes] | None = None,
        **files: Any,
    ) -> None:
        self.station = station
        self.name = name
        self.topics = Topics(getattr(station, "station_id", ""))
        self._client = make_client(station, name, **files)
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._lock = threading.Lock()
        self._pubacks: dict[int, tuple[threading.Event, list[int]]] = {}
        self._subacks: dict[int, tuple[threading.Event, list[int]]] = {}
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._waiters: dict[bytes, queue.Queue[Message]] = {}
        self.connect_failure: str | None = None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        if will:
            set_will(self._client, *will)

    # --- callbacks (network thread) -------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.connect_failure = str(reason)
            self._disconnected.set()
        else:
            self._disconnected.clear()
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        self.connect_failure = self.connect_failure or str(reason)
        self._disconnected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            event, codes = self._pubacks.setdefault(mid, (threading.Event(), []))
        codes.append(reason.value)
        event.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            event, codes = self._subacks.setdefault(mid, (threading.Event(), []))
        codes.extend(r.value for r in reasons)
        event.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        correlation = getattr(props, "CorrelationData", None)
        item = Message(message.topic, bytes(message.payload), correlation, bool(message.retain))
        with self._lock:
            waiter = self._waiters.get(correlation) if correlation else None
        (waiter or self._inbox).put(item)
        client.ack(message.mid, message.qos)

    # --- blocking API ---------------------------------------------------------------------

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> HubClient:
        connect(self._client, self.station)
        if not self._connected.wait(timeout):
            self.close()
            raise SiteError(f"{self.name}: not connected within {timeout} s ({self.connect_failure})")
        return self

    def wait_refused(self, timeout: float = CONNECT_TIMEOUT) -> str:
        """Start connecting and wait until the broker refuses us; returns the reason."""
        connect(self._client, self.station)
        refused = self._disconnected.wait(timeout) and not self._connected.is_set()
        self.close()
        if not refused:
            raise SiteError(f"{self.name}: the broker accepted the connection")
        return self.connect_failure or "refused"

    def _wait_ack(self, table: dict, mid: int, timeout: float, what: str) -> list[int]:
        with self._lock:
            event, codes = table.setdefault(mid, (threading.Event(), []))
        if not event.wait(timeout):
            raise SiteError(f"{self.name}: no {what} within {timeout} s")
        with self._lock:
            table.pop(mid, None)
        return codes

    def subscribe(self, topic: str, timeout: float = 5.0) -> int:
        """Subscribe at QoS 1; returns the granted reason code."""
        result, mid = self._client.subscribe(topic, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise SiteError(f"{self.name}: subscribe failed with rc {result}")
        return self._wait_ack(self._subacks, mid, timeout, "SUBACK")[0]

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 or 16 = delivered)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SiteError(f"{self.name}: publish failed with rc {info.rc}")
        return self._wait_ack(self._pubacks, info.mid, timeout, "PUBACK")[0]

    def request(self, topic: str, response_topic: str, payload: bytes, timeout: float = 10.0) -> Message:
        """MQTT v5 request/response: send with a fresh correlation id, wait for its answer."""
        correlation = uuid.uuid4().bytes
        answers: queue.Queue[Message] = queue.Queue()
        with self._lock:
            self._waiters[correlation] = answers
        try:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = response_topic
            properties.CorrelationData = correlation
            code = self.publish(topic, payload, properties=properties)
            if code not in (0, 16):
                raise SiteError(f"{self.name}: the broker refused the request (reason {code})")
            try:
                return answers.get(timeout=timeout)
            except queue.Empty:
                raise SiteError(f"{self.name}: no answer on {response_topic} in {timeout} s") from None
        finally:
            with self._lock:
                self._waiters.pop(correlation, None)

    def next_message(self, timeout: float = 10.0, accept: Callable[[Message], bool] = lambda m: True) -> Message:
        """The next received message that ``accept`` likes (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self._inbox.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise SiteError(f"{self.name}: no expected message within {timeout} s") from None
            if accept(message):
                return message

    def pending(self) -> list[Message]:
        """Every message received and not yet taken (does not wait)."""
        items = []
        while not self._inbox.empty():
            items.append(self._inbox.get_nowait())
        return items

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
