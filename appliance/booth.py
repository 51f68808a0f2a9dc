"""The booth shell: wires the voter session to the card reader, keypad, sealing, outbox and hub.

One worker thread owns the session: it takes events from a queue (page taps, keypad keys,
acks from the hub), polls the card reader between events, runs every effect the session
returns and feeds the result straight back. Running effects on that one thread keeps the
order simple: a card removal noticed during sealing is handled right after the seal returns.

What only the shell holds, and drops at the end of each session: the card (to sign the
roll's challenge) and its card handle (which names an uncast check-in in the outbox), the
token, the ballot sealed for review and its opening. The booth never learns a voter key.

The audit log (docs/audit-log.md) gets what happened, never who or how: session started and
ended (by outcome), card errors by kind, tamper, reader and hub-link changes, and ballots cast
as a count per interval (``ballots_cast``): no entry names a ballot, so none dates one to its
minute (docs/design-record-v2.md §6).

A challenged ballot is committed at once but held; it goes to the hub with the same voter's
cast ballot, in one burst, or alone when the session ends without a cast (Outbox.add).

``POLLING_STATION_FAILPOINT=booth-after-seal|booth-after-commit`` stops the process there
(infra/failpoints.py), so fault tests can kill -9 it exactly at that point.
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.card import (
    BadCardSignature,
    CardError,
    CardLocked,
    CardRemoved,
    CardRevoked,
    CertificateExpired,
    InvalidPinFormat,
    JpkiAuthenticator,
    ReaderUnavailable,
    RevocationListStale,
    UnknownIssuer,
    WrongPin,
)
from appliance.outbox import Outbox, StoredCheckin
from appliance.publisher import HubLink, HubUnreachable
from appliance.session import Session, State, Timeouts
from appliance.session import events as ev
from appliance.session.session import RETRYABLE_REFUSALS
from audit.service import ServiceAudit
from election import tokens
from election.ballot import BallotOpening, DeviceSigner, SealedBallot, Token, seal_ballot
from election.errors import FormatError
from election.group import Point
from election.manifest import Manifest
from infra.failpoints import failpoint
from protocol.errors import CheckinReason
from protocol.messages import (
    AckHeld,
    CheckinChallenge,
    CheckinChallengeRequest,
    CheckinGranted,
    CheckinRefused,
    CheckinRequest,
    checkin_binding,
    decode_checkin_reply,
)

log = logging.getLogger("appliance.booth")
CHECKIN_TIMEOUT = 8.0
TICK_INTERVAL = 0.05
COUNT_INTERVAL = 600.0
"""Seconds between the audit log's ``ballots_cast`` counts (the first comes after a random part
of one, so that booths' and the ledger's entries do not line up)."""
REFUSALS = {
    "not_eligible": ev.Refusal.NOT_ELIGIBLE,
    "already_voted": ev.Refusal.ALREADY_VOTED,
    "polls_not_open": ev.Refusal.POLLS_CLOSED,
    "roll_unreachable": ev.Refusal.ROLL_UNREACHABLE,
    "stale_crl": ev.Refusal.STALE_CRL,
}
AUDITED_REFUSALS = frozenset({ev.Refusal.NOT_ELIGIBLE, ev.Refusal.ALREADY_VOTED, ev.Refusal.STALE_CRL})
"""Check-in refusals audited as ``card_error``: about the card, or (``stale_crl``) about checking
any card at all; the others are not."""
CARD_ERROR_WORDS: tuple[tuple[type[CardError], str], ...] = (
    (WrongPin, "wrong_password"),
    (InvalidPinFormat, "wrong_password"),
    (CardLocked, "card_locked"),
    (CardRemoved, "card_removed"),
    (CardRevoked, "card_revoked"),
    (CertificateExpired, "certificate_expired"),
    (UnknownIssuer, "unknown_issuer"),
    (BadCardSignature, "bad_signature"),
    (ReaderUnavailable, "reader_unavailable"),
)
SESSION_STATES = frozenset(
    {
        State.CHECKING_CARD, State.PIN, State.WRONG_PIN, State.AUTHENTICATING, State.CHECKING_IN, State.HUB_UNREACHABLE,
        State.BALLOT, State.REVIEW, State.SEALING, State.SEALED, State.SPOILING, State.SPOILED, State.CASTING,
    }
)  # fmt: skip
"""States in which a voter's session is under way (from the card until cast or refused)."""
SESSION_OUTCOMES = {
    State.RECEIPT: "cast",
    State.CARD_REMOVED: "card_removed",
    State.OUT_OF_SERVICE: "error",
    State.CARD_LOCKED: "refused",
    State.CARD_INVALID: "refused",
    State.CARD_CHECK_UNAVAILABLE: "refused",
    State.NOT_ELIGIBLE: "refused",
    State.ALREADY_VOTED: "refused",
    State.POLLS_CLOSED: "refused",
    State.SESSION_ERROR: "error",
}
PROBLEM_STATES = {"tamper": ("tamper", "open", "closed"), "reader": ("reader", "down", "up")}
"""Problem source → (audit kind, state when set, state when cleared)."""


