"""``station-hub monitor``: the operator's live view of terminals and services, with alerts.

:class:`MonitorState` is the pure part: it takes status messages, connection events and the
clock and says what to show and what to alert on. :class:`MonitorLink` is its MQTT source,
:class:`MonitorApp` (Textual) only renders it, and :func:`snapshot` is the ``--json`` form.

The monitor must never show old data as if it were current:

- it subscribes again on *every* (re)connection (a clean session after a broker restart has
  no subscriptions);
- the ledger publishes its status every checkpoint interval, so silence longer than
  :data:`STALE_AFTER` — or a lost connection — puts a STALE banner with the time of the
  last message above everything;
- the broker identifies a client by its certificate's name, so a second connection with the
  same identity (``station-hub polls`` with the monitor's operator id) takes the monitor's
  session over (Mosquitto 2.0 drops it with an unspecified error; the monitor tells that from
  a broker restart because the broker still accepts connections): the monitor says so and
  waits :data:`TAKEOVER_RETRY` seconds before it takes it back, never fighting the other
  connection. Give the monitor an identity of its own
  (docs/operations.md §4).
"""

from __future__ import annotations

import queue
import socket
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from election.encoding import parse_json
from election.errors import FormatError
from infra.mqtt import connect, make_client
from protocol.messages import LedgerStatus, RollStatus, TerminalStatus
from protocol.topics import Topics
from station_hub.operator import pending_terminals
from station_hub.station import Station

STALL_AFTER = 10.0
"""Seconds a terminal may hold ballots in its outbox while the chain head does not move."""
STALE_AFTER = 10.0
"""Seconds without a ledger status (it comes every checkpoint interval) before data is STALE."""
FORWARD_LAG_AFTER = 60.0
"""Seconds the forward lag may stay above zero without shrinking before it is an alert."""
TAKEOVER_RETRY = 30.0
"""Seconds the monitor leaves its identity to another connection that took it over."""
SESSION_TAKEN_OVER = 142
"""MQTT v5 DISCONNECT reason: another client connected with the same client id."""


def clock_text(at: float | None) -> str:
    return "never" if at is None else time.strftime("%H:%M:%S", time.localtime(at))


