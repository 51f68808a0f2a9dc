"""Monitoring: retained status with last will over the real broker, alerts, and the TUI."""

from __future__ import annotations

import asyncio

from election.encoding import canonical_bytes
from infra.broker import Broker
from infra.mqtt import HubClient
from protocol.topics import Topics
from station_hub.monitor import MonitorApp, MonitorState, subscribe_all
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient


def status(**fields: object) -> bytes:
    return canonical_bytes({"version": 1, "type": "terminal_status", **fields})


def test_a_crashed_terminal_shows_offline_through_its_last_will(station: Station, broker: Broker):
    topics = station.topics
    state = MonitorState(topics)
    with HubClient(station, "op1").connect() as operator:
        subscribe_all(operator)
        t1 = TerminalClient(station, "t1").connect()
        t1.publish(topics.terminal_status("t1"), status(online=True, tamper=False,
                   reader="pn532", ballots_cast=0, outbox_depth=0), retain=True)  # fmt: skip
        message = operator.next_message(5, lambda m: m.topic == topics.terminal_status("t1"))
        state.apply(message.topic, message.payload, 0.0)
        assert state.rows()[0][:2] == ("t1", "online")
        t1._client._sock.close()  # a crash: no DISCONNECT, so the broker sends the will
        t1._client.loop_stop()
        message = operator.next_message(30, lambda m: m.topic == topics.terminal_status("t1"))
        state.apply(message.topic, message.payload, 1.0)
    assert "terminal t1 offline" in state.alerts(1.0)


def test_alerts_for_tamper_refusals_and_a_stalled_chain():
    state = MonitorState(Topics("st-1"))
    topics = state.topics
    ledger = {"version": 1, "type": "ledger_status", "online": True, "polls": "open", "head_hash": "00" * 32,
              "forward_lag": None, "refusals": {}}  # fmt: skip
    state.apply(topics.ledger_status, canonical_bytes({**ledger, "position": 3, "refused": 0}), 0)
    roll = {"version": 1, "type": "roll_status", "online": True, "polls": "open", "eligible": 9}
    state.apply(topics.roll_status, canonical_bytes(roll), 0)
    state.apply(topics.terminal_status("t1"), status(online=True, tamper=True, outbox_depth=2, reader="pn532",
                                                     ballots_cast=0), 0)  # fmt: skip
    state.apply(topics.terminal_status("t2"), b"{not json", 0)
    assert state.alerts(1)[0] == "terminal t1 reports TAMPER"
    assert state.alerts(1)[1].startswith(f"unreadable status on {topics.terminal_status('t2')}")
    assert "t2" not in state.terminals
    state.apply(topics.ledger_status, canonical_bytes({**ledger, "position": 3, "refused": 2}), 5)
    alerts = state.alerts(20)
    assert "2 ballot(s) refused by the ledger" in alerts
    state.apply(topics.ledger_status, canonical_bytes({**ledger, "position": 3, "refused": 2,
                                                       "refusals": {"t1": {"bad_token": 2}}}), 6)  # fmt: skip
    assert "terminal t1: 2 message(s) refused, reason bad_token" in state.alerts(20)
    assert any("chain stalled" in alert for alert in alerts)


def test_tui_shows_terminals_and_alerts():
    state = MonitorState(Topics("st-1"), configured=("t1", "t7"))
    state.apply(state.topics.terminal_status("t7"), status(online=False), 0)

    async def drive() -> None:
        app = MonitorApp(state, lambda: 0.0)
        async with app.run_test() as pilot:
            await pilot.pause()
            table = app.query_one("DataTable")
            assert table.row_count == 2  # a configured terminal never seen is listed too
            alerts = str(app.query_one("#alerts").render())
            assert "terminal t7 offline" in alerts and "terminal t1 never seen" in alerts

    asyncio.run(drive())


def test_closing_alerts_name_pending_terminals_and_count_mismatch():
    state = MonitorState(Topics("st-1"), configured=("t1", "t2"))
    topics = state.topics
    ledger = {"version": 1, "type": "ledger_status", "online": True, "head_hash": "00" * 32, "forward_lag": 5,
              "refusals": {}, "position": 5, "refused": 0}  # fmt: skip
    state.apply(topics.ledger_status, canonical_bytes({**ledger, "polls": "closing"}), 0)
    state.apply(topics.terminal_status("t1"), status(online=True, tamper=False, outbox_depth=1, reader="pn532",
                                                     ballots_cast=3), 0)  # fmt: skip
    alerts = state.alerts(1)
    assert "closing: terminal t1: 1 ballot(s) not yet acknowledged — may still hold cast ballots" in alerts
    assert any(a.startswith("closing: terminal t2: never seen") for a in alerts)
    assert state.alerts(100)[-3].startswith("forward lag: 5 entries not confirmed")
    report = {"ballots": 4, "check_ins": 5, "late": {"t2": 1}, "unreachable": {"t2": {}}}
    state.apply(topics.ledger_status, canonical_bytes({**ledger, "polls": "closed", "forward_lag": 0}), 2)
    state.apply(topics.closing_report, canonical_bytes(report), 2)
    alerts = state.alerts(3)
    assert "closing report: 4 ballots counted but 5 voters checked in" in alerts
    assert "terminal t2: 1 ballot(s) chained LATE, after the polls closed" in alerts
    assert not any(a.startswith("forward lag") for a in alerts)