class CardReader(Protocol):
    """PcscTransport and the PN532 drivers both fit this."""

    def wait_for_card(self, timeout: float) -> bool: ...
    def card_present(self) -> bool: ...
    def transmit(self, apdu: bytes) -> bytes: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class Election:
    manifest: Manifest
    joint_key: Point
    token_key: rsa.RSAPublicKey


def card_problem(error: CardError) -> ev.AuthenticationFailed:
    if isinstance(error, WrongPin):
        return ev.AuthenticationFailed(ev.CardProblem.WRONG_PIN, error.tries_left)
    if isinstance(error, InvalidPinFormat):
        return ev.AuthenticationFailed(ev.CardProblem.BAD_FORMAT)
    if isinstance(error, CardLocked):
        return ev.AuthenticationFailed(ev.CardProblem.LOCKED, 0)
    if isinstance(error, CardRemoved):
        return ev.AuthenticationFailed(ev.CardProblem.REMOVED)
    if isinstance(error, RevocationListStale):  # the station's fault, not the card's: logged by the trust store
        return ev.AuthenticationFailed(ev.CardProblem.CANNOT_CHECK)
    if isinstance(error, CardRevoked | CertificateExpired | UnknownIssuer | BadCardSignature):
        log.info("card not valid: %s", error)
    else:
        log.warning("card could not be read: %s", error)
    return ev.AuthenticationFailed(ev.CardProblem.INVALID)


def card_error_word(error: CardError) -> str:
    """The audit log's word for a card error (its kind only, never its message)."""
    return next((word for kind, word in CARD_ERROR_WORDS if isinstance(error, kind)), "protocol_error")


def session_change(before: State, after: State, event: ev.Event) -> tuple[str, dict[str, str]] | None:
    """The ``session_started``/``session_ended`` audit event a state change makes, if any."""
    if before not in SESSION_STATES and after in SESSION_STATES:
        return "session_started", {}
    if before in SESSION_STATES and after not in SESSION_STATES:
        outcome = SESSION_OUTCOMES.get(after) or ("timeout" if isinstance(event, ev.Tick) else "abandoned")
        return "session_ended", {"outcome": outcome}
    return None


FINAL_CHECKIN_REFUSALS = frozenset(
    {
        CheckinReason.NOT_ELIGIBLE,
        CheckinReason.ALREADY_VOTED,
        CheckinReason.CARD_REVOKED,
        CheckinReason.CARD_EXPIRED,
        CheckinReason.UNKNOWN_ISSUER,
        CheckinReason.BAD_CARD_SIGNATURE,
    }
)
"""Refusals no retry of the same check-in can turn into a token: its stored request is dropped."""


