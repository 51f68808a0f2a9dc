"""``station-hub monitor``: the operator's live view of terminals and services, with alerts.

:class:`MonitorState` is the pure part: it takes retained status messages and the clock and
says what to show and what to alert on. :class:`MonitorApp` (Textual) only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from election.encoding import parse_json
from election.errors import FormatError
from station_hub.mqtt import HubClient
from station_hub.station import Station
from station_hub.topics import Topics

STALL_AFTER = 10.0
"""Seconds a terminal may hold ballots in its outbox while the chain head does not move."""


@dataclass
class MonitorState:
    topics: Topics
    terminals: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: dict[str, Any] = field(default_factory=dict)
    roll: dict[str, Any] = field(default_factory=dict)
    head_moved_at: float = 0.0
    refused_seen: int = 0
    new_refusals: int = 0

    def apply(self, topic: str, payload: bytes, now: float) -> None:
        """Take one status message; anything malformed is ignored (and shown as nothing)."""
        try:
            data = parse_json(payload, max_size=65536) if payload else {}
        except FormatError:
            return
        if not isinstance(data, dict):
            return
        terminal = self.topics.terminal_id_of(topic, "status")
        if terminal is not None:
            self.terminals[terminal] = data
        elif topic == self.topics.ledger_status:
            if data.get("position") != self.ledger.get("position"):
                self.head_moved_at = now
            refused = data.get("refused")
            if type(refused) is int and refused > self.refused_seen:
                self.new_refusals += refused - self.refused_seen
                self.refused_seen = refused
            self.ledger = data
        elif topic == self.topics.roll_status:
            self.roll = data

    def alerts(self, now: float) -> list[str]:
        alerts = []
        for name, service in (("ledger", self.ledger), ("roll", self.roll)):
            if service.get("online") is not True:
                alerts.append(f"{name} service offline")
        for terminal, status in sorted(self.terminals.items()):
            if status.get("online") is not True:
                alerts.append(f"terminal {terminal} offline")
            if status.get("tamper") is True:
                alerts.append(f"terminal {terminal} reports TAMPER")
        if self.new_refusals:
            alerts.append(f"{self.new_refusals} ballot(s) refused by the ledger")
        waiting = any(type(s.get("outbox_depth")) is int and s["outbox_depth"] > 0 for s in self.terminals.values())
        if waiting and now - self.head_moved_at > STALL_AFTER:
            alerts.append("chain stalled: terminals hold ballots but the head does not move")
        return alerts

    def rows(self) -> list[tuple[str, ...]]:
        def show(value: Any) -> str:
            return "—" if value is None else str(value)

        return [
            (
                terminal,
                "online" if status.get("online") is True else "OFFLINE",
                show(status.get("reader")),
                "TAMPER" if status.get("tamper") is True else "ok",
                show(status.get("ballots_cast")),
                show(status.get("outbox_depth")),
            )
            for terminal, status in sorted(self.terminals.items())
        ]

    def summary(self) -> str:
        ledger, roll = self.ledger, self.roll
        head = str(ledger.get("head_hash", ""))[:16]
        return (
            f"polls {ledger.get('polls', '?')} · chain position {ledger.get('position', '?')} "
            f"head {head}… · forward lag {ledger.get('forward_lag')} · "
            f"eligible {roll.get('eligible', '?')}"
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