@dataclass
class MonitorState:
    topics: Topics
    configured: tuple[str, ...] = ()
    """The station's terminals (station.json): each is listed, seen or not."""
    linked: bool = False
    """Whether the station forwards to a central office (then forward lag must move)."""
    terminals: dict[str, TerminalStatus] = field(default_factory=dict)
    terminal_seen_at: dict[str, float] = field(default_factory=dict)
    ledger: LedgerStatus = field(default_factory=lambda: LedgerStatus(False))
    roll: RollStatus = field(default_factory=lambda: RollStatus(False))
    closing: dict[str, Any] | None = None
    unreadable: dict[str, str] = field(default_factory=dict)
    """Topic → why its last status could not be read (shown as an alert, never as data)."""
    head_moved_at: float = 0.0
    refused_seen: int = 0
    new_refusals: int = 0
    connected: bool | None = None
    """None before the first connection attempt ended (tests feeding messages by hand)."""
    connection_note: str = ""
    last_message_at: float | None = None
    ledger_seen_at: float | None = None
    lag_since: float | None = None
    lag_value: int | None = None

    # --- input ----------------------------------------------------------------------------

    def apply(self, topic: str, payload: bytes, now: float) -> None:
        """Take one status message; one that cannot be read replaces nothing and raises an alert."""
        self.last_message_at = now
        try:
            self._apply(topic, payload, now)
        except FormatError as error:
            self.unreadable[topic] = str(error)[:200]
        else:
            self.unreadable.pop(topic, None)

    def _apply(self, topic: str, payload: bytes, now: float) -> None:
        terminal = self.topics.terminal_id_of(topic, "status")
        if terminal is not None:
            self.terminals[terminal] = TerminalStatus.decode(payload)
            self.terminal_seen_at[terminal] = now
        elif topic == self.topics.ledger_status:
            ledger = LedgerStatus.decode(payload)
            self.ledger_seen_at = now
            if ledger.position != self.ledger.position:
                self.head_moved_at = now
            if ledger.refused is not None and ledger.refused > self.refused_seen:
                self.new_refusals += ledger.refused - self.refused_seen
                self.refused_seen = ledger.refused
            lag = ledger.forward_lag
            if not lag:
                self.lag_since, self.lag_value = None, lag
            elif self.lag_value is None or lag < self.lag_value or self.lag_since is None:
                self.lag_since, self.lag_value = now, lag
            else:
                self.lag_value = lag
            self.ledger = ledger
        elif topic == self.topics.roll_status:
            self.roll = RollStatus.decode(payload)
        elif topic == self.topics.closing_report:
            data = parse_json(payload, max_size=1_000_000) if payload else None
            if data is not None and not isinstance(data, dict):
                raise FormatError("closing report: not an object")
            self.closing = data

    def connection(self, connected: bool, note: str, now: float) -> None:
        self.connected = connected
        self.connection_note = note
        if connected:
            self.last_message_at = self.last_message_at or now

    # --- output ---------------------------------------------------------------------------

    def stale(self, now: float) -> str | None:
        """Why nothing shown can be trusted as current, or None."""
        last = f"last message {clock_text(self.last_message_at)}"
        if self.connected is False:
            return f"DISCONNECTED from the station broker ({self.connection_note}); {last}"
        if self.connected is None:
            return None
        if self.ledger_seen_at is None:
            if self.last_message_at is not None and now - self.last_message_at > STALE_AFTER:
                return f"STALE: no ledger status received; {last}"
            return None
        if now - self.ledger_seen_at > STALE_AFTER:
            return f"STALE: no ledger status for {now - self.ledger_seen_at:.0f} s; {last}"
        return None

    def alerts(self, now: float) -> list[str]:
        alerts = []
        banner = self.stale(now)
        if banner:
            alerts.append(banner)
        for name, online in (("ledger", self.ledger.online), ("roll", self.roll.online)):
            if not online:
                alerts.append(f"{name} service offline")
        if self.roll.online and self.roll.municipal_roll == "unreachable":
            # An early/common place checks nobody in without the municipal roll (issue 17).
            alerts.append("MUNICIPAL ROLL UNREACHABLE: nobody can be checked in here until it is back")
        for terminal in self.terminal_names():
            status = self.terminals.get(terminal)
            if status is None:
                alerts.append(f"terminal {terminal} never seen")
            elif not status.online:
                alerts.append(f"terminal {terminal} offline")
            elif status.tamper:
                alerts.append(f"terminal {terminal} reports TAMPER")
            if terminal not in self.configured and self.configured:
                alerts.append(f"terminal {terminal} is not configured for this station")
        for topic, why in sorted(self.unreadable.items()):
            alerts.append(f"unreadable status on {topic}: {why}")
        if self.new_refusals:
            alerts.append(f"{self.new_refusals} ballot(s) refused by the ledger")
        for terminal, reason, count in self.ledger.refusals:
            alerts.append(f"terminal {terminal}: {count} message(s) refused, reason {reason}")
        waiting = any(s.outbox_depth for s in self.terminals.values())
        if waiting and self.ledger.polls != "closed" and now - self.head_moved_at > STALL_AFTER:
            alerts.append("chain stalled: terminals hold ballots but the head does not move")
        alerts += self._forward_alerts(now)
        alerts += self._closing_alerts()
        return alerts

    def _forward_alerts(self, now: float) -> list[str]:
        lag = self.ledger.forward_lag
        if self.linked and lag is None and self.ledger.position:
            return [f"forward lag: {self.ledger.position} entries, never confirmed by the central office"]
        if lag and self.lag_since is not None and now - self.lag_since > FORWARD_LAG_AFTER:
            return [f"forward lag: {lag} entries not confirmed by the central office for {now - self.lag_since:.0f} s"]
        return []

    def _closing_alerts(self) -> list[str]:
        alerts = []
        if self.ledger.polls == "closing":
            for item in pending_terminals(self.configured or tuple(self.terminals), self.terminals):
                alerts.append(f"closing: terminal {item.describe()} — may still hold cast ballots")
        report = self.closing
        if self.ledger.polls == "closed" and report:
            ballots, check_ins = report.get("ballots"), report.get("check_ins")
            if check_ins is not None and ballots != check_ins:
                alerts.append(f"closing report: {ballots} ballots counted but {check_ins} voters checked in")
            for terminal, count in sorted((report.get("late") or {}).items()):
                alerts.append(f"terminal {terminal}: {count} ballot(s) chained LATE, after the polls closed")
            for terminal in sorted(report.get("unreachable") or {}):
                alerts.append(f"terminal {terminal} was declared unreachable at the close")
        return alerts

    def terminal_names(self) -> list[str]:
        return sorted({*self.configured, *self.terminals})

    def rows(self) -> list[tuple[str, ...]]:
        def show(value: Any) -> str:
            return "—" if value is None else str(value)

        rows = []
        for terminal in self.terminal_names():
            status = self.terminals.get(terminal)
            if status is None:
                rows.append((terminal, "never seen", "—", "—", "—", "—", "never"))
                continue
            rows.append(
                (
                    terminal,
                    "online" if status.online else "OFFLINE",
                    show(status.reader),
                    "—" if status.tamper is None else "TAMPER" if status.tamper else "ok",
                    show(status.ballots_cast),
                    show(status.outbox_depth),
                    clock_text(self.terminal_seen_at.get(terminal)),
                )
            )
        return rows

    def summary(self) -> str:
        ledger, roll = self.ledger, self.roll
        head = ledger.head_hash.hex()[:16] + "…" if ledger.head_hash else "?"
        if ledger.forward_lag is not None:
            lag = str(ledger.forward_lag)
        else:
            lag = "not forwarded yet" if self.linked else "not linked to a central office"
        return (
            f"polls {ledger.polls or '?'} · chain position {'?' if ledger.position is None else ledger.position} "
            f"head {head} · forward lag {lag} · "
            f"eligible {'?' if roll.eligible is None else roll.eligible} · "
            + (f"municipal roll {roll.municipal_roll} · " if roll.municipal_roll else "")
            + f"last message {clock_text(self.last_message_at)}"
        )

    def to_json(self, now: float) -> dict[str, Any]:
        ledger = self.ledger
        return {
            "connected": self.connected,
            "stale": self.stale(now),
            "last_message_at": self.last_message_at,
            "polls": ledger.polls,
            "position": ledger.position,
            "head_hash": ledger.head_hash.hex() if ledger.head_hash else None,
            "forward_lag": ledger.forward_lag,
            "ledger_online": ledger.online,
            "roll_online": self.roll.online,
            "eligible": self.roll.eligible,
            "municipal_roll": self.roll.municipal_roll,
            "terminals": [
                dict(zip(("terminal", "link", "reader", "tamper", "ballots_cast", "outbox", "seen"), row, strict=True))
                for row in self.rows()
            ],
            "closing_report": self.closing,
            "alerts": self.alerts(now),
        }


