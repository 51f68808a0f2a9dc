"""The roll service of an early-voting or common polling place: a relay to the municipal roll.

Such a station keeps no roll of its own (issue 17): its terminals blind with the
municipality's token key (installed as the station's ``public/token.pem``, so the ledger
verifies tokens with it too), and this service, under the station roll's identity ``roll`` on
the station broker, takes each check-in message (either round) from a terminal, checks the
sender as the station roll does (a valid, unrevoked terminal certificate of this station) and
that the message is a well-formed check-in, and forwards the terminal's exact bytes to the
municipal roll over the central broker (protocol/municipal.py) under the station roll's own
central identity ``<station>.roll``. The municipal roll's answer (challenge, grant or refusal)
is checked strictly and relayed to the terminal's reply topic with the terminal's correlation.

Nothing silently falls back: when the central broker cannot be reached, or the municipal roll
does not answer within ``timeout`` seconds, the terminal gets ``roll_unreachable`` and nobody
is checked in here. A check-in whose grant was lost on the way is healed by the booth's retry
with the same blinded token (the municipal roll gives the identical answer, marks nothing).

The station's own polls: the relay takes the officials' open/close commands as a station roll
does (two officials' cards, checked against the station CA), refuses check-ins
(``polls_not_open``) unless its station's polls are open, and when they close publishes the
roll report with the number of voters checked in **here** — the closing report then carries
it, and the centre reconciles it with the ballots and the municipal register. To count a retry
once, it keeps the SHA-256 of each granted blinded token (never a voter key, never a time, in
a ``WITHOUT ROWID`` table keyed by the digest, so nothing records their order). Its audit log
holds totals only, as a station roll's does.

Files: ``STATION_DIR/municipal/`` — ``link.json`` (station, municipality, kind, central broker),
``ca.pem`` (the central CA), ``roll.key`` (made here, never leaves the station), ``roll.pem``,
``token.pem`` (the municipality's token key as granted, so that ``station-hub self-test`` can
tell that ``public/token.pem`` is still it), ``relay.db`` (polls, granted digests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from audit.service import ServiceAudit
from election.errors import FormatError
from infra.certdir import read_json
from infra.errors import SiteError
from infra.files import private_pem, write_private
from infra.link import BrokerLink, CentralLink
from infra.mqtt import connect, make_client, publish_last_words, set_will
from infra.service import Vitals
from infra.store import open_store
from protocol.errors import CheckinReason, Refusal
from protocol.messages import (
    CheckinChallengeRequest,
    CheckinGranted,
    CheckinRefused,
    CheckinReply,
    CheckinRequest,
    RollReport,
    RollStatus,
    decode_checkin_message,
    decode_checkin_reply,
    offline_status,
)
from protocol.municipal import MunicipalGrant, checkin_topic, relay_identity, reply_topic
from station_hub.roll_service import PollsGate, roll_audit_paths, roll_log_id
from station_hub.station import DeviceDirectory, Station

log = logging.getLogger("station_hub.municipal_relay")
LINK_DIR = "municipal"
LINK_VERSION = 1
RELAY_TIMEOUT = 5.0
"""Seconds the relay waits for the municipal roll before telling the terminal it is unreachable."""
PROBE_INTERVAL = 5.0
"""Seconds between the relay's probes of the municipal roll (a challenge request as terminal
``PROBE_TERMINAL``: it crosses the central broker and the roll's PostgreSQL, as a check-in
does), so the monitor shows a cut link before a voter meets the retry screen."""
PROBE_TERMINAL = "roll-probe"
"""The terminal the probe names (no device has it: the challenge issued to it is never used
and expires)."""


@dataclass(frozen=True)
class MunicipalLink(BrokerLink):
    """The station roll's credentials for the central broker (identity ``<station>.roll``)."""

    LINK_DIR: ClassVar[str] = LINK_DIR
    FILE_STEM: ClassVar[str] = "roll"

    municipality: str = ""
    kind: str = "early"

    @classmethod
    def open(cls, station_dir: Path) -> MunicipalLink:
        directory = cls.directory_of(station_dir)
        data = read_json(directory / "link.json", "municipal link")
        fields = {"version", "station_id", "municipality", "kind", "host", "port"}
        if not isinstance(data, dict) or set(data) != fields or data["version"] != LINK_VERSION:
            raise SiteError(f"{directory}/link.json: expected version 1 with {sorted(fields)}")
        if data["kind"] not in ("early", "common"):
            raise SiteError(f"{directory}/link.json: kind must be early or common")
        return cls(directory, data["station_id"], data["host"], data["port"], data["municipality"], data["kind"])

    @property
    def token_key_file(self) -> Path:
        """The municipality's token key as the grant carried it (``public/token.pem`` must be it)."""
        return self.directory / "token.pem"

    @property
    def relay_db(self) -> Path:
        return self.directory / "relay.db"


