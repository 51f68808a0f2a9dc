"""The roll service: check-in requests in (MQTT v5 request/response), blind signatures out.

Each request is handled to the end in the network thread: decide, mark durably, reply to the
response topic with the request's correlation data, then release the broker's PUBACK. A
crash before the mark loses nothing (the terminal retries and the voter is not marked); a
crash after it is healed by the identical retry, which gets the identical answer.

Audit log (docs/audit-log.md, "The roll's audit log"): ``roll/audit/roll.log``, signed with
``roll/audit/audit.key``. No check-in is logged on its own: an entry per check-in, ordered and
timed, could be set beside the ledger's ballot entries. Only totals are logged
(``check_ins_counted``), when the polls change and when the service stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from audit.service import ServiceAudit
from election.errors import FormatError
from infra.mqtt import connect, make_client, publish_last_words, set_will
from infra.officials import OfficialsRefused, OfficialsVerifier
from infra.rollcore import JpkiDirectory
from infra.service import BrokerWatch, Vitals
from protocol.errors import CheckinReason, Refusal
from protocol.messages import (
    CheckinChallengeRequest,
    CheckinRefused,
    CheckinReply,
    PollsCommand,
    RollReport,
    RollStatus,
    decode_checkin_message,
    offline_status,
)
from station_hub.roll import RollCore, RollStore
from station_hub.station import DeviceDirectory, Station

log = logging.getLogger("station_hub.roll")
COUNTED_REASONS = tuple(CheckinReason)
"""Refusals the audit log counts (``check_ins_counted``): every reason on its own, so a card or
challenge the roll does not accept, a stale CRL, a revoked or non-terminal sender and an
internal error each show as what they are (never folded into ``malformed``)."""


def roll_audit_paths(station: Station) -> tuple[Path, Path]:
    """(log, signing key) of the roll's audit log, inside the roll's own directory."""
    directory = station.roll_db.parent / "audit"
    return directory / "roll.log", directory / "audit.key"


def roll_log_id(station: Station) -> str:
    return f"{station.station_id}.roll"


class PollsGate:
    """The officials' check of a polls command on a station's roll side (the station roll, or
    the relay of an early/common place): the command, if the station manager's and a witness's
    cards signed it (infra/officials.py). The roll side cannot see the ledger's challenge; it
    checks the officials, the station, the election and the challenge's age, and its state
    machine makes a replay a no-op."""

    def __init__(self, station: Station) -> None:
        self._station = station
        self._verifier: OfficialsVerifier | None = None

    def authorized(self, payload: bytes) -> str | None:
        command = PollsCommand.decode(payload)
        if self._verifier is None:
            self._verifier = OfficialsVerifier(self._station.directory, self._station.station_id,
                                               self._station.election().manifest.base_hash)  # fmt: skip
        try:
            self._verifier.check(command, dt.datetime.now(dt.UTC))
        except OfficialsRefused as refused:
            log.warning("refused the polls command %s: %s (%s)", command.command, refused.reason.value, refused.detail)
            return None
        return command.command


class RollService:
    def __init__(self, station: Station, *, passphrase: bytes | None = None) -> None:
        self.station = station
        self.topics = station.topics
        self.core = RollCore(
            station.token_private_key(passphrase),
            station_id=station.station_id,
            roll_salt=station.roll_salt(),
            verifier=JpkiDirectory(station.jpki_dir),
        )
        self.devices = DeviceDirectory(station)
        self.store = RollStore(station.roll_db, self.core.modulus_length)
        self._stop = threading.Event()
        self.refusals = dict.fromkeys((reason.value for reason in COUNTED_REASONS), 0)
        """Check-ins refused since the service started, by reason (totals only: see the module doc)."""
        self.audit: ServiceAudit | None = None
        self._officials = PollsGate(station)
        self.client = make_client(station, "roll", clean_start=False)
        set_will(self.client, self.topics.roll_status, offline_status("roll_status"))
        self.vitals = Vitals()
        self.broker_watch = BrokerWatch(log, "roll", "the station broker")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.broker_watch.refused(reason)
            return
        self.broker_watch.up(f"polls {self.store.polls()}, {self.store.eligible()} voters on the roll")
        client.subscribe([(self.topics.checkin("+"), 1), (self.topics.polls_control, 1)])
        self._publish_status()
        self.vitals.mark_ready()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.broker_watch.down(reason, stopping=self._stop.is_set())

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == self.topics.polls_control:
                self._polls(self._authorized(bytes(message.payload)))
            else:
                terminal = self.topics.terminal_id_of(message.topic, "checkin")
                if terminal is not None:
                    self._checkin(terminal, message)
        except FormatError as error:
            log.warning("ignored a bad message on %s: %s", message.topic, error)
        except Exception:  # one message never stops the roll (and is never redelivered forever)
            log.exception("internal error handling a message on %s; ignored it", message.topic)
        client.ack(message.mid, message.qos)

    def _decide(self, terminal: str, payload: bytes) -> CheckinReply:
        device = self.devices.lookup(terminal)
        if isinstance(device, str):
            if device.startswith("revoked"):
                return CheckinRefused(CheckinReason.REVOKED, f"the certificate of terminal {terminal} is revoked")
            return CheckinRefused(CheckinReason.NOT_A_TERMINAL, f"{terminal} holds no valid terminal certificate")
        try:
            request = decode_checkin_message(payload, self.core.modulus_length)
        except Refusal as error:
            return CheckinRefused(CheckinReason.MALFORMED, str(error))
        if isinstance(request, CheckinChallengeRequest):
            return self.core.challenge(terminal)
        try:
            decision = self.core.decide(terminal, request, self.store.polls(), self.store.lookup)
            if decision.mark:
                assert decision.voter_key is not None
                self.store.mark(decision.voter_key, request.blinded)
        except Exception:  # see _on_message; the voter is not marked unless mark() returned
            log.exception("internal error judging a check-in; refused it")
            return CheckinRefused(CheckinReason.INTERNAL_ERROR, "the roll could not judge this check-in")
        return decision.reply

    def _checkin(self, terminal: str, message: mqtt.MQTTMessage) -> None:
        reply = self._decide(terminal, bytes(message.payload))
        if isinstance(reply, CheckinRefused):
            # The reason only: never the card's certificate, signature or voter key.
            log.info("check-in refused at %s: %s", terminal, reply.reason.value)
            self.refusals[reply.reason.value] += 1
        properties = Properties(PacketTypes.PUBLISH)
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation:
            properties.CorrelationData = correlation
        # Only the terminal's own reply topic: a forged response topic cannot redirect it.
        self.client.publish(self.topics.checkin_reply(terminal), reply.encode(), qos=1, properties=properties)

    def _authorized(self, payload: bytes) -> str | None:
        return self._officials.authorized(payload)

    def _polls(self, command: str | None) -> None:
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
        assert self.audit is not None, "the audit log is opened when the service runs"
        self.audit.record(kind, **data)

    def _record_counts(self) -> None:
        self._record("check_ins_counted", checked_in=self.store.checked_in(), **self.refusals)

    def _publish_status(self) -> None:
        polls = self.store.polls()
        status = RollStatus(True, polls, self.store.eligible())  # type: ignore[arg-type]
        self.client.publish(self.topics.roll_status, status.encode(), qos=1, retain=True)
        if polls == "closed":
            report = RollReport(self.store.eligible(), self.store.checked_in())
            self.client.publish(self.topics.roll_report, report.encode(), 1, retain=True)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log_path, key_path = roll_audit_paths(self.station)
        self.audit = ServiceAudit.start(log_path, key_path, roll_log_id(self.station), "roll")
        try:
            connect(self.client, self.station, session_expiry=3600)
        except BaseException:
            self.audit.stop()
            raise
        store = self.store
        log.info("roll of station %s starting: %d voters on the roll, %d checked in, polls %s",
                 self.station.station_id, store.eligible(), store.checked_in(), store.polls())  # fmt: skip
        try:
            while not self._stop.wait(1.0):
                self.vitals.beat()  # the watchdog pings only while this loop turns
        finally:
            publish_last_words(self.client, self.topics.roll_status, "roll_status")
            self.client.disconnect()
            self.client.loop_stop()
            self._record_counts()
            self.store.close()
            self.audit.stop()