def monitor_topics(topics: Topics) -> list[str]:
    return [topics.terminal_status("+"), topics.ledger_status, topics.roll_status, topics.closing_report]


class MonitorLink:
    """The monitor's MQTT connection: resubscribes on every connect, reports every change of
    the connection as an event, and backs off when another connection takes its identity."""

    def __init__(self, station: Station, identity: str, clock: Any = time.time) -> None:
        self.station = station
        self.identity = identity
        self.clock = clock
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._client = make_client(station, identity)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._retry_at: float | None = None

    def start(self) -> MonitorLink:
        connect(self._client, self.station)
        return self

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.events.put(("connection", (False, f"refused by the broker: {reason}")))
            return
        client.subscribe([(topic, 1) for topic in monitor_topics(self.station.topics)])
        self.events.put(("connection", (True, f"connected as {self.identity}")))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        # Mosquitto 2.0 closes a taken-over session like any other (reason 128, not 142), so
        # the test is: dropped while the broker still accepts connections.
        taken = getattr(reason, "value", None) == SESSION_TAKEN_OVER or (
            getattr(reason, "value", None) == 128 and self._broker_reachable()
        )
        if taken:
            client.disconnect()  # no automatic reconnect: it would take the session back
            note = (f"dropped while the broker is up: another connection with identity {self.identity} probably "
                    f"took the session over (give the monitor its own identity); retrying at "
                    f"{clock_text(self.clock() + TAKEOVER_RETRY)}")  # fmt: skip
            self.events.put(("takeover", note))
        else:
            self.events.put(("connection", (False, f"lost: {reason}")))

    def _broker_reachable(self) -> bool:
        try:
            with socket.create_connection((self.station.host, self.station.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.events.put(("message", (message.topic, bytes(message.payload))))
        client.ack(message.mid, message.qos)

    def pump(self, state: MonitorState) -> None:
        """Apply every queued event to ``state`` (call from the UI thread)."""
        now = self.clock()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._client = self._fresh_client()
            connect(self._client, self.station)
        while True:
            try:
                kind, value = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "message":
                state.apply(*value, now)
            elif kind == "connection":
                state.connection(*value, now)
            elif kind == "takeover":
                state.connection(False, value, now)
                self._retry_at = now + TAKEOVER_RETRY
                self._client.loop_stop()

    def _fresh_client(self) -> Any:
        client = make_client(self.station, self.identity)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class MonitorApp(App[None]):
    TITLE = "Station monitor"
    BINDINGS: ClassVar = [("q", "quit", "Quit")]
    CSS = (
        "#stale { background: darkred; color: white; height: auto; } #alerts { height: auto; } "
        "#alerts.alerting { color: red; } #alerts.quiet { color: green; } #summary { height: auto; }"
    )

    def __init__(self, state: MonitorState, clock: Any, source: MonitorLink | None = None) -> None:
        super().__init__()
        self.state = state
        self.clock = clock
        self.source = source

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="stale")
        yield Static(id="summary")
        yield Static(id="alerts")
        yield DataTable(id="terminals")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("terminal", "link", "reader", "tamper", "ballots cast", "outbox", "last status")
        self.set_interval(0.5, self.refresh_view)
        self.refresh_view()

    def refresh_view(self) -> None:
        if self.source is not None:
            self.source.pump(self.state)
        now = self.clock()
        banner = self.state.stale(now)
        stale = self.query_one("#stale", Static)
        stale.update(f"⚠ {banner} — the data below may be out of date" if banner else "")
        stale.display = banner is not None
        self.query_one("#summary", Static).update(self.state.summary())
        alerts = [a for a in self.state.alerts(now) if a != banner]
        widget = self.query_one("#alerts", Static)
        widget.update("\n".join(f"⚠ {a}" for a in alerts) or "no alerts")
        widget.set_class(bool(alerts), "alerting")
        widget.set_class(not alerts, "quiet")
        table = self.query_one(DataTable)
        table.clear()
        for row in self.state.rows():
            table.add_row(*row)


def station_state(station: Station) -> MonitorState:
    from infra.link import CentralLink

    return MonitorState(station.topics, configured=station.terminals, linked=CentralLink.exists(station.directory))


def snapshot(station: Station, identity: str, wait: float = 3.0, clock: Any = time.time) -> dict[str, Any]:
    """Connect, collect the retained statuses for ``wait`` seconds, and describe the station."""
    state = station_state(station)
    link = MonitorLink(station, identity, clock).start()
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(0.1)
            link.pump(state)
    finally:
        link.close()
    return state.to_json(clock())


def run_monitor(station: Station, operator: str) -> None:
    link = MonitorLink(station, operator).start()
    try:
        MonitorApp(station_state(station), time.time, link).run()
    finally:
        link.close()


def subscribe_all(client: Any) -> None:
    """Subscribe a :class:`infra.mqtt.HubClient` to what the monitor reads (tests, scripts)."""
    for topic in monitor_topics(client.topics):
        client.subscribe(topic)