def relay_request(station: Station) -> bytes:
    """Make the station roll's central key (kept here) and a signing request for ``<station>.roll``."""
    directory = MunicipalLink.directory_of(station.directory)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private(directory / "roll.key", private_pem(key))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, relay_identity(station.station_id))])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, None)
    return request.public_bytes(serialization.Encoding.PEM)


def install_municipal_link(
    station: Station,
    *,
    municipality: str,
    kind: str,
    host: str,
    port: int,
    ca_pem: bytes,
    certificate_pem: bytes,
    token_public_pem: bytes,
) -> MunicipalLink:
    """Make this station an early/common polling place of ``municipality`` (before registration
    with the centre: the registration then carries the municipality's token key)."""
    directory = MunicipalLink.directory_of(station.directory)
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key = serialization.load_pem_private_key((directory / "roll.key").read_bytes(), None)
    if certificate.public_key().public_bytes_raw() != key.public_key().public_bytes_raw():  # type: ignore[union-attr]
        raise SiteError("the municipal roll link certificate is not for this station roll's key")
    (directory / "ca.pem").write_bytes(ca_pem)
    (directory / "roll.pem").write_bytes(certificate_pem)
    (directory / "token.pem").write_bytes(token_public_pem)
    station.token_public_file.write_bytes(token_public_pem)
    config = {"version": LINK_VERSION, "station_id": station.station_id, "municipality": municipality,
              "kind": kind, "host": host, "port": port}  # fmt: skip
    (directory / "link.json").write_text(json.dumps(config, indent=1) + "\n")
    return MunicipalLink.open(station.directory)


def request_municipal_link(station: Station) -> bytes:
    """``station-hub municipal-request``: the station roll's key (made here) and its certificate
    request, for ``gateway municipal-roll add-station``. Refused once the station is registered
    at the centre (its registration carried its own token key; it must join the municipal roll
    first) or already linked to the municipal roll (a new key would cut the working link)."""
    if MunicipalLink.exists(station.directory):
        raise SiteError(f"station {station.station_id} is already linked to the municipal roll "
                        f"({MunicipalLink.directory_of(station.directory)}/link.json)")  # fmt: skip
    if CentralLink.exists(station.directory):
        raise SiteError(f"station {station.station_id} is already registered at the central office with its own "
                        "token key: a station joins the municipal roll before `station-hub registration`")  # fmt: skip
    return relay_request(station)


