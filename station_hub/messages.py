"""Small payloads shared by the hub's services: polls commands and offline status."""

from __future__ import annotations

from election.encoding import canonical_bytes, parse_json
from election.errors import FormatError

MESSAGE_VERSION = 1


def polls_command(command: str) -> bytes:
    return canonical_bytes({"version": MESSAGE_VERSION, "type": "polls", "command": command})


def parse_polls_command(payload: bytes) -> str:
    """``{"version":1,"type":"polls","command":"open"|"close"}`` → the command."""
    data = parse_json(payload, max_size=1024)
    if not isinstance(data, dict) or set(data) != {"version", "type", "command"}:
        raise FormatError("polls command: expected version, type and command")
    if data["version"] != MESSAGE_VERSION or data["type"] != "polls":
        raise FormatError("polls command: unsupported version or type")
    if data["command"] not in ("open", "close"):
        raise FormatError("polls command: command must be open or close")
    return data["command"]


def offline_status(kind: str) -> bytes:
    """The retained last will of a service or terminal: ``{"online": false}`` of its kind."""
    return canonical_bytes({"version": MESSAGE_VERSION, "type": kind, "online": False})