class Booth:
    def __init__(
        self,
        election: Election,
        signer: DeviceSigner,
        outbox: Outbox,
        link: HubLink,
        reader: CardReader,
        authenticator: Callable[[CardReader], JpkiAuthenticator],
        *,
        audit: ServiceAudit,
        timeouts: Timeouts | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.election = election
        self.signer = signer
        self.outbox = outbox
        self.link = link
        self.reader = reader
        self.authenticator = authenticator
        self.audit = audit
        self.clock = clock
        self.session = Session(election.manifest, timeouts or Timeouts(), check_card=True)
        self.session.ballots_cast = outbox.ballots_cast()
        link.on_ack = self._on_ack
        link.on_link = self._on_link
        link.on_polls = self._on_polls
        self._link_up = False
        self._next_count = time.monotonic() + random.SystemRandom().uniform(0, COUNT_INTERVAL)
        self._events: queue.Queue[ev.Event] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._view_lock = threading.Condition()
        self._view: dict[str, Any] = {}
        self._version = 0
        self._card_connected = False
        self._problems: dict[str, str] = {}
        self.view_listeners: list[Callable[[dict[str, Any]], None]] = []
        """Called on the worker thread with every new view (the audio guide): must not block."""
        self._forget()
        self._publish_view()

    # --- the voter's secrets, held only for one session -----------------------------------

    def _forget(self) -> None:
        """Drop the session's secrets (card handle, authenticated card, token, sealed ballot and
        opening): memory only — the one durable copy of a check-in is in the check-in store — and
        send the spoiled ballots the session held, if it ended without a cast."""
        released = self.outbox.release()
        if released:
            self.link.send(released)
        self._voter_key: str | None = None
        self._card: JpkiAuthenticator | None = None
        self._token: Token | None = None
        self._sealed: tuple[SealedBallot, BallotOpening] | None = None

    # --- public API (any thread) ----------------------------------------------------------

    def submit(self, event: ev.Event) -> None:
        self._events.put(event)

    def view(self) -> tuple[int, dict[str, Any]]:
        with self._view_lock:
            return self._version, self._view

    def wait_view(self, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        """The view once its version is past ``after`` (or the current one at the timeout)."""
        with self._view_lock:
            self._view_lock.wait_for(lambda: self._version > after, timeout)
            return self._version, self._view

    def set_problem(self, source: str, problem: str | None) -> None:
        """Tamper, reader trouble: while any problem is set the booth serves no voter."""
        self.submit(_ProblemChanged(source, problem))

    def start(self) -> Booth:
        self._thread = threading.Thread(target=self._run, name="booth", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._count_ballots()

    # --- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        last_failure: str | None = None
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as error:  # the booth keeps serving; the failure is in the log
                # Logged once per kind: a failure repeating every tick would flood the log.
                failure = f"{type(error).__name__}: {error}"
                if failure != last_failure:
                    log.exception("booth worker step failed")
                last_failure = failure
            else:
                last_failure = None

    def _step(self) -> None:
        try:
            event = self._events.get(timeout=TICK_INTERVAL)
        except queue.Empty:
            event = None
        if isinstance(event, _ProblemChanged):
            event = self._problem_changed(event)
        if event is not None:
            self._dispatch(event)
        card_event = self._poll_reader()
        if card_event is not None:
            self._dispatch(card_event)
        self._dispatch(ev.Tick())
        now = time.monotonic()
        self.link.resend_if_due(now)
        if now >= self._next_count:
            self._next_count = now + COUNT_INTERVAL
            self._count_ballots()

    def _count_ballots(self) -> None:
        """``ballots_cast`` with the ballots cast since the last count (none: no entry)."""
        count = self.outbox.count_cast_since_last()
        if count:
            self.audit.record("ballots_cast", count=count)

    def _dispatch(self, event: ev.Event) -> None:
        pending = [event]
        changed = not isinstance(event, ev.Tick)
        before = self.session.view()
        while pending:
            next_event, state = pending.pop(0), self.session.state
            try:
                effects = self.session.handle(next_event, self.clock())
            except Exception:
                log.exception("voter session failed on %s; the session is reset", type(next_event).__name__)
                effects = self.session.fail(self.clock())
            change = session_change(state, self.session.state, next_event)
            if change is not None:
                self.audit.record(change[0], **change[1])
            for effect in effects:
                log.debug("effect %s", type(effect).__name__)  # never its fields: a PIN, choices
                result = self._run_effect_safely(effect)
                if result is not None:
                    pending.append(result)
        if changed or self.session.view() != before:
            self._publish_view()

    def _publish_view(self) -> None:
        with self._view_lock:
            self._version += 1
            self._view = view = self.session.view()
            self._view_lock.notify_all()
        for listener in self.view_listeners:
            try:
                listener(view)
            except Exception:  # a voter aid failing must not stop the booth
                log.exception("view listener failed")

    def _problem_changed(self, change: _ProblemChanged) -> ev.Event | None:
        was_available = not self._problems
        was_set = change.source in self._problems
        if change.problem is None:
            self._problems.pop(change.source, None)
        else:
            self._problems[change.source] = change.problem
        if was_set != (change.problem is not None) and change.source in PROBLEM_STATES:
            kind, set_state, cleared_state = PROBLEM_STATES[change.source]
            self.audit.record(kind, state=cleared_state if was_set else set_state)
        available = not self._problems
        if available == was_available and available:
            return None
        return ev.ServiceChanged(available, "; ".join(self._problems.values()))

    def _poll_reader(self) -> ev.Event | None:
        try:
            if not self._card_connected:
                if self.reader.wait_for_card(0):
                    self._card_connected = True
                    self._reader_ok()
                    return ev.CardInserted()
                self._reader_ok()
                return None
            if not self._card_gone():
                return None
            self.reader.release()
            self._card_connected = False
            return ev.CardTaken()
        except CardRemoved:
            self._card_connected = False
            return ev.CardTaken()
        except CardError as error:
            if "reader" not in self._problems:
                log.error("card reader: %s", error)
                self.link.publish_status(reader="unavailable")
                self._events.put(_ProblemChanged("reader", "card reader unavailable"))
            self._card_connected = False
            return None

    def _card_gone(self) -> bool:
        """PC/SC asks pcscd for the reader's state; a PN532 asks the card (Diagnose)."""
        wait_for_removal = getattr(self.reader, "wait_for_removal", None)
        if wait_for_removal is not None:
            return bool(wait_for_removal(0))
        return not self.reader.card_present()

    def _reader_ok(self) -> None:
        if self.link.status.get("reader") != "ok":
            self.link.publish_status(reader="ok")
        if "reader" in self._problems:
            self._events.put(_ProblemChanged("reader", None))

    def _on_link(self, online: bool) -> None:
        if online != self._link_up:
            self._link_up = online
            self.audit.record("hub_link", state="up" if online else "down")
        self.submit(ev.HubLink(online))

    def _on_polls(self, polls: str) -> None:
        """The ledger's retained status (MQTT thread): once the polls are closed, no check-in
        can be granted or spent any more, so every check-in never cast is purged from the
        check-in store and its RAM keys deleted (idempotent; on every reconnect too)."""
        if polls != "closed" or self.outbox.checkins.polls_closed:
            return
        try:
            purged = self.outbox.purge_checkins()
        except Exception:
            log.exception("could not purge the uncast check-ins at the close of the polls")
            return
        log.info("polls closed: %d check-in(s) never cast were purged", purged)

    def _on_ack(self, ack: AckHeld) -> None:
        """The ledger holds one of our ballots (MQTT thread): the receipt may say so."""
        self.submit(ev.Held(ack.ballot_hash.hex()))

    # --- effects --------------------------------------------------------------------------

    def _run_effect_safely(self, effect: ev.Effect) -> ev.Event | None:
        """Run one effect; if it raises, tell the session (StepFailed) instead of freezing it.

        Without this an exception would leave the session in its busy state ("please wait")
        for good, and the next voter's card would be ignored. The failure is logged once,
        with its traceback (never the effect's fields: Authenticate carries the PIN), and
        audited as the session ending in "error" (or a card error, for authentication).
        """
        try:
            return self._run_effect(effect)
        except Exception:
            log.exception("booth step %s failed; the voter session is reset", type(effect).__name__)
            if isinstance(effect, ev.Authenticate | ev.CheckCard):
                self.audit.record("card_error", error="protocol_error")
            if isinstance(effect, ev.EndSession):
                return None
            self._forget()
            return ev.StepFailed(type(effect).__name__)

    def _run_effect(self, effect: ev.Effect) -> ev.Event | None:
        match effect:
            case ev.CheckCard():
                return self._check_card()
            case ev.Authenticate(secret=secret):
                return self._authenticate(secret)
            case ev.CheckIn():
                return self._check_in()
            case ev.Seal(choices=choices):
                return self._seal(choices)
            case ev.Challenge():
                return self._challenge()
            case ev.CastBallot():
                return self._cast()
            case ev.EndSession():
                self._forget()
        return None

    def _check_card(self) -> ev.Event:
        """The checks at card insertion, before the PIN screen (docs/card-protocol.md §2a).

        The polls first, from the ledger's retained status (HubLink.polls): not open — pending,
        closing or closed — and the card is not even read. Unknown (no status heard yet): the
        roll decides at check-in. Then the card (JpkiAuthenticator.probe): JPKI applet,
        certificate chain, dates, CRL freshness, revocation, tries left by VERIFY without data.
        No secret is sent; the authenticator is dropped (the PIN step reads the card afresh).
        """
        polls = self.link.polls
        if polls is not None and polls != "open":
            log.info("card inserted while the polls are %s", polls)
            return ev.CheckInFailed(ev.Refusal.POLLS_CLOSED)
        card = self.authenticator(self.reader)
        try:
            status = card.probe()
        except CardError as error:
            if not isinstance(error, RevocationListStale):  # no card error: every card would get it
                self.audit.record("card_error", error=card_error_word(error))
            if isinstance(error, ReaderUnavailable):
                log.error("reader failed while checking the card: %s", error)
                return ev.AuthenticationFailed(ev.CardProblem.INVALID)
            return card_problem(error)
        return ev.CardChecked(status.tries_left, status.max_tries)

    def _authenticate(self, secret: str) -> ev.Event:
        card = self.authenticator(self.reader)
        try:
            voter = card.authenticate(secret)
        except CardError as error:
            if not isinstance(error, RevocationListStale):
                self.audit.record("card_error", error=card_error_word(error))
            if isinstance(error, ReaderUnavailable):
                log.error("reader failed during authentication: %s", error)
                return ev.AuthenticationFailed(ev.CardProblem.INVALID)
            return card_problem(error)
        # The card handle names this card's uncast check-in in the outbox (no voter key: only
        # the roll derives that). The authenticated card signs the roll's challenge next.
        self._voter_key = voter.card_handle
        self._card = card
        return ev.Authenticated()

    def _check_in(self) -> ev.Event:
        """One check-in per authentication: the next voter's needs the PIN again. The one
        exception is a refusal about the station, not the voter (hub or municipal roll
        unreachable, stale CRL): the session then shows the retry screen with the card still
        in, and "retry" repeats *this* check-in — the same stored blinded token, so the roll
        grants it at most once — with the card this voter authenticated. Taking the card out
        or cancelling ends the session, which forgets the card (``_forget``)."""
        handle, card = self._voter_key, getattr(self, "_card", None)
        self._card = None
        assert handle is not None and card is not None, "check-in without an authenticated voter"
        outcome = self._check_in_with(handle, card)
        if isinstance(outcome, ev.CheckInFailed) and outcome.refusal in RETRYABLE_REFUSALS:
            self._card = card
        return outcome

    def _check_in_with(self, handle: str, card: JpkiAuthenticator) -> ev.Event:
        """Card-proven check-in (docs/card-protocol.md §5): the roll's fresh challenge, the card's
        signature over it, the station, this terminal and the blinded token; the roll checks
        the certificate and derives the voter key itself."""
        stored = self.outbox.stored_checkin(handle)
        if stored is None:
            message = secrets.token_bytes(32)
            request = tokens.blind(self.election.token_key, message)
            stored = StoredCheckin(message, request.blinded, request.inverse)
            self.outbox.store_checkin(handle, stored)  # before sending: a retry sends the same
        try:
            challenge = decode_checkin_reply(
                self.link.request_checkin(CheckinChallengeRequest().encode(), CHECKIN_TIMEOUT), len(stored.blinded)
            )
            if isinstance(challenge, CheckinChallenge):
                binding = checkin_binding(self.link.topics.station, self.link.terminal_id, challenge.challenge,
                                          stored.blinded)  # fmt: skip
                try:
                    signature = card.sign_checkin(binding)
                    certificate = card.certificate_der
                except CardError as error:
                    self.audit.record("card_error", error=card_error_word(error))
                    log.info("the card did not sign the check-in: %s", type(error).__name__)
                    return ev.CheckInFailed(ev.Refusal.NOT_ELIGIBLE)
                payload = CheckinRequest(challenge.challenge, stored.blinded, certificate, signature).encode()
                del certificate, signature  # held for this one request only
                reply = decode_checkin_reply(self.link.request_checkin(payload, CHECKIN_TIMEOUT), len(stored.blinded))
            else:
                reply = challenge
        except HubUnreachable as error:
            log.warning("check-in failed: %s", error)
            return ev.CheckInFailed(ev.Refusal.HUB_UNREACHABLE)
        except FormatError as error:
            log.warning("the roll's reply is malformed: %s", error)
            return ev.CheckInFailed(ev.Refusal.HUB_UNREACHABLE)
        if isinstance(reply, CheckinRefused):
            reason = reply.reason.value
            log.info("check-in refused: %s", reason)
            if reply.reason in FINAL_CHECKIN_REFUSALS:
                self.outbox.discard_checkin(handle)  # no retry can succeed: nothing kept till close
            refusal = REFUSALS.get(reason, ev.Refusal.HUB_UNREACHABLE)
            # The roll's verdict on the card itself (its CRL may be fresher than the booth's):
            # the voter sees "not eligible"; the audit log gets the card error's kind.
            card_refusals = {"card_revoked": "card_revoked", "card_expired": "certificate_expired",
                             "unknown_issuer": "unknown_issuer", "bad_card_signature": "bad_signature"}  # fmt: skip
            if reason in card_refusals:
                self.audit.record("card_error", error=card_refusals[reason])
                return ev.CheckInFailed(ev.Refusal.NOT_ELIGIBLE)
            if refusal in AUDITED_REFUSALS:
                self.audit.record("card_error", error=refusal.value)
            return ev.CheckInFailed(refusal)
        if not isinstance(reply, CheckinGranted):
            log.error("the roll answered a check-in with another challenge")
            return ev.CheckInFailed(ev.Refusal.HUB_UNREACHABLE)
        try:
            signature = tokens.finalize(
                self.election.token_key,
                stored.message,
                reply.blind_signature,
                tokens.BlindedRequest(stored.blinded, stored.inverse),
            )
        except (ValueError, tokens.TokenError) as error:
            log.error("the roll's blind signature is unusable: %s", error)
            return ev.CheckInFailed(ev.Refusal.HUB_UNREACHABLE)
        self._token = Token(stored.message, signature)
        return ev.CheckedIn()

    def _seal(self, choices: dict[str, tuple[str, ...]]) -> ev.Event:
        """Seal for review, without the token; nothing is written (a ballot neither cast nor
        challenged is never sent, so it is not in the device's set)."""
        election = self.election
        ballot, opening = seal_ballot(
            election.manifest,
            election.joint_key,
            {contest: set(marks) for contest, marks in choices.items()},
            self.signer,
        )
        self._sealed = (ballot, opening)
        failpoint("booth-after-seal")
        return ev.Sealed(ballot.ballot_hash.hex())

    def _challenge(self) -> ev.Event:
        """Commit the challenged ballot with its opening; it is held until this voter casts (or
        leaves), so that both reach the hub in one burst."""
        assert self._sealed is not None, "challenge without a sealed ballot"
        ballot, opening = self._sealed
        self.outbox.add(ballot, opening, self.signer, self.election.manifest)
        self._sealed = None
        opened = {contest: tuple(sorted(marks)) for contest, marks in opening.choices().items()}
        return ev.Spoiled(ballot.ballot_hash.hex(), opened)

    def _cast(self) -> ev.Event:
        assert self._sealed is not None and self._token is not None, "cast without a sealed ballot and token"
        ballot = self._sealed[0].with_token(self._token, self.signer)
        # One commit casts it; the outbox then removes the check-in (found by the token message)
        # from the check-in store, so no card handle, blinded value or inverse survives the cast.
        released = self.outbox.add(ballot, None, self.signer, self.election.manifest)
        self._voter_key = self._token = None  # the session holds nothing of the voter after this
        failpoint("booth-after-commit")
        self.link.send(released)
        return ev.Cast(ballot.ballot_hash.hex())


@dataclass(frozen=True, slots=True)
class _ProblemChanged:
    source: str
    problem: str | None