def install_municipal_grant(station: Station, payload: bytes) -> MunicipalLink:
    """``station-hub municipal-link``: check the centre's grant (strict decoder, this station,
    this station roll's key) and install it; the station is then an early/common polling place.
    After registration only a grant carrying the same token key is accepted (a renewal)."""
    try:
        grant = MunicipalGrant.decode(payload)
    except Refusal as refusal:
        raise SiteError(f"municipal link grant refused: {refusal}") from refusal
    if grant.station_id != station.station_id:
        raise SiteError(f"the municipal link grant is for station {grant.station_id}, not {station.station_id}")
    if not (MunicipalLink.directory_of(station.directory) / "roll.key").exists():
        raise SiteError("no station roll key here: run `station-hub municipal-request` first")
    if CentralLink.exists(station.directory) and station.token_public_file.read_bytes() != grant.token_key_pem:
        raise SiteError(
            "the station is registered at the central office with another token key: the grant "
            "would make the centre refuse its tokens (join the municipal roll, then register)"
        )
    try:
        return install_municipal_link(station, municipality=grant.municipality, kind=grant.kind, host=grant.host,
                                      port=grant.port, ca_pem=grant.ca_pem, certificate_pem=grant.certificate_pem,
                                      token_public_pem=grant.token_key_pem)  # fmt: skip
    except ValueError as error:
        raise SiteError(f"municipal link grant refused: {error}") from error


