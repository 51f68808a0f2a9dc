"""The forwarder sends the terminals' device statements only once the centre holds the final
closing report and every entry, and again only when one of them changed (a late ballot)."""

from __future__ import annotations

from election.chain import ChainHead
from protocol.forwarding import ClosingSeen, Confirm
from station_hub.forwarder import ForwarderCore, SendBatch, SendHello

HEAD = ChainHead(4, b"\x05" * 32, 2)
CHECKPOINT = {"position": 4}
CLOSING = {"position": 4, "check_ins": 4}


def confirm(request: int, closing: ClosingSeen | None) -> Confirm:
    return Confirm("st-1", request, HEAD, 4, closing, "ok")


def test_device_statements_follow_the_final_closing_report_and_go_again_when_they_change() -> None:
    core = ForwarderCore("st-1", timeout=5.0, first_request=0)
    hello = core.connected(0.0)
    assert isinstance(hello, SendHello)
    core.received(confirm(hello.request, None), 0.1)
    # Polls open: the ledger holds statements, but none may leave (no closing report at the centre).
    assert core.tick(0.2, HEAD.position, {"checkpoint": CHECKPOINT}, b"\x01" * 32) is None
    # The closing report goes first, without statements.
    closing = core.tick(0.3, HEAD.position, {"checkpoint": CHECKPOINT, "closing_report": CLOSING}, b"\x01" * 32)
    assert isinstance(closing, SendBatch) and closing.devices is None
    core.received(confirm(closing.request, ClosingSeen(4, 4)), 0.4)
    statements = {"checkpoint": CHECKPOINT, "closing_report": CLOSING}
    devices = core.tick(0.5, HEAD.position, statements, b"\x01" * 32)
    assert isinstance(devices, SendBatch) and devices.devices == b"\x01" * 32
    core.received(confirm(devices.request, ClosingSeen(4, 4)), 0.6)
    assert core.tick(0.7, HEAD.position, statements, b"\x01" * 32) is None, "sent once, confirmed"
    changed = core.tick(0.8, HEAD.position, statements, b"\x02" * 32)
    assert isinstance(changed, SendBatch) and changed.devices == b"\x02" * 32
