"""The README's main command: a whole election through the real parts verifies end to end,
and every device's audit log verifies, tells what happened and holds no voter or choice."""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.card import AuthMode
from appliance.card.testca import TestCa
from appliance.card.voter_key import voter_key_of
from audit.chain import AuditEntry
from audit.cli import main as audit_log
from audit.privacy import find_forbidden
from demo.whole_election import PIN, demo_manifest, run
from election.record import DirectoryRecord
from election.verify import verify_record
from station_hub.station import Station

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "schemas"))
from schema_tools import assert_valid, payload_json
from test_schema_records import record_documents

VOTERS_PER_BOOTH, CHALLENGE_EVERY = 2, 2
TERMINALS = ("T01", "T02", "T03")


def test_whole_election_on_one_machine_verifies(tmp_path: Path, pcscd, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "election"
    assert run(out, voters_per_booth=VOTERS_PER_BOOTH, challenge_every=CHALLENGE_EVERY, seed=5, pcscd=pcscd,
               common_place=True)  # fmt: skip
    printed = capsys.readouterr().out
    check_common_place(out, printed)
    assert "decrypted totals EQUAL what the scripted voters chose" in printed
    assert "[PASS] 18." in printed and "found at station-1" in printed
    # The record stands on its own: a fresh verifier run over the files passes, and it holds
    # every ballot cast (2 per booth) plus the challenged ones, each chained at the station.
    report = verify_record(DirectoryRecord(out / "record"))
    assert report.passed
    assert len(list((out / "record" / "ballots").iterdir())) == 6 + 2  # and one at each municipal place
    assert len(list((out / "record" / "spoiled").iterdir())) == 3
    check_audit_logs(out)
    check_schemas(out)


def check_common_place(out: Path, printed: str) -> None:
    """Issue 17 in the demo (demo/multi_site.py): the voter who voted early at city-hall is refused
    at the common place hall-2 by the booth itself; the centre's reconciliation agrees; each
    place's roll relay logged totals only, in an audit log that verifies."""
    assert "booth shows 'already_voted' — REFUSED, one person one vote" in printed
    assert "city-hall (demo-city, early): 1 check-ins, 1 ballots" in printed
    assert "hall-2 (demo-city, common): 1 check-ins, 1 ballots" in printed
    assert "in all 2 check-ins, 2 ballots, 0 voted twice" in printed
    for place in ("city-hall", "hall-2"):
        directory = out / "municipal" / place / "roll" / "audit"
        result = CliRunner().invoke(audit_log, ["verify", str(directory / "roll.log"), "--key",
                                                str(directory / "audit.key.pub")])  # fmt: skip
        assert result.exit_code == 0, f"{place}: {result.output}"
        relay = entries(directory / "roll.log")
        assert {e.kind for e in relay} <= {"log_created", "software_started", "check_ins_counted", "polls_opened",
                                           "polls_closed", "software_stopped"}, place  # fmt: skip
        assert [e.data["checked_in"] for e in relay if e.kind == "check_ins_counted"][-1] == 1, place


def check_schemas(out: Path) -> None:
    """docs/schemas/ describe what the demo really wrote: every record file, and every ballot as
    the ledger keeps it (a sealed ballot, or a spoiled one with its opening; never the device
    statement the booth sent with it)."""
    documents = record_documents(out / "record")
    assert {schema for _, schema, _ in documents} >= {"device-statement.schema.json", "sealed-ballot.schema.json"}
    for relative, schema, document in documents:
        assert_valid(schema, document, relative)
    # The real hub's closing reports, signed with the officials' authorization (the simulated
    # records the record schema tests use have none).
    closings = sorted((out / "record" / "stations").glob("*/closing.json"))
    assert len(closings) == 3
    for closing in closings:
        assert_valid("closing-report.schema.json", json.loads(closing.read_bytes()), str(closing))
    with sqlite3.connect(f"file:{out / 'station' / 'ledger' / 'ledger.db'}?mode=ro", uri=True) as ledger:
        payloads = [bytes(payload) for (payload,) in ledger.execute("SELECT ballot FROM entries")]
    assert len(payloads) == 9
    for payload in payloads:
        stored = payload_json(payload)
        assert "statement" not in stored
        ballot = stored["ballot"] if set(stored) == {"ballot", "opening"} else stored
        assert_valid("sealed-ballot.schema.json", ballot, "a ballot of the demo")


def audit_logs(out: Path) -> dict[str, tuple[Path, Path]]:
    """Every audit log of the election and its public key, where each service keeps them."""
    logs = {t: (out / "terminals" / t / "audit" / "booth.log", out / "terminals" / t / "audit" / "audit.key.pub")
            for t in TERMINALS}  # fmt: skip
    for service in ("ledger", "roll"):
        directory = out / "station" / service / "audit"
        logs[service] = (directory / f"{service}.log", directory / "audit.key.pub")
    return logs


def entries(log: Path) -> list[AuditEntry]:
    return [AuditEntry.parse(line) for line in log.read_bytes().splitlines()]


def kinds(log: Path) -> Counter[str]:
    return Counter(entry.kind for entry in entries(log))


def forbidden_strings(out: Path) -> set[str]:
    """What must never be in an audit log: voters, their cards, the PIN, the choices."""
    with sqlite3.connect(out / "station" / "roll" / "roll.db") as roll:
        on_roll = {key.hex() for (key,) in roll.execute("SELECT voter_key FROM voters")}
    cards = TestCa(out / "test-ca").issued_cards()
    terminal_config = json.loads((out / "terminals" / "T01" / "config.json").read_text())
    assert "roll_salt" not in terminal_config["card"], "only the roll holds the roll salt"
    roll_salt = Station.open(out / "station").roll_salt()
    assert on_roll == {voter_key_of(roll_salt, card.auth.certificate) for card in cards}
    forbidden = set(on_roll)
    for card in cards:
        forbidden.add(card.card_id)
        for mode in AuthMode:
            certificate = card.credential(mode).certificate
            forbidden |= {attribute.value for attribute in certificate.subject if isinstance(attribute.value, str)
                          and len(attribute.value) >= 3}  # fmt: skip
            forbidden |= {str(certificate.serial_number), f"{certificate.serial_number:x}"}
    forbidden |= {"試験 太郎", "東京都千代田区霞が関二丁目1番2号"}  # the test cards' holder name and address
    # The PIN is four digits, which occur by chance inside hex hashes and signatures; what must
    # not occur is the PIN as a value: a JSON string or number.
    forbidden |= {f'"{PIN}"', f":{PIN},", f":{PIN}}}"}
    for contest in demo_manifest().contests:
        forbidden.add(contest.id)
        for selection in contest.selections:
            forbidden |= {selection.id, *selection.name.values()}
    return forbidden


def check_audit_logs(out: Path) -> None:
    logs = audit_logs(out)
    for name, (log, public_key) in logs.items():
        result = CliRunner().invoke(audit_log, ["verify", str(log), "--key", str(public_key)])
        assert result.exit_code == 0, f"{name}: {result.output}"
        assert kinds(log)["software_started"] == 1 and kinds(log)["software_stopped"] == 1, name

    forbidden = forbidden_strings(out)
    for name, (log, _) in logs.items():
        assert find_forbidden(log, forbidden) == [], name

    for terminal in TERMINALS:
        log = logs[terminal][0]
        counted = kinds(log)
        # Ballots only as counts per interval (format 2): no entry names or dates a ballot.
        cast = sum(entry.data["count"] for entry in entries(log) if entry.kind == "ballots_cast")
        assert cast == VOTERS_PER_BOOTH, terminal
        assert not {"ballot_cast", "ballot_sealed", "ballot_challenged", "ballot_acknowledged"} & set(counted), terminal
        assert counted["session_started"] == counted["session_ended"] == VOTERS_PER_BOOTH, terminal
        outcomes = {entry.data["outcome"] for entry in entries(log) if entry.kind == "session_ended"}
        assert outcomes == {"cast"}, terminal

    ledger = entries(logs["ledger"][0])
    batches = [e.data for e in ledger if e.kind == "batch_committed"]
    assert sum(batch["entries"] for batch in batches) == 9  # 6 cast, 3 challenged
    assert [batch["position"] for batch in batches] == list(itertools.accumulate(batch["entries"] for batch in batches))
    assert all(batch["entries"] >= demo_manifest().batch_min for batch in batches[:-1])
    assert not any(e.kind == "ballot_acknowledged" for e in ledger)
    reports = {e.data["report"]: e.data["position"] for e in ledger if e.kind == "report_signed"}
    assert reports == {"zero_report": 0, "closing_report": 9}
    assert any(e.kind == "configuration_changed" and e.data["setting"] == "station.crl" for e in ledger)

    # Nothing per check-in, only totals (docs/audit-log.md, "The roll's audit log").
    roll = entries(logs["roll"][0])
    assert {e.kind for e in roll} == {
        "log_created", "software_started", "check_ins_counted", "polls_opened", "polls_closed", "software_stopped",
    }  # fmt: skip
    counts = [e.data for e in roll if e.kind == "check_ins_counted"]
    assert counts[-1]["checked_in"] == 3 * VOTERS_PER_BOOTH


def test_private_pcscd_works_from_a_relative_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pcscd refuses a relative --config, and ./demo.sh's default folder is relative (out/…)."""
    from appliance.simulators.pcscd import PrivatePcscd

    monkeypatch.chdir(tmp_path)
    assert PrivatePcscd(Path("out/pcscd")).workdir == tmp_path / "out" / "pcscd"