RELAY_SCHEMA_VERSION = 1
RELAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS granted (digest BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class RelayStore:
    """The relay's polls and the digests of the blinded tokens granted here (one per voter
    checked in at this station; see the module doc). Thread-safe: one lock, one connection."""

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, RELAY_SCHEMA, RELAY_SCHEMA_VERSION, journal="delete", secure_delete=True)
        self._lock = threading.Lock()

    def polls(self) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'polls'").fetchone()
        return row[0] if row else "pending"

    def set_polls(self, state: str) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('polls', ?)", (state,))

    def granted(self, blinded: bytes) -> None:
        """A voter was checked in here with ``blinded`` (a retry with the same value counts once)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO granted VALUES (?)", (hashlib.sha256(blinded).digest(),))

    def checked_in(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM granted").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RelayService:
    """The station roll of an early/common station (see the module doc)."""

    def __init__(self, station: Station, *, timeout: float = RELAY_TIMEOUT, workers: int = 4) -> None:
        self.station = station
        self.topics = station.topics
        self.link = MunicipalLink.open(station.directory)
        self.timeout = timeout
        key = station.token_public_key()
        self.modulus_length = (key.key_size + 7) // 8
        self.devices = DeviceDirectory(station)
        self._devices_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roll-relay")
        self._waiters: dict[bytes, queue.Queue[bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.central_ready = threading.Event()
        self.refusals = dict.fromkeys((reason.value for reason in CheckinReason), 0)
        self.store = RelayStore(MunicipalLink.directory_of(station.directory) / "relay.db")
        self.audit: ServiceAudit | None = None
        self.vitals = Vitals()
        self._officials = PollsGate(station)
        self.reachable = False
        """Whether the municipal roll answered the latest request or probe (published in the
        roll status; false until the first answer, so nothing claims a link not yet proven)."""
        self._probing = threading.Lock()
        self.probe_interval = PROBE_INTERVAL
        self.client = make_client(station, "roll", clean_start=False)
        set_will(self.client, self.topics.roll_status, offline_status("roll_status"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.central = make_client(self.link, relay_identity(station.station_id))  # type: ignore[arg-type]
        self.central.on_connect = self._on_central_connect
        self.central.on_disconnect = self._on_central_disconnect
        self.central.on_subscribe = self._on_central_subscribe
        self.central.on_message = self._on_central_message

    # --- station side ----------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the roll relay: %s", reason)
            return
        client.subscribe([(self.topics.checkin("+"), 1), (self.topics.polls_control, 1)])
        self._publish_status()
        self.vitals.mark_ready()

    def _publish_status(self) -> None:
        """The station's polls (the municipality's own may still refuse: ``polls_not_open``).
        ``eligible`` is 0: the register is the municipal roll's, not this station's."""
        polls = self.store.polls()
        municipal = "reachable" if self.reachable else "unreachable"
        self.client.publish(self.topics.roll_status, RollStatus(True, polls, 0, municipal).encode(),  # type: ignore[arg-type]
                            qos=1, retain=True)  # fmt: skip
        if polls == "closed":
            report = RollReport(0, self.store.checked_in())
            self.client.publish(self.topics.roll_report, report.encode(), 1, retain=True)

    def _polls(self, payload: bytes) -> None:
        """An officials' open/close command (checked as a station roll checks it: the ledger,
        which holds the challenge, answers the operator; a replay is a no-op of the state machine)."""
        command = self._officials.authorized(payload)
        if command is None:
            return
        polls = self.store.polls()
        if command == "open" and polls == "pending":
            self.store.set_polls("open")
            self._record_counts()
            self._record("polls_opened", station=self.station.station_id)
        elif command == "close" and polls == "open":
            self.store.set_polls("closed")
            self._record_counts()
            self._record("polls_closed", station=self.station.station_id)
        self._publish_status()

    def _record(self, kind: str, **data: Any) -> None:
        if self.audit is not None:
            self.audit.record(kind, **data)

    def _record_counts(self) -> None:
        self._record("check_ins_counted", checked_in=self.store.checked_in(), **self.refusals)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.polls_control:
            try:
                self._polls(bytes(message.payload))
            except FormatError as error:
                log.warning("ignored a bad polls command: %s", error)
            except Exception:  # one message never stops the relay
                log.exception("internal error handling a polls command; ignored it")
            client.ack(message.mid, message.qos)
            return
        terminal = self.topics.terminal_id_of(message.topic, "checkin")
        if terminal is None:
            client.ack(message.mid, message.qos)
            return
        self._pool.submit(self._relay_and_ack, terminal, message)

    def _relay_and_ack(self, terminal: str, message: mqtt.MQTTMessage) -> None:
        try:
            reply = self.relay(terminal, bytes(message.payload))
        except Exception:
            log.exception("internal error relaying a check-in; refused it")
            reply = CheckinRefused(CheckinReason.INTERNAL_ERROR, "the station roll could not relay this check-in")
        try:
            if isinstance(reply, CheckinRefused):
                log.info("check-in refused at %s: %s", terminal, reply.reason.value)
                self.refusals[reply.reason.value] += 1
            properties = Properties(PacketTypes.PUBLISH)
            correlation = getattr(message.properties, "CorrelationData", None)
            if correlation:
                properties.CorrelationData = correlation
            self.client.publish(self.topics.checkin_reply(terminal), reply.encode(), qos=1, properties=properties)
        finally:
            self.client.ack(message.mid, message.qos)

    def relay(self, terminal: str, payload: bytes) -> CheckinReply:
        """The answer for one check-in message of ``terminal`` (blocks up to ``timeout``)."""
        with self._devices_lock:
            device = self.devices.lookup(terminal)
        if isinstance(device, str):
            if device.startswith("revoked"):
                return CheckinRefused(CheckinReason.REVOKED, f"the certificate of terminal {terminal} is revoked")
            return CheckinRefused(CheckinReason.NOT_A_TERMINAL, f"{terminal} holds no valid terminal certificate")
        try:
            message = decode_checkin_message(payload, self.modulus_length)
        except Refusal as error:
            return CheckinRefused(CheckinReason.MALFORMED, str(error))
        polls = self.store.polls()
        if polls != "open":
            return CheckinRefused(CheckinReason.POLLS_NOT_OPEN, f"the polls of station {self.station.station_id} "
                                  f"are {polls}")  # fmt: skip
        answer = self._ask(terminal, payload)
        self._set_reachable(answer is not None)
        if answer is None:
            return CheckinRefused(
                CheckinReason.ROLL_UNREACHABLE,
                f"the municipal roll of {self.link.municipality} cannot be reached: no check-in here until it can",
            )
        try:
            reply = decode_checkin_reply(answer, self.modulus_length)
        except Refusal as error:
            log.error("the municipal roll sent an answer that is not a check-in reply: %s", error)
            return CheckinRefused(CheckinReason.ROLL_UNREACHABLE, "the municipal roll's answer was not understood")
        if isinstance(reply, CheckinGranted) and isinstance(message, CheckinRequest):
            self.store.granted(message.blinded)  # before the terminal hears of it: counted if it casts
        return reply

    # --- central side ----------------------------------------------------------------------

    def _on_central_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("the central broker refused the station roll: %s", reason)
            return
        client.subscribe(reply_topic(self.station.station_id), qos=1)

    def _on_central_subscribe(self, *args: Any) -> None:
        self.central_ready.set()
        self._pool.submit(self.probe)  # say "reachable" as soon as the roll answers, not a probe later

    def _on_central_disconnect(self, *args: Any) -> None:
        self.central_ready.clear()
        self._set_reachable(False)  # the link is cut: say so now, not at the next probe

    def _set_reachable(self, reachable: bool) -> None:
        """Publish the roll status again when the municipal roll's reachability changed."""
        if reachable != self.reachable:
            self.reachable = reachable
            state = "reachable again" if reachable else "UNREACHABLE: no check-in here until it is back"
            log.warning("the municipal roll of %s is %s", self.link.municipality, state)
            if self.client.is_connected():
                self._publish_status()

    def probe(self) -> bool:
        """Ask the municipal roll for a challenge (as terminal ``PROBE_TERMINAL``); true if it
        answered with a well-formed check-in reply. One probe at a time."""
        if not self._probing.acquire(blocking=False):
            return self.reachable
        try:
            answer = self._ask(PROBE_TERMINAL, CheckinChallengeRequest().encode())
            try:
                answered = answer is not None and decode_checkin_reply(answer, self.modulus_length) is not None
            except Refusal:
                answered = False
            self._set_reachable(answered)
            return answered
        except Exception:  # a probe never stops the relay
            log.exception("internal error probing the municipal roll")
            return self.reachable
        finally:
            self._probing.release()

    def _on_central_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            waiter = self._waiters.get(bytes(correlation)) if correlation else None
        if waiter is not None:
            waiter.put(bytes(message.payload))
        client.ack(message.mid, message.qos)

    def _ask(self, terminal: str, payload: bytes) -> bytes | None:
        if not self.central_ready.is_set():
            return None
        correlation = uuid.uuid4().bytes
        answers: queue.Queue[bytes] = queue.Queue()
        with self._lock:
            self._waiters[correlation] = answers
        try:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = reply_topic(self.station.station_id)
            properties.CorrelationData = correlation
            info = self.central.publish(
                checkin_topic(self.station.station_id, terminal), payload, qos=1, properties=properties
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return None
            try:
                return answers.get(timeout=self.timeout)
            except queue.Empty:
                return None
        finally:
            with self._lock:
                self._waiters.pop(correlation, None)

    # --- running ---------------------------------------------------------------------------

    def start(self) -> RelayService:
        connect(self.central, self.link)  # type: ignore[arg-type]
        connect(self.client, self.station, session_expiry=3600)
        return self

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        publish_last_words(self.client, self.topics.roll_status, "roll_status")
        self.client.disconnect()
        self.client.loop_stop()
        self.central.disconnect()
        self.central.loop_stop()
        self._pool.shutdown(wait=True)
        if self.audit is not None:
            self._record_counts()
            self.audit.stop()
            self.audit = None
        self.store.close()

    def run(self) -> None:
        log_path, key_path = roll_audit_paths(self.station)
        self.audit = ServiceAudit.start(log_path, key_path, roll_log_id(self.station), "roll")
        try:
            self.start()
        except BaseException:
            self.audit.stop()
            self.store.close()
            raise
        log.info("roll relay of station %s to the municipal roll of %s (%s), polls %s",
                 self.station.station_id, self.link.municipality, self.link.kind, self.store.polls())  # fmt: skip
        try:
            next_probe = 0.0
            while not self._stop.wait(1.0):
                self.vitals.beat()  # the watchdog pings only while this loop turns
                now = time.monotonic()
                if now >= next_probe:
                    next_probe = now + self.probe_interval
                    self._pool.submit(self.probe)
        finally:
            self.close()


def serve(station: Station) -> None:
    service = RelayService(station)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop())
    service.run()
