"""What an operator console does: open and close the polls and wait until both services agree."""

from __future__ import annotations

from typing import Any

from election.encoding import parse_json
from election.errors import FormatError
from station_hub.errors import HubError
from station_hub.messages import polls_command
from station_hub.mqtt import HubClient, Message


def _payload(message: Message) -> dict[str, Any]:
    try:
        data = parse_json(message.payload, max_size=1_000_000) if message.payload else {}
    except FormatError:
        return {}
    return data if isinstance(data, dict) else {}


def change_polls(client: HubClient, command: str, timeout: float = 10.0) -> dict[str, Any]:
    """Send open/close; return the ledger's signed report once the roll has switched too.

    Waits first until both services say they are online (their retained status), so the
    command is not sent into a gap where a service is not yet subscribed.

    The closing report is complete only when it carries the roll's check-in count.
    """
    topics = client.topics
    state = {"open": "open", "close": "closed"}[command]
    report_topic = topics.zero_report if command == "open" else topics.closing_report
    client.subscribe(topics.roll_status)
    client.subscribe(topics.ledger_status)
    client.subscribe(report_topic)
    online: set[str] = set()
    while online != {topics.roll_status, topics.ledger_status}:
        message = client.next_message(timeout)
        if message.topic in (topics.roll_status, topics.ledger_status):
            if _payload(message).get("online") is True:
                online.add(message.topic)
            else:
                online.discard(message.topic)
    code = client.publish(topics.polls_control, polls_command(command))
    if code not in (0, 16):
        raise HubError(f"the broker refused the polls command (reason {code}): not an operator?")
    report: dict[str, Any] | None = None
    roll_ready = False
    while report is None or not roll_ready:
        message = client.next_message(timeout)
        data = _payload(message)
        if message.topic == topics.roll_status and data.get("polls") == state:
            roll_ready = True
        elif message.topic == report_topic and (command == "open" or data.get("check_ins") is not None):
            report = data
    return report
