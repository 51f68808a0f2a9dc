"""What an operator console does: open and close the polls and wait until both services agree.

Closing has two phases (docs/ledger.md, "Closing the polls"; docs/operations.md §7):

1. ``close``: the roll stops issuing tokens at once, the ledger goes ``closing`` and keeps
   chaining ballots whose tokens were issued before. The console then waits until every
   configured terminal is *drained*: online, with an empty outbox.
2. ``final``: sent only when every terminal is drained or the officials declared each one
   that is not unreachable. The ledger signs the closing report with each declared terminal's
   last known device-chain head; a ballot of such a terminal that arrives later is chained
   ``late`` and the closing report is signed again at the new head.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from election.encoding import parse_json
from election.errors import FormatError
from infra.errors import SiteError
from infra.mqtt import HubClient, Message
from infra.officials import OfficialSigner, authorize, training_officials
from infra.pki import PkiError
from protocol.errors import PollsReason
from protocol.messages import (
    PollsChallenge,
    PollsCommand,
    PollsResult,
    TerminalStatus,
    polls_challenge_topic,
    polls_result_topic,
)

DRAIN_WAIT = 1.0
"""Seconds :func:`change_polls` waits, by default, for the terminals to drain at closing."""


class PollsRefused(SiteError):
    """The ledger refused the command (its reason: officials' cards, state, ...), or the console
    saw from the ledger's state that it would (re-opening after the close)."""

    def __init__(self, message: str, reason: PollsReason = PollsReason.POLLS_STATE) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Pending:
    """A terminal that is not drained: offline, never seen, or holding unacknowledged ballots."""

    terminal: str
    why: str

    def describe(self) -> str:
        return f"{self.terminal}: {self.why}"


class ClosingPending(SiteError):
    """Closing started, but some terminals are neither drained nor declared unreachable."""

    def __init__(self, pending: list[Pending]) -> None:
        self.pending = pending
        super().__init__(
            "the polls are CLOSING (no new check-ins) but these terminals may still hold cast ballots: "
            + "; ".join(p.describe() for p in pending)
            + ". Bring them back online and close again, or declare each one unreachable "
            "(--declare-unreachable TERMINAL); its ballots will then be chained as late."
        )


def _payload(message: Message) -> dict[str, Any]:
    try:
        data = parse_json(message.payload, max_size=1_000_000) if message.payload else {}
    except FormatError:
        return {}
    return data if isinstance(data, dict) else {}


def pending_terminals(terminals: Collection[str], statuses: dict[str, TerminalStatus | None]) -> list[Pending]:
    """Every configured terminal that is not drained (online with an empty outbox)."""
    pending = []
    for terminal in sorted(terminals):
        status = statuses.get(terminal)
        if status is None:
            pending.append(Pending(terminal, "never seen (no status since the broker started)"))
        elif not status.online:
            pending.append(Pending(terminal, "offline"))
        elif status.outbox_depth:
            pending.append(Pending(terminal, f"{status.outbox_depth} ballot(s) not yet acknowledged"))
    return pending


class _Watch:
    """The retained statuses the console sees, kept current while it waits."""

    def __init__(self, client: HubClient) -> None:
        self.client = client
        self.topics = client.topics
        self.ledger: dict[str, Any] = {}
        self.roll: dict[str, Any] = {}
        self.terminals: dict[str, TerminalStatus | None] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.challenge: PollsChallenge | None = None
        self.results: list[PollsResult] = []
        self.challenge_topic, self.result_topic = polls_challenge_topic(self.topics), polls_result_topic(self.topics)
        for topic in (
            self.challenge_topic,
            self.result_topic,
            self.topics.roll_status,
            self.topics.ledger_status,
            self.topics.zero_report,
            self.topics.closing_report,
            self.topics.terminal_status("+"),
        ):
            client.subscribe(topic)

    def take(self, message: Message) -> None:
        topics, data = self.topics, _payload(message)
        if message.topic == self.challenge_topic:
            try:
                self.challenge = PollsChallenge.decode(message.payload)
            except FormatError:
                self.challenge = None
        elif message.topic == self.result_topic:
            with contextlib.suppress(FormatError):  # not the ledger's answer: wait for it
                self.results.append(PollsResult.decode(message.payload))
        elif message.topic == topics.ledger_status:
            self.ledger = data
        elif message.topic == topics.roll_status:
            self.roll = data
        elif message.topic in (topics.zero_report, topics.closing_report):
            self.reports[message.topic] = data
        else:
            terminal = topics.terminal_id_of(message.topic, "status")
            if terminal is not None:
                try:
                    self.terminals[terminal] = TerminalStatus.decode(message.payload)
                except FormatError:
                    self.terminals[terminal] = TerminalStatus(False)

    def until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SiteError(f"{self.client.name}: {what} within {timeout} s")
            try:
                self.take(self.client.next_message(remaining))
            except SiteError:
                continue

    def settle(self, quiet: float = 0.3) -> None:
        """Take what is queued (the retained statuses arrive right after subscribing)."""
        deadline = time.monotonic() + quiet
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.take(self.client.next_message(remaining))
            except SiteError:
                return


def change_polls(
    client: HubClient,
    command: str,
    timeout: float = 10.0,
    *,
    unreachable: Collection[str] | None = None,
    drain_wait: float = DRAIN_WAIT,
    officials: Sequence[OfficialSigner] | None = None,
) -> dict[str, Any]:
    """Send open/close; return the ledger's signed report once the roll has switched too.

    Every command sent is signed by ``officials``: the station manager's and a witness's
    cards, unlocked with their PINs (infra/official_card.py). ``officials=None`` (tests, demos,
    scripts of a training station) uses the station's training cards (infra/officials.py),
    which the services refuse once real officials' cards are enrolled. A command the ledger
    refuses raises :class:`PollsRefused` with its reason at once.

    Waits first until both services say they are online (their retained status), so the
    command is not sent into a gap where a service is not yet subscribed.

    ``close`` runs both phases. ``unreachable`` names the terminals the officials declare
    unreachable; every other terminal must be drained within ``drain_wait`` seconds, else
    :class:`ClosingPending` is raised and the polls stay ``closing``. ``unreachable=None``
    (tests, demos, scripts) declares whatever is not drained after the wait; the ``polls``
    command never does that on its own.

    The closing report is complete only when it carries the roll's check-in count.
    """
    if officials is None:
        try:
            officials = training_officials(client.station.directory)
        except PkiError as error:
            raise SiteError(f"no officials' cards given: {error}") from error
    watch = _Watch(client)
    signers = list(officials)
    watch.until(
        lambda: watch.ledger.get("online") is True and watch.roll.get("online") is True,
        timeout,
        "the ledger and the roll are not both online",
    )
    polls = watch.ledger.get("polls")
    if command == "open":
        if polls in ("closing", "closed"):
            raise PollsRefused(f"the polls are {polls}: they can never be opened again")
        _authorized(client, watch, signers, "open", (), timeout)
        watch.until(
            lambda: watch.roll.get("polls") == "open" and client.topics.zero_report in watch.reports,
            timeout,
            "no zero report from the ledger (is it the same election?)",
        )
        return watch.reports[client.topics.zero_report]
    if command != "close":
        raise ValueError(f"unknown polls command {command!r}")
    if polls == "pending":
        raise PollsRefused("the polls were never opened")
    if polls == "open":
        _authorized(client, watch, signers, "close", (), timeout)
    watch.until(
        lambda: watch.ledger.get("polls") in ("closing", "closed") and watch.roll.get("polls") == "closed",
        timeout,
        "the ledger and the roll did not both stop check-ins",
    )
    if watch.ledger.get("polls") == "closing":
        _final(client, watch, unreachable, drain_wait, signers, timeout)
    closing = client.topics.closing_report
    watch.until(
        lambda: watch.ledger.get("polls") == "closed" and watch.reports.get(closing, {}).get("check_ins") is not None,
        timeout,
        "no closing report with the roll's check-ins",
    )
    return watch.reports[closing]


def _final(client: HubClient, watch: _Watch, unreachable: Collection[str] | None, drain_wait: float,
           signers: list[OfficialSigner], timeout: float) -> None:  # fmt: skip
    terminals = tuple(getattr(client.station, "terminals", ()))
    deadline = time.monotonic() + drain_wait
    declared = set(unreachable or ())
    unknown = sorted(declared - set(terminals))
    if unknown:
        raise SiteError(f"not terminals of this station: {', '.join(unknown)}")
    while True:
        pending = [p for p in pending_terminals(terminals, watch.terminals) if p.terminal not in declared]
        if not pending or time.monotonic() >= deadline:
            break
        try:
            watch.take(client.next_message(max(0.0, deadline - time.monotonic())))
        except SiteError:
            break
    if pending and unreachable is not None:
        raise ClosingPending(pending)
    declared |= {p.terminal for p in pending}
    _authorized(client, watch, signers, "final", tuple(sorted(declared)), timeout)


def _authorized(client: HubClient, watch: _Watch, signers: list[OfficialSigner], command: str,
                unreachable: tuple[str, ...], timeout: float) -> PollsResult:  # fmt: skip
    """Sign ``command`` over the ledger's current challenge with both cards, send it, and wait for
    the ledger's answer; raise PollsRefused with the ledger's reason at once."""
    used = {result.nonce for result in watch.results if result.accepted}
    watch.until(lambda: watch.challenge is not None and watch.challenge.nonce not in used, timeout,
                "no polls challenge from the ledger (an older ledger?)")  # fmt: skip
    challenge = watch.challenge
    assert challenge is not None
    station = client.station
    body = PollsCommand(command, unreachable, station.station_id, station.election().manifest.base_hash,  # type: ignore[arg-type]
                        challenge.nonce, challenge.issued_at)  # fmt: skip
    signed = authorize(body, signers)
    _send(client, signed.encode())
    watch.until(lambda: any(r.nonce == challenge.nonce and r.command == command for r in watch.results), timeout,
                f"no answer from the ledger to the polls command {command}")  # fmt: skip
    result = next(r for r in watch.results if r.nonce == challenge.nonce and r.command == command)
    if not result.accepted:
        raise PollsRefused(f"the ledger refused {command!r}: {result.reason}: {result.detail}",
                           result.reason or PollsReason.INTERNAL_ERROR)  # fmt: skip
    return result


def _send(client: HubClient, payload: bytes) -> None:
    code = client.publish(client.topics.polls_control, payload)
    if code not in (0, 16):
        raise SiteError(f"the broker refused the polls command (reason {code}): not an operator?")
