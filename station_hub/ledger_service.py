"""The ledger service: MQTT in, a durable pool and chain of sorted batches, acknowledgements and
signed statements out.

The network thread only queues messages (manual acknowledgement, so the broker's PUBACK is
withheld too). One thread takes the waiting messages as a round: their stateless checks (parse,
device and statement signatures, token, proofs: :class:`station_hub.ledger.Examiner`) run on the
check worker processes, then :class:`LedgerCore` decides each in order, alone, and the round is
committed in ONE durable transaction (group commit): every accepted ballot and, when they make
the pool reach ``batch_min``, the whole pool as the next batch (a ballot that completes a batch
goes straight into the chain). Only then are the acknowledgements published and the PUBACKs
released. A crash anywhere before that commit loses nothing the terminal was told; a crash after
it makes the resend a duplicate, which gets the same acknowledgement. After the final close a
batch is also due when no ballot came for :data:`station_hub.ledger.LATE_QUIET` seconds (the
timer lives here, the rule in the core): the pool then moves into the chain on its own.

``POLLING_STATION_FAILPOINT=ledger-before-commit|ledger-after-commit`` (around a round's
commit) or ``ledger-before-batch|ledger-after-batch`` (around a commit that makes a batch; a
round's does both) stops the process there (infra/failpoints.py), so fault tests can kill it at that point.

Audit log (docs/audit-log.md): ``ledger/audit/ledger.log``, signed with ``ledger/audit/audit.key``
— the ledger's own storage, never shared with the roll. It records polls changes with the
signed report's chain head, each batch committed (its last position and size: nothing finer
than a batch, so no entry dates a ballot), refusals as counts per terminal and reason per
checkpoint interval (never one entry per refused message: a terminal could otherwise grow the
log without bound), and the CRL in force (at start and whenever a revocation changes it). No
service log line names a ballot either.

No message can stop the service: a decoder refuses with a reason, and an unexpected exception
in a handler is logged once, answered ``internal_error`` and acknowledged, so the broker never
redelivers it in a crash loop.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from audit.service import ServiceAudit
from election.chain import CHAIN_VERSION, ChainHead, Checkpoint, sign_document
from election.encoding import canonical_bytes, sha256
from election.errors import FormatError
from election.pool import process_pool
from infra.failpoints import failpoint
from infra.files import write_atomically
from infra.mqtt import connect, make_client, publish_last_words, set_will
from infra.officials import CHALLENGE_LIFETIME, OfficialsRefused, OfficialsVerifier, VerifiedOfficial
from infra.service import BrokerWatch, Vitals, run_service
from protocol.errors import PollsReason, Reason
from protocol.messages import (
    NONCE_BYTES,
    LedgerStatus,
    PollsChallenge,
    PollsCommand,
    PollsResult,
    RollReport,
    offline_status,
    polls_challenge_topic,
    polls_result_topic,
)
from station_hub.forward_progress import confirmed_position
from station_hub.ledger import BatchEntry, Decision, Examination, Examiner, Held, LedgerCore, Refused
from station_hub.ledger_store import LedgerStore
from station_hub.station import DeviceDirectory, Station

log = logging.getLogger("station_hub.ledger")
BATCH_LIMIT = 512
SESSION_EXPIRY = 24 * 3600


def ledger_audit_paths(station: Station) -> tuple[Path, Path]:
    """(log, signing key) of the ledger's audit log, inside the ledger's own directory."""
    directory = station.ledger_db.parent / "audit"
    return directory / "ledger.log", directory / "audit.key"


class LedgerService:
    def __init__(
        self,
        station: Station,
        *,
        check_proofs: bool = True,
        checkpoint_interval: float = 2.0,
        proof_workers: int = 1,
    ) -> None:
        self.station = station
        self.proof_workers = proof_workers
        """Processes for the stateless checks of the ballots (parse, signatures, token, proofs)."""
        self.topics = station.topics
        self.checkpoint_interval = checkpoint_interval
        election = station.election()
        self.base_hash = election.manifest.base_hash
        self.genesis = station.genesis
        self.store = LedgerStore(station.ledger_db)
        self.core = LedgerCore(
            election.manifest,
            election.context.joint_public_key,
            self.genesis,
            DeviceDirectory(station).lookup,
            station.token_public_key(),
            self.store.load(self.genesis, self.base_hash),
            check_proofs=check_proofs,
        )
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.key = station.signing_key("ledger")
        self.officials = OfficialsVerifier(station.directory, station.station_id, self.base_hash)
        self._authorizations = self._load_authorizations()
        """command → the officials' authorization it was accepted with (for the signed reports)."""
        self._challenge = self._load_challenge()
        self.refused = 0
        self._refusal_counts: dict[tuple[str, str], int] = {}
        """(terminal, reason) → refusals since the last audit flush."""
        self._refusal_totals: dict[tuple[str, str], int] = {}
        """(terminal, reason) → refusals since the service started (in the status, for the monitor)."""
        self.check_ins: int | None = None
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self._checkpointed = -1
        self._crl_digest: str | None = None
        self.audit: ServiceAudit | None = None
        self.vitals = Vitals()
        self.broker_watch = BrokerWatch(log, "ledger", "the station broker")
        self.client = make_client(station, "ledger", clean_start=False)
        set_will(self.client, self.topics.ledger_status, offline_status("ledger_status"))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda client, userdata, message: self._inbox.put(message)

    # --- network thread -------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.broker_watch.refused(reason)
            return
        self.broker_watch.up(f"polls {self.core.state.polls}, chain position {self.core.state.head.position}")
        client.subscribe(
            [
                (self.topics.ballot("+"), 1),
                (self.topics.polls_control, 1),
                (self.topics.roll_report, 1),
            ]
        )
        self._publish_status()
        self._publish(polls_challenge_topic(self.topics), self._challenge.encode(), retain=True)
        self.vitals.mark_ready()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.broker_watch.down(reason, stopping=self._stop.is_set())

    # --- worker ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log_path, key_path = ledger_audit_paths(self.station)
        self.audit = ServiceAudit.start(log_path, key_path, f"{self.station.station_id}.ledger", "ledger")
        state = self.core.state
        declared = f", {len(state.unreachable)} terminal(s) declared unreachable" if state.unreachable else ""
        log.info("ledger of station %s starting: recovered chain position %d and %d ballot(s) in the pool, polls %s%s",
                 self.station.station_id, state.head.position, len(state.pool), state.polls, declared)  # fmt: skip
        self._audit_crl()
        try:
            # The check workers start before the ledger connects: it is ready (and its loop
            # watched) only once they run, which can take longer than a watchdog period.
            if self.proof_workers > 1:
                self._pool = proof_pool(self.proof_workers, self.core.examiner)
            connect(self.client, self.station, session_expiry=SESSION_EXPIRY)
        except BaseException:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            self.audit.stop()
            raise
        self._announce_polls()
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                self.vitals.beat()
                timeout = max(0.0, next_tick - time.monotonic())
                try:
                    batch = [self._inbox.get(timeout=min(timeout, 0.5))]
                except queue.Empty:
                    batch = []
                while batch and len(batch) < BATCH_LIMIT:
                    try:
                        batch.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                if batch:
                    self._handle(batch)
                self._commit_due_batches()
                if time.monotonic() >= next_tick:
                    self._flush_refusal_counts()
                    self._publish_checkpoint()
                    self._publish_status()
                    self._audit_crl()
                    if time.time() >= self._challenge.issued_at + self._challenge.expires_in - 60:
                        self._new_challenge()
                    next_tick = time.monotonic() + self.checkpoint_interval
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            self._flush_refusal_counts()
            publish_last_words(self.client, self.topics.ledger_status, "ledger_status")
            self.client.disconnect()
            self.client.loop_stop()
            self.store.close()
            self.audit.stop()  # type: ignore[union-attr]

    def _record(self, kind: str, **data: Any) -> None:
        assert self.audit is not None, "the audit log is opened when the service runs"
        self.audit.record(kind, **data)

    def _audit_crl(self) -> None:
        """Record the revocation list in force when it first is read and whenever it changes."""
        try:
            digest = sha256(self.station.crl_file.read_bytes()).hex()
        except OSError as error:
            log.error("cannot read the CRL %s: %s", self.station.crl_file, error.strerror)
            return
        if digest != self._crl_digest:
            self._crl_digest = digest
            self._record("configuration_changed", setting="station.crl", sha256=digest)

    def _handle(self, batch: list[mqtt.MQTTMessage]) -> None:
        pending: list[tuple[mqtt.MQTTMessage, str, Decision]] = []
        examined = self._examine(batch)
        for message in batch:
            sender = self.topics.terminal_id_of(message.topic, "ballot")
            if sender is not None:
                found, device = examined.get(message.mid, (None, None))
                pending.append((message, sender, self._decide(bytes(message.payload), sender, found, device)))
                continue
            self._flush(pending)
            pending = []
            self._handle_control(message)
            self.client.ack(message.mid, message.qos)
        self._flush(pending)

    def _examine(self, batch: list[mqtt.MQTTMessage]) -> dict[int, tuple[Examination, Ed25519PublicKey | str]]:
        """The stateless checks of every ballot of the batch (parse, signatures, token, proofs),
        on every core: message id → (what they found, the sender's key or why it has none).
        Without a pool, or for a single ballot, they run here; when the pool broke, the core
        checks each ballot itself and a new pool is made for the next batch. A terminal already
        answered ``rate_limited`` is left out: it costs no parsing. Each terminal's key is
        looked up once per batch (a revoked terminal is refused from the next batch on)."""
        now = time.monotonic()
        jobs: list[tuple[int, bytes, str]] = []
        for m in batch:
            sender = self.topics.terminal_id_of(m.topic, "ballot")
            if sender is not None and not self.core.rate_limited(sender, now):
                jobs.append((m.mid, bytes(m.payload), sender))
        try:
            devices = {sender: self.core.devices(sender) for sender in {sender for _, _, sender in jobs}}
        except Exception:  # an unreadable CRL, say: the core then refuses each ballot with a reason
            log.exception("cannot look up the terminals' keys; judging this batch ballot by ballot")
            return {}
        if self._pool is None or len(jobs) < 2:
            here: dict[int, tuple[Examination, Ed25519PublicKey | str]] = {}
            for mid, payload, sender in jobs:
                device = devices[sender]
                try:
                    key = None if isinstance(device, str) else device
                    here[mid] = (self.core.examiner.examine(payload, key), device)
                except Exception:  # left to the core, which answers internal_error (docstring above)
                    continue
            return here
        raw = {sender: None if isinstance(key, str) else key.public_bytes_raw() for sender, key in devices.items()}
        work = [(payload, raw[sender]) for _, payload, sender in jobs]
        chunk = max(1, -(-len(work) // (2 * self.proof_workers)))
        try:
            found = list(self._pool.map(examine_job, work, chunksize=chunk))
        except concurrent.futures.process.BrokenProcessPool:
            log.error("a check worker died; checking this batch here and starting new workers")
            self._pool.shutdown(cancel_futures=True)
            self._pool = proof_pool(self.proof_workers, self.core.examiner)
            return {}
        return {mid: (result, devices[sender]) for (mid, _, sender), result in zip(jobs, found, strict=True)}

    def _decide(
        self, payload: bytes, sender: str, examined: Examination | None, device: Ed25519PublicKey | str | None
    ) -> Decision:
        try:
            return self.core.decide(payload, sender, time.monotonic(), examined=examined, device=device)
        except Exception:  # a bug must cost one refusal, never the service (docstring above)
            log.exception("internal error judging a message from %s; refused it", sender)
            return Refused(Reason.INTERNAL_ERROR, "the ledger could not judge this message", sha256(payload))

    def _flush_refusal_counts(self) -> None:
        counts, self._refusal_counts = self._refusal_counts, {}
        for (terminal, reason), count in sorted(counts.items()):
            self._record("refusals_counted", terminal=terminal, reason=reason, count=count)

    def _flush(self, pending: list[tuple[mqtt.MQTTMessage, str, Decision]]) -> None:
        held = [d for _, _, d in pending if isinstance(d, Held)]
        if held:
            self._commit_round(held)
        for message, sender, decision in pending:
            if isinstance(decision, Refused):
                self.refused += 1
                key = (sender, decision.reason.value)
                if key not in self._refusal_counts:  # logged once per terminal, reason and interval
                    log.warning("refused a message from %s: %s (%s)", sender, decision.reason.value, decision.detail)
                self._refusal_counts[key] = self._refusal_counts.get(key, 0) + 1
                self._refusal_totals[key] = self._refusal_totals.get(key, 0) + 1
            props = getattr(message, "properties", None)
            correlation = getattr(props, "CorrelationData", None)
            properties = None
            if correlation:
                properties = Properties(PacketTypes.PUBLISH)
                properties.CorrelationData = correlation
            self._publish(self.topics.ack(sender), decision.encoded_ack(), properties=properties)
            self.client.ack(message.mid, message.qos)

    def _commit_round(self, held: list[Held]) -> None:
        """Group commit: the round's held ballots and, when they make the pool a batch, that
        batch, in ONE durable transaction (a ballot that completes a batch never goes through
        the pool's file)."""
        batch = self.core.take_batch() if self.core.batch_due(time.monotonic()) else []
        failpoint("ledger-before-commit")
        if batch:
            failpoint("ledger-before-batch")
        self.store.commit(held, batch)
        failpoint("ledger-after-commit")
        if batch:
            failpoint("ledger-after-batch")
            self._batch_committed(batch)
            if self.core.state.polls == "closed":
                self._announce_polls()  # the closing report, signed again at the new head

    def _commit_due_batches(self) -> None:
        """Move the pool into the chain whenever the core says a batch is due (after the final
        close, when no ballot came for a while; rounds commit their own batches)."""
        while self.core.batch_due(time.monotonic()):
            batch = self.core.take_batch()
            failpoint("ledger-before-batch")
            self.store.commit_batch(batch)
            failpoint("ledger-after-batch")
            self._batch_committed(batch)
            if self.core.state.polls == "closed":
                self._announce_polls()  # the closing report, signed again at the new head

    def _batch_committed(self, batch: list[BatchEntry]) -> None:
        """Audit a committed batch by its end and size only (nothing finer: no entry dates a ballot)."""
        if not batch:
            return
        self._record("batch_committed", position=batch[-1].entry.position, entries=len(batch))
        late = sum(1 for b in batch if b.entry.kind == "late")
        if late:
            log.warning("chained a batch with %d LATE ballot(s) up to position %d (their tokens were issued before "
                        "the close)", late, batch[-1].entry.position)  # fmt: skip

    def _handle_control(self, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == self.topics.polls_control:
                self._polls_message(bytes(message.payload))
            elif message.topic == self.topics.roll_report:
                self._roll_report(bytes(message.payload))
        except FormatError as error:
            log.warning("ignored a bad message on %s: %s", message.topic, error)
        except Exception:  # see the module docstring: one message never stops the ledger
            log.exception("internal error handling a message on %s; ignored it", message.topic)

    def _roll_report(self, payload: bytes) -> None:
        if not payload:
            return
        self.check_ins = RollReport.decode(payload).checked_in
        self._announce_polls()

    # --- polls commands: two officials' cards (docs/ledger.md, "Polls command") ------------

    def _challenge_file(self) -> Path:
        return self.station.ledger_db.parent / "polls-challenge.json"

    def _authorizations_file(self) -> Path:
        return self.station.ledger_db.parent / "polls-officials.json"

    def _load_challenge(self) -> PollsChallenge:
        """The challenge survives a restart (a command being signed stays valid), not its lifetime."""
        try:
            challenge = PollsChallenge.decode(self._challenge_file().read_bytes())
            if time.time() < challenge.issued_at + challenge.expires_in - 60:
                return challenge
        except (OSError, FormatError):
            pass
        return self._new_challenge(publish=False)

    def _new_challenge(self, *, publish: bool = True) -> PollsChallenge:
        self._challenge = PollsChallenge(secrets.token_bytes(NONCE_BYTES), int(time.time()), CHALLENGE_LIFETIME)
        write_atomically(self._challenge_file(), self._challenge.encode())
        if publish:
            self._publish(polls_challenge_topic(self.topics), self._challenge.encode(), retain=True)
        return self._challenge

    def _load_authorizations(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._authorizations_file().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _polls_message(self, payload: bytes) -> None:
        """Decode, check the officials, act; answer on the polls result topic either way.

        A refused command changes nothing (state, challenge, reports) and is logged once."""
        try:
            command = PollsCommand.decode(payload)
        except FormatError as error:
            log.warning("refused a polls command: malformed (%s)", error)
            return
        state = self.core.state
        try:
            officials = self.officials.check(command, dt.datetime.now(dt.UTC), self._challenge.nonce)
            allowed = {("open", "pending"), ("close", "open"), ("final", "closing")}
            repeat = {("open", "open"), ("close", "closing"), ("close", "closed"), ("final", "closed")}
            if (command.command, state.polls) not in allowed | repeat:
                why = "can never be opened again" if command.command == "open" else "cannot take this command"
                raise OfficialsRefused(PollsReason.POLLS_STATE, f"the polls are {state.polls}: they {why}")
            unknown = sorted(set(command.unreachable) - set(self.station.terminals))
            if unknown:
                raise OfficialsRefused(PollsReason.UNKNOWN_TERMINAL,
                                       f"{', '.join(unknown)}: not terminals of this station")  # fmt: skip
        except OfficialsRefused as refused:
            log.warning("refused the polls command %s: %s (%s)", command.command, refused.reason.value, refused.detail)
            self._record("polls_command_refused", command=command.command, reason=refused.reason.value)
            result = PollsResult(command.command, command.nonce, False, state.polls,  # type: ignore[arg-type]
                                 refused.reason, refused.detail)  # fmt: skip
            self._publish(polls_result_topic(self.topics), result.encode())
            return
        if (command.command, state.polls) in allowed:
            self._remember(command, officials)
            self._polls(command)
        self._new_challenge()  # this command's nonce is spent: a replay of it is stale
        result = PollsResult(command.command, command.nonce, True, state.polls)  # type: ignore[arg-type]
        self._publish(polls_result_topic(self.topics), result.encode())

    def _remember(self, command: PollsCommand, officials: list[VerifiedOfficial]) -> None:
        """Keep what the signed reports carry of the officials (written before the state changes)."""
        assert command.nonce is not None
        self._authorizations[command.command] = {
            "command": command.command,
            "nonce": command.nonce.hex(),
            "issued_at": command.issued_at,
            "officials": [official.to_json() for official in officials],
        }
        write_atomically(self._authorizations_file(), json.dumps(self._authorizations, sort_keys=True).encode())
        for official in officials:
            log.info("polls %s authorized by the %s's card %s", command.command, official.function.replace("_", " "),
                     official.certificate_sha256[:16])  # fmt: skip
            self._record("polls_command_authorized", command=command.command, function=official.function,
                         certificate_sha256=official.certificate_sha256)  # fmt: skip

    def _polls(self, command: PollsCommand) -> None:
        """open → closing → closed (docs/ledger.md, "Closing the polls"), once authorized."""
        state, verb = self.core.state, command.command
        if verb == "open" and state.polls == "pending":
            self.store.set_polls("open")
            state.polls = "open"
            log.info("polls opened")
            self._record("polls_opened", station=self.station.station_id)
            self._record("report_signed", report="zero_report", position=0, head_hash=self.genesis.hex())
        elif verb == "close" and state.polls == "open":
            self.store.set_polls("closing")
            state.polls = "closing"
            log.info("polls closing: the roll issues no more tokens; ballots of tokens issued before are chained")
        elif verb == "final" and state.polls == "closing":
            batch = self.core.close_final(list(command.unreachable))
            self.store.close_final(batch, state.head.position, state.unreachable)
            log.info("polls closed at position %d; declared unreachable: %s", state.head.position,
                     ", ".join(state.unreachable) or "none")  # fmt: skip
            self._batch_committed(batch)
            self._record("polls_closed", station=self.station.station_id)
            self._record("report_signed", report="closing_report", position=state.head.position,
                         head_hash=state.head.entry_hash.hex())  # fmt: skip
        self._announce_polls()
        self._publish_status()

    # --- statements -----------------------------------------------------------------------

    def _statement(self, kind: str, head: ChainHead, **fields: Any) -> bytes:
        body = {
            "version": CHAIN_VERSION,
            "type": kind,
            "station_id": self.station.station_id,
            "base_hash": self.base_hash.hex(),
            "position": head.position,
            "head_hash": head.entry_hash.hex(),
            **fields,
        }
        return canonical_bytes(sign_document(body, self.key))

    def _announce_polls(self) -> None:
        """Publish (again) the zero report once open, and the closing report once closed (again,
        at the new head, after every late ballot).

        Both are deterministic (no timestamps, deterministic Ed25519), so re-publishing after
        a restart gives the same bytes.
        """
        polls = self.core.state.polls
        if polls == "pending":
            return
        zero_counts = dict.fromkeys(self.station.terminals, 0)
        opened = {"authorized_by": self._authorizations["open"]} if "open" in self._authorizations else {}
        zero = self._statement("zero_report", ChainHead(0, self.genesis), terminals=zero_counts, **opened)
        self._publish(self.topics.zero_report, zero, retain=True)
        if polls == "closed":
            state = self.core.state
            counts = {**zero_counts, **state.counted_per_device()}
            report = self._statement(
                "closing_report",
                state.head,
                terminals=counts,
                ballots=sum(counts.values()),
                spoiled=state.spoiled,
                check_ins=self.check_ins,
                late=dict(sorted(state.late_per_device.items())),
                closed_position=state.closed_position or 0,
                unreachable={name: head.to_json() for name, head in sorted(state.unreachable.items())},
                **({"authorized_by": self._authorizations["final"]} if "final" in self._authorizations else {}),
            )
            self._publish(self.topics.closing_report, report, retain=True)

    def _publish_checkpoint(self) -> None:
        head = self.core.state.head
        if head.position == self._checkpointed:
            return
        document = Checkpoint(self.station.station_id, self.base_hash, head).sign(self.key)
        self._publish(self.topics.checkpoint, canonical_bytes(document), retain=True)
        self._checkpointed = head.position

    def _publish_status(self) -> None:
        state = self.core.state
        status = LedgerStatus(
            True,
            state.polls,  # type: ignore[arg-type]
            state.head.position,
            state.head.entry_hash,
            self.refused,
            _forward_lag(state.head.position, confirmed_position(self.station.directory)),
            tuple(sorted((terminal, reason, count) for (terminal, reason), count in self._refusal_totals.items())),
        )
        self._publish(self.topics.ledger_status, status.encode(), retain=True)

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False, properties: Any = None) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)


def proof_pool(workers: int, examiner: Examiner) -> concurrent.futures.ProcessPoolExecutor:
    """Worker processes for the stateless checks (:func:`election.pool.process_pool`: from a fork
    server, since the service has threads; gone with the ledger however it ends), each given the
    examiner once, and all started now (not on the first ballots, which would wait for them)."""
    pool = process_pool(workers, _install, (examiner,))
    list(pool.map(_ready, range(workers)))
    return pool


_EXAMINER: Examiner | None = None
"""The examiner of a check worker process (set by :func:`_install`)."""


def _install(examiner: Examiner) -> None:
    global _EXAMINER
    _EXAMINER = examiner


def _ready(_: int) -> bool:
    return _EXAMINER is not None


def examine_job(job: tuple[bytes, bytes | None]) -> Examination:
    """In a check worker: examine one payload with the sender's raw Ed25519 key (None: none)."""
    assert _EXAMINER is not None, "the pool's initializer installs the examiner"
    return _EXAMINER.examine_raw(*job)


def serve(station: Station, **options: Any) -> None:
    """Run until SIGTERM or SIGINT."""
    run_service(LedgerService(station, **options), "ledger")


def _forward_lag(head: int, confirmed: int | None) -> int | None:
    """Entries accepted here and not yet confirmed by the centre (None: never forwarded)."""
    return None if confirmed is None else max(0, head - confirmed)
