"""Printable zero, closing and incident reports: HTML, and PDF rendered by the Chromium the
project already uses (``station-hub report STATION zero|closing|incident --pdf OUT``).

The ledger's **signed JSON stays the authoritative report**: a page renders it, nothing more.
Every figure printed is read from the signed body (verified with the ledger's certificate
before anything is drawn), except the print time and the manifest's contest and candidate
names. The page carries a QR code of the signed JSON's exact bytes, so anyone can scan the
paper and check the signature; and lines for the two officials' signatures.

- **zero**: every terminal at 0 ballots and every selection of every contest at 0 (the ballot
  box is empty when the polls open).
- **closing**: ballots per terminal (with late ones and terminals declared unreachable),
  spoiled, the roll's check-ins beside the ballots, and per contest the ballots that carry it
  (choices stay sealed at the station; only the trustees decrypt totals, centrally).
- **incident**: what the closing report records that needs the officials' account: terminals
  declared unreachable (with the last ballot the ledger holds from each), late ballots, a
  difference between check-ins and ballots; with space to describe it by hand.

PDF: Playwright's ``page.pdf`` with ``executable_path`` Debian's Chromium when Playwright is
installed (development, tests); otherwise the same Chromium's own ``--print-to-pdf``, so an
installed hub needs no extra Python package.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from election.chain import verify_document
from election.encoding import canonical_bytes, parse_json
from election.errors import ElectionError
from election.manifest import Manifest
from infra.errors import SiteError

KINDS = ("zero", "closing", "incident")
STATEMENT_OF = {"zero": "zero_report", "closing": "closing_report", "incident": "closing_report"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
TITLES = {
    "zero": ("Zero report", "ゼロ報告"),
    "closing": ("Closing report", "閉鎖報告"),
    "incident": ("Incident report", "事故報告"),
}


class ReportError(SiteError):
    """The document is not a valid signed report of this station and election."""


def fingerprint(hex_digest: str, groups: int = 4) -> str:
    """A short, readable prefix of a hash: ``3F2A-91C0-77DE-0B14``."""
    text = hex_digest[: 4 * groups].upper()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


@dataclass(frozen=True)
class SignedReport:
    """A ledger statement whose signature and station were checked."""

    document: dict[str, Any]
    body: dict[str, Any]

    @property
    def json_bytes(self) -> bytes:
        return canonical_bytes(self.document)


def check_report(payload: bytes | dict[str, Any], kind: str, station_id: str, manifest: Manifest,
                 ledger_key: Ed25519PublicKey) -> SignedReport:  # fmt: skip
    """Verify a signed zero or closing report before anything is drawn from it."""
    try:
        document = parse_json(payload, max_size=1_000_000) if isinstance(payload, bytes) else payload
        body = verify_document(document, ledger_key)
    except ElectionError as error:
        raise ReportError(f"not a signed report of this station's ledger: {error}") from None
    if body.get("type") != STATEMENT_OF[kind]:
        raise ReportError(f"expected a {STATEMENT_OF[kind]}, got {body.get('type')!r}")
    if body.get("station_id") != station_id:
        raise ReportError(f"a report of station {body.get('station_id')!r}, not {station_id!r}")
    if body.get("base_hash") != manifest.base_hash.hex():
        raise ReportError("a report of another election")
    return SignedReport(document, body)


def _e(value: object) -> str:
    return html.escape(str(value))


def _both(name: dict[str, str]) -> str:
    return f'{_e(name.get("en", ""))} <span lang="ja">{_e(name.get("ja", ""))}</span>'


def _table(head: Iterable[str], rows: Iterable[Iterable[object]], numeric: Collection[int] = (1,)) -> str:
    """A table; the columns in ``numeric`` are right-aligned counts."""
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = []
    for row in rows:
        items = list(row)
        body.append("<tr>" + "".join(
            f'<td class="{"num" if i in numeric else ""}">{v}</td>' for i, v in enumerate(items)
        ) + "</tr>")  # fmt: skip
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _qr_svg(data: bytes) -> str:
    return segno.make(data, error="m", micro=False).svg_inline(scale=2, border=2)


def _signature_lines(body: dict[str, Any] | None = None) -> str:
    """Lines for both officials' hand signatures; beside each, the card that signed the command
    (its certificate's fingerprint, as in the signed report: no name is printed from a card)."""
    cards = {o.get("function"): o for o in (body or {}).get("authorized_by", {}).get("officials", [])}
    command = (body or {}).get("authorized_by", {}).get("command")
    line = '<div class="sign"><div class="role">{}</div><div class="field">Name 氏名</div>' \
           '<div class="field">Signature 署名</div><div class="field">Card / ID 証明{}</div></div>'  # fmt: skip

    def card(function: str) -> str:
        official = cards.get(function)
        if not official:
            return ""
        return (f'<br><span class="fp">{fingerprint(official.get("certificate_sha256", ""))}</span>'
                f" signed “{_e(command)}”")  # fmt: skip

    return (
        '<section class="signatures"><h2>Officials 立会人</h2>'
        + line.format("Station manager 投票管理者", card("station_manager"))
        + line.format("Witness 投票立会人", card("witness"))
        + (
            '<p class="note">Both cards signed the polls command (PIN checked by each card); the ledger '
            "verified the signatures and keeps them in the signed report. "
            "両カードの署名は署名付き報告に含まれます。</p>"
            if cards
            else ""
        )
        + "</section>"
    )


CSS = """
@page { size: A4; margin: 12mm 13mm 12mm 13mm; }
body { font-family: "Noto Sans CJK JP", "Noto Sans", sans-serif; font-size: 9.5pt; color: #000; margin: 0; }
h1 { font-size: 17pt; margin: 0 0 2mm 0; }
h2 { font-size: 11pt; margin: 4mm 0 1.5mm 0; border-bottom: 1px solid #000; }
h3 { font-size: 10pt; margin: 2mm 0 1mm 0; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5mm; }
th, td { border: 1px solid #444; padding: 0.6mm 2mm; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; width: 22mm; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 6mm; }
.meta td:first-child { width: 45%; }
.top { display: flex; justify-content: space-between; gap: 6mm; }
.qr { text-align: center; font-size: 8pt; }
.qr svg { width: 46mm; height: 46mm; }
.sign { display: grid; grid-template-columns: 52mm 1fr 1fr 1fr; gap: 3mm; margin: 3mm 0; align-items: end; }
.sign .field { border-bottom: 1px solid #000; height: 9mm; font-size: 7.5pt; color: #444; }
.lines div { border-bottom: 1px solid #888; height: 7mm; }
.note { font-size: 8.5pt; color: #333; }
.fp { font-family: "Noto Sans Mono", monospace; font-weight: bold; letter-spacing: 0.5px; }
section { break-inside: avoid; }
"""


def render_html(kind: str, report: SignedReport, manifest: Manifest, printed_at: datetime) -> str:
    """The printable page of ``report`` (its kind: zero, closing or incident)."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    body = report.body
    en, ja = TITLES[kind]
    terminals: dict[str, int] = body.get("terminals", {})
    meta = [
        ("Election 選挙", _both(manifest.name)),
        ("Station 投票所", _e(body["station_id"])),
        ("Printed at 印刷日時", _e(printed_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))),
        ("Chain position 位置", _e(body["position"])),
        ("Chain head 末尾ハッシュ", f'<span class="fp">{fingerprint(body["head_hash"])}</span>'),
        ("Signature 署名", f'<span class="fp">{fingerprint(report.document["signature"])}</span>'
         " (the ledger's, verified)"),
    ]  # fmt: skip
    parts = [
        f"<h1>{en} <span lang='ja'>{ja}</span></h1>",
        '<div class="top"><div style="flex:1">',
        _table(["", ""], meta, numeric=()).replace("<table>", '<table class="meta">'),
        '</div><div class="qr">',
        _qr_svg(report.json_bytes),
        "<div>Signed JSON (authoritative)<br>署名付きJSON（正本）</div></div></div>",
    ]
    if kind == "zero":
        parts.append(_zero(body, manifest, terminals))
    elif kind == "closing":
        parts.append(_closing(body, manifest, terminals))
    else:
        parts.append(_incident(body, terminals))
    parts.append(_signature_lines(body))
    parts.append(
        '<p class="note">This page renders the ledger\'s signed report; the signed JSON (the QR code, '
        "and the file published on the station broker) is the authoritative form. The print time is "
        "not part of the signed report. 本紙は署名付き報告の写しであり、正本は署名付きJSONです。</p>"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{en} {_e(body["station_id"])}</title>'
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )


def _terminal_rows(terminals: dict[str, int]) -> list[tuple[str, int]]:
    return [(_e(t), n) for t, n in sorted(terminals.items())]


def _zero(body: dict[str, Any], manifest: Manifest, terminals: dict[str, int]) -> str:
    ballots = sum(terminals.values())
    parts = [
        '<div class="grid"><section><h2>Ballot box 投票箱</h2>',
        _table(["", "count 数"], [("Ballots 投票数", ballots), ("Check-ins 受付数", 0)]),
        '<p class="note">The roll issues no token before the polls open: no voter can have checked in.</p>',
        "</section><section><h2>Terminals 端末</h2>",
        _table(["Terminal 端末", "Ballots 投票数"], _terminal_rows(terminals)),
        '</section></div><section><h2>Contests 選挙区 — every selection at zero 全候補 0</h2><div class="grid">',
    ]
    for contest in manifest.contests:
        rows = [(_both(s.name), 0) for s in contest.selections]
        parts.append(f"<div><h3>{_both(contest.name)}</h3>")
        parts.append(_table(["Selection 候補", "Votes 票数"], rows) + "</div>")
    parts.append("</div></section>")
    return "".join(parts)


def _closing(body: dict[str, Any], manifest: Manifest, terminals: dict[str, int]) -> str:
    late: dict[str, int] = body.get("late", {})
    unreachable: dict[str, dict[str, Any]] = body.get("unreachable", {})
    check_ins = body.get("check_ins")
    ballots = body.get("ballots", 0)
    difference = "—" if check_ins is None else check_ins - ballots
    summary = [
        ("Ballots counted 投票数", ballots),
        ("Check-ins (roll) 受付数", "—" if check_ins is None else check_ins),
        ("Check-ins − ballots 差", difference),
        ("Late ballots 遅延票", sum(late.values())),
        ("Spoiled (challenged) 無効（検証）", body.get("spoiled", 0)),
        ("Closed at chain position 閉鎖時位置", body.get("closed_position", body["position"])),
    ]
    rows = []
    for terminal, count in sorted(terminals.items()):
        declared = "declared unreachable 到達不能" if terminal in unreachable else ""
        rows.append((_e(terminal), count, late.get(terminal, 0), declared))
    parts = [
        '<div class="grid"><section><h2>Totals 集計</h2>',
        _table(["", "count 数"], summary),
        "</section><section><h2>Contests 選挙区</h2>",
        _table(
            ["Contest 選挙区", "Ballots 投票数"],
            [(_both(c.name), ballots) for c in manifest.contests],
        ),
        '<p class="note">Every ballot carries every contest. The choices stay encrypted at the station: '
        "per-candidate totals exist only after the trustees decrypt the tally at the central office. "
        "候補者別の票数は中央で復号後に確定します。</p></section></div>",
        "<section><h2>Terminals 端末</h2>",
        _table(["Terminal 端末", "Ballots 投票数", "of which late うち遅延", "Note 備考"], rows, numeric=(1, 2)),
        "</section>",
    ]
    return "".join(parts)


def _incident(body: dict[str, Any], terminals: dict[str, int]) -> str:
    late: dict[str, int] = body.get("late", {})
    unreachable: dict[str, dict[str, Any]] = body.get("unreachable", {})
    check_ins = body.get("check_ins")
    ballots = body.get("ballots", 0)
    items = []
    for terminal, head in sorted(unreachable.items()):
        sealed = head.get("sealed", 0)
        last = "none" if sealed == 0 else f"{sealed} ballot(s) stated, set {fingerprint(head.get('commitment', ''))}"
        items.append((_e(terminal), "declared unreachable at the final close 到達不能と宣言", _e(last)))
    for terminal, count in sorted(late.items()):
        items.append((_e(terminal), f"{count} late ballot(s) chained after the close 遅延票", "counted 集計済み"))
    if check_ins is not None and check_ins != ballots:
        items.append(("—", f"check-ins {check_ins} ≠ ballots {ballots} 受付数と投票数の差",
                      "explain below 下欄に記入"))  # fmt: skip
    if not items:
        items.append(("—", "no incident in the signed closing report 記録なし", ""))
    return "".join([
        "<section><h2>Recorded in the closing report 閉鎖報告の記録</h2>",
        _table(["Terminal 端末", "Incident 事象", "Stated by the device / effect 端末申告・扱い"], items, numeric=()),
        "</section><section><h2>Description 経緯 (by hand 手書き)</h2><div class=\"lines\">",
        "<div></div>" * 8,
        "</div></section>",
    ])  # fmt: skip


def fetch_report(station: Any, operator: str, kind: str, timeout: float = 5.0) -> bytes:
    """The ledger's retained signed report (zero, or closing for closing and incident) as
    published on the station broker, read with operator ``operator``'s certificate."""
    from infra.mqtt import HubClient

    topics = station.topics
    topic = topics.zero_report if kind == "zero" else topics.closing_report
    with HubClient(station, operator).connect() as client:
        client.subscribe(topic)
        try:
            return client.next_message(timeout, lambda m: m.topic == topic and bool(m.payload)).payload
        except SiteError:
            raise ReportError(f"no {STATEMENT_OF[kind]} on the station broker within {timeout} s "
                              f"(are the polls {'open' if kind == 'zero' else 'closed'}?)") from None  # fmt: skip


def write_pdf(page_html: str, out: Path, *, chromium: str | None = None) -> Path:
    """Render ``page_html`` to ``out`` (A4) with Debian's Chromium."""
    executable = chromium or shutil.which("chromium") or CHROMIUM
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return _print_to_pdf(page_html, out, executable)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.set_content(page_html, wait_until="load")
            page.pdf(path=str(out), format="A4", print_background=True, prefer_css_page_size=True)
        finally:
            browser.close()
    return out


def _print_to_pdf(page_html: str, out: Path, executable: str) -> Path:
    """The same Chromium without Playwright (an installed hub): ``--headless --print-to-pdf``."""
    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        source = Path(scratch) / "report.html"
        source.write_text(page_html, encoding="utf-8")
        done = subprocess.run(
            [executable, "--headless", *CHROMIUM_FLAGS, f"--user-data-dir={scratch}/profile",
             "--no-pdf-header-footer", f"--print-to-pdf={out}", source.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    if done.returncode != 0 or not out.exists():
        raise SiteError(f"chromium could not print the report: {done.stderr.strip()[-500:]}")
    return out
