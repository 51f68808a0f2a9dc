"""The roll's audit log counts each check-in refusal under its own reason: a forged card
signature, a replayed challenge or a card of an unknown CA is not folded into ``malformed``
(docs/audit-log.md §9.3), and still no entry is written per check-in."""

from __future__ import annotations

from pathlib import Path

from hub_fixtures import Hub, SoftCard, cards_of, make_electorate
from test_checkin_card import blinded, open_polls, refusal

from audit.chain import AuditEntry
from audit.store import read_log
from protocol.messages import CheckinRequest, checkin_binding
from station_hub.roll_service import roll_audit_paths
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient


def test_refusals_are_counted_by_their_own_reason(
    hub: Hub, station: Station, voters: list[SoftCard], stranger: SoftCard, tmp_path: Path
):
    open_polls(station)
    foreign = cards_of(make_electorate(tmp_path / "other-ca", 1))[0]
    with TerminalClient(station, "t1").connect() as t1:
        value = blinded(t1)
        challenge = t1.challenge()
        signature = voters[0].sign(checkin_binding(station.station_id, "t1", challenge, value))
        signed = CheckinRequest(challenge, value, voters[0].certificate_der, signature)
        t1.ask_roll(signed.encode())  # granted: spends the challenge
        assert refusal(t1, signed.encode()) == "bad_challenge"
        forged = CheckinRequest(t1.challenge(), value, voters[1].certificate_der, bytes(256))
        assert refusal(t1, forged.encode()) == "bad_card_signature"
        assert refusal(t1, t1.checkin_payload(foreign, blinded(t1))) == "unknown_issuer"
        assert refusal(t1, t1.checkin_payload(stranger, blinded(t1))) == "not_eligible"
        assert refusal(t1, b'{"version":1,"type":"checkin"}') == "malformed"
    hub.stop()
    log_path, _key = roll_audit_paths(station)
    lines, _torn = read_log(log_path)
    entries = [AuditEntry.parse(line) for line in lines]
    assert {e.kind for e in entries} <= {
        "log_created", "software_started", "check_ins_counted", "polls_opened", "software_stopped",
    }  # fmt: skip
    last = [e.data for e in entries if e.kind == "check_ins_counted"][-1]
    assert last["checked_in"] == 1
    refused = {reason: count for reason, count in last.items() if reason != "checked_in" and count}
    assert refused == {"bad_challenge": 1, "bad_card_signature": 1, "unknown_issuer": 1, "not_eligible": 1,
                       "malformed": 1}  # fmt: skip
