"""Printed reports: the ledger's signed zero, closing and incident reports rendered as PDF by
Debian's Chromium (`station-hub report`), checked with poppler's pdfinfo and pdftotext."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hub_fixtures import Hub

from election.chain import sign_document
from election.encoding import parse_json
from infra.mqtt import HubClient
from station_hub.cli import main
from station_hub.operator import change_polls
from station_hub.report import ReportError, _print_to_pdf, check_report, fingerprint, render_html
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils (scripts/bootstrap.sh)")
CHOICES = {"contest-1": {"candidate-2"}, "contest-2": {"candidate-1"}}


def pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^Pages:\s+(\d+)$", info, re.M)
    assert match, info
    return int(match.group(1))


def text(pdf: Path) -> str:
    """The PDF's text, one table row per line, whitespace runs as one space."""
    raw = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return "\n".join(re.sub(r"\s+", " ", line).strip() for line in raw.splitlines())


def report(station: Station, kind: str, out: Path, *extra: str) -> Path:
    pdf = out / f"{kind}.pdf"
    done = CliRunner().invoke(main, ["report", str(station.directory), kind, "--operator", "op1", "--pdf", str(pdf),
                                     "--html", str(out / f"{kind}.html"), *extra])  # fmt: skip
    assert done.exit_code == 0, done.output
    return pdf


def test_zero_closing_and_incident_reports_print_what_the_ledger_signed(
    hub: Hub, station: Station, voters: list, tmp_path: Path
) -> None:
    with HubClient(station, "op1").connect() as operator:
        zero = change_polls(operator, "open")
    zero_pdf = report(station, "zero", tmp_path, "--json", str(tmp_path / "zero.json"))
    assert parse_json((tmp_path / "zero.json").read_bytes()) == zero  # the authoritative form, byte for byte
    assert pages(zero_pdf) == 1
    page = text(zero_pdf)
    assert "Zero report" in page and "ゼロ報告" in page and "st-1" in page
    assert "Ballots 投票数 0" in page and "Check-ins 受付数 0" in page
    assert "t1 0" in page and "t2 0" in page
    for contest in (1, 2):  # every contest's selections at zero
        assert f"Contest {contest} 選挙区 {contest}" in page
        for candidate in (1, 2, 3):
            assert f"Candidate {candidate} 候補者 {candidate} 0" in page
    assert fingerprint(zero["head_hash"]) in page
    assert "Station manager" in page and "Witness" in page and "Signature" in page
    assert "<svg" in (tmp_path / "zero.html").read_text()  # the QR code of the signed JSON

    with TerminalClient(station, "t1").connect() as t1:
        for voter in voters[:2]:
            ack = t1.submit(t1.submission(t1.seal(CHOICES, t1.check_in(voter))))
            assert ack["result"] == "held"
        t1.check_in(voters[2])  # this voter checked in and left without casting
    with HubClient(station, "op1").connect() as operator:
        closing = change_polls(operator, "close", unreachable=("t1", "t2"), drain_wait=0.2)
    closing_pdf = report(station, "closing", tmp_path)
    assert pages(closing_pdf) == 1
    page = text(closing_pdf)
    assert "Closing report" in page and "閉鎖報告" in page
    assert "Ballots counted 投票数 2" in page and "Check-ins (roll) 受付数 3" in page
    assert "Check-ins − ballots 差 1" in page and "Late ballots 遅延票 0" in page
    assert re.search(r"^t1 2 0 declared unreachable", page, re.M) and re.search(r"^t2 0 0 declared", page, re.M)
    assert "Contest 1 選挙区 1 2" in page and "Contest 2 選挙区 2 2" in page
    assert fingerprint(closing["head_hash"]) in page and f"Chain position 位置 {closing['position']}" in page

    incident_pdf = report(station, "incident", tmp_path)
    assert pages(incident_pdf) == 1
    page = text(incident_pdf)
    assert "Incident report" in page
    assert re.search(r"t1 declared unreachable at the final close.*2 ballot\(s\) stated", page)
    assert re.search(r"t2 declared unreachable at the final close.*none", page)
    assert "check-ins 3 ≠ ballots 2" in page


def test_a_report_is_checked_before_it_is_drawn(station: Station, tmp_path: Path) -> None:
    manifest = station.election().manifest
    key = station.signing_key("ledger")
    body = {"version": 1, "type": "zero_report", "station_id": station.station_id,
            "base_hash": manifest.base_hash.hex(), "position": 0, "head_hash": station.genesis.hex(),
            "terminals": {"t1": 0, "t2": 0}}  # fmt: skip
    signed = sign_document(body, key)
    ledger_key = key.public_key()
    assert check_report(signed, "zero", station.station_id, manifest, ledger_key).body == body
    forged = {**signed, "terminals": {"t1": 5, "t2": 0}}
    with pytest.raises(ReportError, match="signature"):
        check_report(forged, "zero", station.station_id, manifest, ledger_key)
    with pytest.raises(ReportError, match="expected a closing_report"):
        check_report(signed, "closing", station.station_id, manifest, ledger_key)
    with pytest.raises(ReportError, match="not 'st-9'"):
        check_report(signed, "zero", "st-9", manifest, ledger_key)
    # Without Playwright (an installed hub) the same Chromium prints through --print-to-pdf.
    from datetime import datetime

    page = render_html("zero", check_report(signed, "zero", station.station_id, manifest, ledger_key), manifest,
                       datetime.now().astimezone())  # fmt: skip
    pdf = _print_to_pdf(page, tmp_path / "zero.pdf", shutil.which("chromium") or "/usr/bin/chromium")
    assert pages(pdf) == 1 and "Candidate 3 候補者 3 0" in text(pdf)
