"""``station-hub monitor``: the operator's live view of terminals and services, with alerts.

:class:`MonitorState` is the pure part: it takes retained status messages and the clock and
says what to show and what to alert on. :class:`MonitorApp` (Textual) only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from election.errors import FormatError
from infra.mqtt import HubClient
from protocol.messages import LedgerStatus, RollStatus, TerminalStatus
from protocol.topics import Topics
from station_hub.station import Station

STALL_AFTER = 10.0
"""Seconds a terminal may hold ballots in its outbox while the chain head does not move."""


@dataclass
class MonitorState:
    topics: Topics
    terminals: dict[str, TerminalStatus] = field(default_factory=dict)
    ledger: LedgerStatus = field(default_factory=lambda: LedgerStatus(False))
    roll: RollStatus = field(default_factory=lambda: RollStatus(False))
    unreadable: dict[str, str] = field(default_factory=dict)
    """Topic → why its last status could not be read (shown as an alert, never as data)."""
    head_moved_at: float = 0.0
    refused_seen: int = 0
    new_refusals: int = 0

    def apply(self, topic: str, payload: bytes, now: float) -> None:
        """Take one status message; one that cannot be read replaces nothing and raises an alert."""
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
        elif topic == self.topics.ledger_status:
            ledger = LedgerStatus.decode(payload)
            if ledger.position != self.ledger.position:
                self.head_moved_at = now
            if ledger.refused is not None and ledger.refused > self.refused_seen:
                self.new_refusals += ledger.refused - self.refused_seen
                self.refused_seen = ledger.refused
            self.ledger = ledger
        elif topic == self.topics.roll_status:
            self.roll = RollStatus.decode(payload)

    def alerts(self, now: float) -> list[str]:
        alerts = []
        for name, online in (("ledger", self.ledger.online), ("roll", self.roll.online)):
            if not online:
                alerts.append(f"{name} service offline")
        for terminal, status in sorted(self.terminals.items()):
            if not status.online:
                alerts.append(f"terminal {terminal} offline")
            if status.tamper:
                alerts.append(f"terminal {terminal} reports TAMPER")
        for topic, why in sorted(self.unreadable.items()):
            alerts.append(f"unreadable status on {topic}: {why}")
        if self.new_refusals:
            alerts.append(f"{self.new_refusals} ballot(s) refused by the ledger")
        waiting = any(s.outbox_depth for s in self.terminals.values())
        if waiting and now - self.head_moved_at > STALL_AFTER:
            alerts.append("chain stalled: terminals hold ballots but the head does not move")
        return alerts

    def rows(self) -> list[tuple[str, ...]]:
        def show(value: Any) -> str:
            return "—" if value is None else str(value)

        return [
            (
                terminal,
                "online" if status.online else "OFFLINE",
                show(status.reader),
                "TAMPER" if status.tamper else "ok",
                show(status.ballots_cast),
                show(status.outbox_depth),
            )
            for terminal, status in sorted(self.terminals.items())
        ]

    def summary(self) -> str:
        ledger, roll = self.ledger, self.roll
        head = ledger.head_hash.hex()[:16] if ledger.head_hash else "?"
        lag = "not forwarded yet" if ledger.forward_lag is None else str(ledger.forward_lag)
        return (
            f"polls {ledger.polls or '?'} · chain position {'?' if ledger.position is None else ledger.position} "
            f"head {head}… · forward lag {lag} · "
            f"eligible {'?' if roll.eligible is None else roll.eligible}"
        )


class MonitorApp(App[None]):
    TITLE = "Station monitor"
    BINDINGS: ClassVar = [("q", "quit", "Quit")]
    CSS = "#alerts { color: red; height: auto; } #summary { height: auto; }"

    def __init__(self, state: MonitorState, clock: Any, source: HubClient | None = None) -> None:
        super().__init__()
        self.state = state
        self.clock = clock
        self.source = source

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="summary")
        yield Static(id="alerts")
        yield DataTable(id="terminals")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("terminal", "link", "reader", "tamper", "ballots cast", "outbox")
        self.set_interval(0.5, self.refresh_view)
        self.refresh_view()

    def refresh_view(self) -> None:
        if self.source is not None:
            for message in self.source.pending():
                self.state.apply(message.topic, message.payload, self.clock())
        now = self.clock()
        self.query_one("#summary", Static).update(self.state.summary())
        alerts = self.state.alerts(now)
        self.query_one("#alerts", Static).update("\n".join(f"⚠ {a}" for a in alerts) or "no alerts")
        table = self.query_one(DataTable)
        table.clear()
        for row in self.state.rows():
            table.add_row(*row)


def subscribe_all(client: HubClient) -> None:
    topics = client.topics
    for topic in (topics.terminal_status("+"), topics.ledger_status, topics.roll_status):
        client.subscribe(topic)


def run_monitor(station: Station, operator: str) -> None:
    import time

    with HubClient(station, operator).connect() as client:
        subscribe_all(client)
        MonitorApp(MonitorState(station.topics), time.monotonic, client).run()
