"""The observers' site: a static, offline website built from an election record.

:func:`build_site` reads a record (any :class:`~election.record.RecordSource`), runs the
independent verifier over it, and returns every file of the site as ``{relative path: bytes}``;
it writes nothing (``election publish`` writes the files). The site has

- ``index.html``: the election, whether the record verified, and the figures at a glance;
- ``results.html``: each contest's totals with an inline SVG bar chart (names from the
  manifest in Japanese and English, undervotes shown), each chart followed by its table;
- ``stations.html``: per station what its chain holds (cast, late if any, spoiled) beside the
  roll's check-ins from its signed closing report (``stations/<id>/closing.json``) when present;
- ``verification.html``: the verifier's numbered checks, PASS or FAIL, with their problems;
- ``tracker.html``: a voter types a tracking code and finds it, in the browser alone. The codes
  are embedded as JavaScript files ``codes/<XY>.js`` (one per first two characters of the code,
  so a browser loads a small part of a national election's codes), each holding a JSON object
  ``code → [station, batch, kind]``, and ``codes/index.js`` lists which of them exist. The
  tracker reads what people type exactly as ``election lookup`` does
  (:func:`election.chain.normalise_tracking_code`), and names I, O, 0 and 1 as typos.

A rehearsal record (manifest ``mode: "rehearsal"``, batches smaller than a real election's)
says so on every page.

No page loads anything from elsewhere (no CDN, no font, no chart library, no server): it works
from ``file://`` and offline. The same record gives byte-identical files (nothing is dated), so
anyone can rebuild the site from the record and compare it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from election.chain import ChainEntry
from election.errors import ElectionError
from election.manifest import Contest, Manifest
from election.record import MANIFEST, RESULTS, RecordSource
from election.stations import CHAIN_FILE, CLOSING_FILE, MAX_CHAIN_FILE, STATIONS, parse_chain_lines
from election.tally import Results
from election.verify import CHECKS, VerificationReport, verify_record

SITE_ASSETS = ("style.css", "tracker.js")
"""Static files shipped in ``election/site/`` and copied as they are."""
SHARD_PREFIX = 2
"""Characters of the tracking code that name its shard file (32² = 1,024 shards at most)."""

CHECK_TITLES_JA = {
    1: "マニフェストが正しい形式で、そのハッシュが基底ハッシュである",
    2: "コンテキストが正しい形式で、マニフェストの基底ハッシュと管理者を示している",
    3: "各管理者のコミットメントに有効な知識証明がある",
    4: "共同公開鍵が管理者の第一コミットメントの和である",
    5: "端末一覧が正しい形式である",
    6: "すべての暗号化票が正しい形式で、この選挙のものである",
    7: "すべての暗号化票の端末署名が検証できる",
    8: "すべての端末の最終申告が署名どおりで、その端末の票の数と集合にちょうど一致する",
    9: "票IDとトークンはどれも二度使われていない",
    10: "すべての選択の証明（0か1を暗号化）が検証できる",
    11: "すべての選挙区の証明（上限以下）が検証できる",
    12: "破棄された票の開示がその票を再現し、破棄票は集計されていない",
    13: "暗号化集計がちょうど投じられた票の和である",
    14: "復号シェアが定足数以上の管理者からのもので、検証できる",
    15: "公表された結果が集計の復号結果と一致する",
    16: "各投票所のハッシュ順の一括の連鎖が途切れず、台帳の署名付きチェックポイントで終わる",
    17: "すべての票がちょうど一つの投票所の連鎖の一つの一括にあり、連鎖のすべての票が記録にある",
    18: "投じられた票はすべて投票所の名簿が署名したトークンを使い、破棄票はトークンを持たない",
    19: "記録フォルダには文書化されたファイルとフォルダだけがある",
    20: (
        "照合表の数値が記録と一致し、期日前・共通投票所の名簿鍵は市区町村のトークン鍵で、"
        "そのトークンはすべてその鍵で検証できる"
    ),
}

KIND_TEXT = {
    "cast": ("集計されました", "counted in the tally"),
    "late": ("締切後に連鎖に追加され、集計されました", "chained late (after the polls closed), counted"),
    "spoiled": ("確認のため開示・破棄された票です（集計されません）", "challenged and spoiled: not counted"),
}

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'"
"""Every page's Content-Security-Policy: only the site's own files, no inline script."""

TEXTS = {
    "footer": (
        "この公開サイトは選挙記録から生成されました。記録は誰でも election verify で再検証できます。",
        "This site was generated from the election record; anyone can re-check the record with election verify.",
    ),
    "tracker-invite": (
        "投票後に受け取った追跡コードで、あなたの票が記録にあることを確認できます。",
        "With the tracking code you received after voting, you can check that your ballot is in the record.",
    ),
    "chart-caption": (
        "棒グラフ。数値は下の表にもあります。割合は集計された票数に対するものです。",
        "Bar chart; the same figures are in the table below. Percentages are of the ballots counted.",
    ),
    "closing-unverified": (
        "締切報告に名簿の数がないか、検証できません（項目16）",
        "closing report without a verified roll count (check 16)",
    ),
    "tracker-how": (
        "投票後に表示された追跡コード（16文字）を入力してください。"
        "大文字・小文字、空白、ハイフン、全角文字はどれでも構いません。"
        "追跡コードには I、O、0、1 は使われません。",
        "Type the 16-character tracking code you were shown after voting. Upper or lower case, spaces, "
        "hyphens and full-width characters are all fine. A tracking code never contains I, O, 0 or 1.",
    ),
    "rehearsal": (
        "リハーサル：これは本番の選挙ではありません。一括の最小票数が本番より小さく設定されています。",
        "REHEARSAL: this is not a real election; its batches may be smaller than a real election allows.",
    ),
    "noscript": (
        "このページには JavaScript が必要です。記録そのものでは election lookup RECORD CODE で探せます。",
        "This page needs JavaScript; in the record itself, election lookup RECORD CODE finds a code.",
    ),
}
"""The fixed sentences of the site, Japanese and English."""

Progress = Callable[[str, int, int], None]


@dataclass(slots=True)
class StationSummary:
    station_id: str
    cast: int = 0
    late: int = 0
    spoiled: int = 0
    closing: bool = False
    """Whether the station's folder holds a closing report."""
    check_ins: int | None = None
    """The roll's check-ins from a closing report that verified (None otherwise)."""
    problem: str | None = None
    """Why the chain could not be read in full (its counts are then what was readable)."""

    @property
    def counted(self) -> int:
        return self.cast + self.late


@dataclass(slots=True)
class SiteData:
    """Everything the pages show, gathered from the record and the verifier's report."""

    report: VerificationReport
    manifest: Manifest | None = None
    manifest_problem: str | None = None
    results: Results | None = None
    results_problem: str | None = None
    stations: list[StationSummary] = field(default_factory=list)
    codes: dict[str, list[Any]] = field(default_factory=dict)


# -- gathering ---------------------------------------------------------------------------------


def _read_manifest(source: RecordSource, data: SiteData) -> None:
    try:
        data.manifest = Manifest.from_json(source.read(MANIFEST))
    except FileNotFoundError:
        data.manifest_problem = f"{MANIFEST} is missing"
    except (ElectionError, OSError) as exc:
        data.manifest_problem = f"{MANIFEST}: {exc}"


def _read_results(source: RecordSource, data: SiteData) -> None:
    if data.manifest is None:
        data.results_problem = "no valid manifest to read the results by"
        return
    try:
        data.results = Results.from_json(source.read(RESULTS), data.manifest)
    except FileNotFoundError:
        data.results_problem = f"{RESULTS} is missing"
    except (ElectionError, OSError) as exc:
        data.results_problem = f"{RESULTS}: {exc}"


def _chain(source: RecordSource, station_id: str, summary: StationSummary) -> Iterator[ChainEntry]:
    name = f"{STATIONS}/{station_id}/{CHAIN_FILE}"
    try:
        yield from parse_chain_lines(source.read_bytes(name, max_size=MAX_CHAIN_FILE))
    except FileNotFoundError:
        summary.problem = f"{name} is missing"
    except (ElectionError, OSError) as exc:
        summary.problem = f"{name}: {exc}"


def _read_stations(source: RecordSource, data: SiteData) -> None:
    for station_id in source.folders(STATIONS):
        summary = StationSummary(station_id)
        for entry in _chain(source, station_id, summary):
            if entry.kind in ("cast", "late", "spoiled"):
                setattr(summary, entry.kind, getattr(summary, entry.kind) + 1)
            data.codes[entry.tracking_code] = [station_id, entry.batch, entry.kind]
        summary.closing = CLOSING_FILE in (source.listing(f"{STATIONS}/{station_id}") or {})
        verified = data.report.stations.get(station_id)
        summary.check_ins = verified.check_ins if verified is not None else None
        data.stations.append(summary)


def gather(
    source: RecordSource,
    report: VerificationReport | None = None,
    *,
    workers: int = 1,
    progress: Progress | None = None,
) -> SiteData:
    """Verify the record (unless ``report`` is given) and read what the site shows."""
    if report is None:
        ballots = (lambda done, total: progress("checking ballots", done, total)) if progress else None
        report = verify_record(source, ballots, workers=workers)
    data = SiteData(report)
    _read_manifest(source, data)
    _read_results(source, data)
    _read_stations(source, data)
    return data


# -- HTML helpers ------------------------------------------------------------------------------


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def bi(ja: str, en: str, tag: str = "span") -> str:
    """Japanese then English, each marked with its language (read aloud in the right voice)."""
    return f'<{tag} lang="ja" class="ja">{_e(ja)}</{tag}> <{tag} lang="en" class="en">{_e(en)}</{tag}>'


def say(key: str) -> str:
    return bi(*TEXTS[key])


def _problem(ja: str, en: str, detail: str | None) -> str:
    return f'<p class="problem">{bi(ja, en)} <code>{_e(detail or "")}</code></p>'


def _name(names: dict[str, str]) -> str:
    return bi(names["ja"], names["en"])


def _number(value: int) -> str:
    return f"{value:,}"


def _percent(part: int, whole: int) -> str:
    return "–" if whole == 0 else f"{100 * part / whole:.1f} %"


PAGES = (
    ("index.html", "概要", "Overview"),
    ("results.html", "開票結果", "Results"),
    ("stations.html", "投票所", "Stations"),
    ("verification.html", "検証", "Verification"),
    ("tracker.html", "投票の確認", "Ballot tracker"),
)


def _page(data: SiteData, path: str, body: str, *, scripts: tuple[str, ...] = ()) -> bytes:
    title_ja, title_en = next((ja, en) for p, ja, en in PAGES if p == path)
    election = data.manifest.name if data.manifest else {"ja": "選挙記録", "en": "Election record"}
    current = ' aria-current="page"'
    nav = "".join(f'<li><a href="{p}"{current if p == path else ""}>{bi(ja, en)}</a></li>' for p, ja, en in PAGES)
    status = _status_banner(data.report)
    if data.manifest is not None and data.manifest.rehearsal:
        status += f'<div class="status rehearsal" role="note"><p>{say("rehearsal")}</p></div>'
    script_tags = "".join(f'<script src="{_e(s)}"></script>' for s in scripts)
    document = f"""<!DOCTYPE html>
<html lang="ja">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<title>{_e(title_ja)} / {_e(title_en)} — {_e(election["ja"])} / {_e(election["en"])}</title>
<link rel="stylesheet" href="style.css">
</head>
<body>
<a class="skip" href="#main">{bi("本文へ", "Skip to content")}</a>
<header>
<p class="election">{_name(election)}</p>
<nav aria-label="Pages / ページ"><ul>{nav}</ul></nav>
</header>
{status}
<main id="main">
<h1>{bi(title_ja, title_en)}</h1>
{body}
</main>
<footer><p>{say("footer")}</p></footer>
{script_tags}
</body>
</html>
"""
    return document.encode("utf-8")


def _status_banner(report: VerificationReport) -> str:
    failed = report.failed_checks()
    if not failed:
        text = bi(f"記録は検証済みです：全{len(CHECKS)}項目に合格",
                  f"The record verifies: all {len(CHECKS)} checks pass")  # fmt: skip
        return f'<div class="status pass" role="status"><p>✔ {text}</p></div>'
    numbers = ", ".join(map(str, failed))
    text = bi(
        f"検証失敗：項目 {numbers} が不合格です。この記録の結果は検証されていません。",
        f"VERIFICATION FAILED: check{'s' if len(failed) > 1 else ''} {numbers}. "
        "The results in this record are not verified.",
    )
    link = f'<a href="verification.html">{bi("詳細", "Details")}</a>'
    return f'<div class="status fail" role="alert"><p>✘ {text} {link}</p></div>'


# -- pages -------------------------------------------------------------------------------------


def _index(data: SiteData) -> bytes:
    rows = []
    if data.results is not None:
        rows.append((bi("集計された票", "Ballots counted"), _number(data.results.ballot_count)))
    rows.append((bi("破棄された票（確認用）", "Challenged and spoiled ballots"),
                 _number(sum(s.spoiled for s in data.stations))))  # fmt: skip
    late = sum(s.late for s in data.stations)
    if late:
        rows.append((bi("締切後に届いた票（集計済み）", "Late ballots (counted)"), _number(late)))
    rows.append((bi("投票所", "Stations"), _number(len(data.stations))))
    if data.manifest is not None:
        rows.append((bi("選挙の基底ハッシュ", "Election base hash"), f"<code>{data.manifest.base_hash.hex()}</code>"))
    rows.append((bi("追跡コード", "Tracking codes"), _number(len(data.codes))))
    passed = sum(1 for o in data.report.outcomes.values() if o.passed)
    rows.append((bi("検証項目の合格", "Verifier checks passed"), f"{passed} / {len(CHECKS)}"))
    table = "".join(f'<tr><th scope="row">{k}</th><td class="num">{v}</td></tr>' for k, v in rows)
    problem = ""
    if data.manifest_problem:
        problem = _problem("マニフェストを読めません：", "The manifest cannot be read: ", data.manifest_problem)
    links = "".join(f'<li><a href="{p}">{bi(ja, en)}</a></li>' for p, ja, en in PAGES[1:])
    body = f"""{problem}
<table class="summary"><caption>{bi("概要", "At a glance")}</caption><tbody>{table}</tbody></table>
<ul class="pages">{links}</ul>
<p>{say("tracker-invite")}</p>
"""
    return _page(data, "index.html", body)


def _chart(contest: Contest, totals: list[int], undervotes: int, ballots: int) -> str:
    """A horizontal bar chart as inline SVG with a title and a description of every bar."""
    labels = [(s.name["ja"], s.name["en"]) for s in contest.selections]
    blank = _undervote_label(contest)
    values = [*totals, undervotes]
    rows = [*labels, blank]
    scale = max([*values, 1])
    width, label_h, bar_h, gap, left, right = 720, 40, 26, 14, 8, 150
    row_h = label_h + bar_h + gap
    height = row_h * len(rows) + gap
    uid = f"chart-{contest.id}"
    desc = "; ".join(f"{ja} / {en}: {value}" for (ja, en), value in zip(rows, values, strict=True))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{uid}-title {uid}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{uid}-title">{_e(contest.name["ja"])} / {_e(contest.name["en"])}</title>',
        f'<desc id="{uid}-desc">{_e(desc)}</desc>',
        f'<defs><pattern id="{uid}-hatch" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect class="hatch-bg" width="8" height="8"/>'
        '<rect class="hatch" width="3" height="8"/></pattern></defs>',
    ]
    for i, ((ja, en), value) in enumerate(zip(rows, values, strict=True)):
        y = gap + i * row_h
        bar = round((width - left - right) * value / scale)
        under = i == len(rows) - 1
        fill = f' fill="url(#{uid}-hatch)"' if under else ""
        parts.append(
            f'<text class="label" x="{left}" y="{y + 17}"><tspan lang="ja">{_e(ja)}</tspan>'
            f'<tspan lang="en" class="en" dx="12">{_e(en)}</tspan></text>'
            f'<rect class="{"under" if under else "bar"}"{fill} x="{left}" y="{y + label_h - 14}" '
            f'width="{max(bar, 2)}" height="{bar_h}"/>'
            f'<text class="value" x="{left + max(bar, 2) + 8}" y="{y + label_h + 4}">'
            f"{_number(value)} ({_percent(value, ballots)})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _undervote_label(contest: Contest) -> tuple[str, str]:
    if contest.limit == 1:
        return "白票（選択なし）", "Blank: no choice (undervotes)"
    return "使われなかった選択枠", "Unused choices (undervotes)"


def _results(data: SiteData) -> bytes:
    if data.manifest is None or data.results is None:
        reason = data.results_problem or data.manifest_problem or ""
        body = _problem("結果を表示できません：", "The results cannot be shown: ", reason)
        return _page(data, "results.html", body)
    ballots = data.results.ballot_count
    sections = []
    for contest in data.manifest.contests:
        totals = [data.results.totals[contest.id, s.id] for s in contest.selections]
        undervotes = contest.limit * ballots - sum(totals)
        limit_text = bi(f"定数 {contest.limit}（1票につき最大 {contest.limit} 人を選択）",
                        f"Choose up to {contest.limit} per ballot")  # fmt: skip
        rows = "".join(
            f'<tr><th scope="row">{_name(s.name)}</th><td class="num">{_number(t)}</td>'
            f'<td class="num">{_percent(t, ballots)}</td></tr>'
            for s, t in zip(contest.selections, totals, strict=True)
        )
        ja, en = _undervote_label(contest)
        rows += (f'<tr class="under"><th scope="row">{bi(ja, en)}</th><td class="num">{_number(undervotes)}</td>'
                 f'<td class="num">{_percent(undervotes, ballots)}</td></tr>')  # fmt: skip
        sections.append(f"""<section class="contest" id="{_e(contest.id)}" aria-labelledby="{_e(contest.id)}-h">
<h2 id="{_e(contest.id)}-h">{_name(contest.name)}</h2>
<p class="limit">{limit_text}</p>
<figure>{_chart(contest, totals, undervotes, ballots)}
<figcaption>{say("chart-caption")}</figcaption>
</figure>
<table class="totals"><caption>{_name(contest.name)}</caption>
<thead><tr><th scope="col">{bi("候補・選択肢", "Choice")}</th><th scope="col">{bi("得票", "Votes")}</th>
<th scope="col">{bi("割合", "Share")}</th></tr></thead>
<tbody>{rows}</tbody>
<tfoot><tr><th scope="row">{bi("集計された票", "Ballots counted")}</th>
<td class="num">{_number(ballots)}</td><td></td></tr></tfoot>
</table>
</section>""")
    explain = bi(
        "白票・使われなかった選択枠は、集計された票数×定数から得票の合計を引いたものです。",
        "Undervotes are the choices voters left unused: ballots counted × choices allowed − votes.",
    )
    trustees = ", ".join(data.results.trustees_present)
    who = bi("合計を復号した管理者：", "Trustees who decrypted the totals: ")
    body = f'<p>{explain}</p>{"".join(sections)}<p class="meta">{who} {_e(trustees)}</p>'
    return _page(data, "results.html", body)


def _stations(data: SiteData) -> bytes:
    show_late = any(s.late or s.closing for s in data.stations)
    head = [bi("投票所", "Station"), bi("投票", "Cast")]
    if show_late:
        head.append(bi("締切後", "Late"))
    head += [bi("集計", "Counted"), bi("破棄（確認用）", "Spoiled"), bi("受付（名簿）", "Check-ins (roll)")]
    rows = []
    for s in data.stations:
        cells = [f'<th scope="row"><code>{_e(s.station_id)}</code></th>', f'<td class="num">{_number(s.cast)}</td>']
        if show_late:
            cells.append(f'<td class="num">{_number(s.late)}</td>')
        cells += [f'<td class="num">{_number(s.counted)}</td>', f'<td class="num">{_number(s.spoiled)}</td>']
        if s.check_ins is not None:
            differs = s.check_ins != s.counted
            note = f' <span class="note">{bi("差あり", "differs")}</span>' if differs else ""
            cells.append(f'<td class="num">{_number(s.check_ins)}{note}</td>')
        elif s.closing:
            cells.append(f"<td>{say('closing-unverified')}</td>")
        else:
            cells.append(f"<td>{bi('締切報告なし', 'no closing report')}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
        if s.problem:
            rows.append(f'<tr class="problem-row"><td colspan="{len(head)}"><span class="problem">'
                        f"{bi('連鎖を最後まで読めません：', 'The chain cannot be read in full: ')}</span> "
                        f"<code>{_e(s.problem)}</code></td></tr>")  # fmt: skip
    thead = "".join(f'<th scope="col">{h}</th>' for h in head)
    explain = bi(
        "各投票所の台帳の連鎖にある票の数です。受付数は投票所の署名付き締切報告（名簿の集計）からのものです。"
        "受付したが投票しなかった有権者がいるため、集計は受付数以下になります。",
        "What each station's ledger chain holds. Check-ins are the roll's count from the station's signed closing "
        "report; a voter may check in and leave, so ballots counted may be fewer, never more.",
    )
    body = f"""<p>{explain}</p>
<table class="stations"><caption>{bi("投票所ごとの票数", "Ballots per station")}</caption>
<thead><tr>{thead}</tr></thead><tbody>{"".join(rows)}</tbody></table>"""
    return _page(data, "stations.html", body)


def _verification(data: SiteData) -> bytes:
    items = []
    for check in CHECKS:
        outcome = data.report.outcomes[check.number]
        mark = "PASS" if outcome.passed else "FAIL"
        ja = CHECK_TITLES_JA.get(check.number)
        title = bi(ja, check.title) if ja else f'<span lang="en">{_e(check.title)}</span>'
        problems = ""
        if not outcome.passed:
            listed = "".join(f'<li lang="en"><code>{_e(p)}</code></li>' for p in outcome.problems)
            more = outcome.problem_count - len(outcome.problems)
            if more > 0:
                listed += f"<li>{bi(f'ほか {more} 件', f'… and {more} more')}</li>"
            problems = f'<ul class="problems" aria-label="problems">{listed}</ul>'
        items.append(
            f'<li class="check {mark.lower()}" id="check-{check.number}">'
            f'<span class="mark" aria-label="{mark}">{mark}</span> <span class="number">{check.number}.</span> '
            f"{title}{problems}</li>"
        )
    explain = bi(
        f"独立した検証プログラムが記録のファイルだけから {data.report.ballots_checked} 票を再確認しました。"
        "問題の説明は英語です。",
        f"The independent verifier re-checked {data.report.ballots_checked} ballots from the record's files alone "
        "(problems are described in English).",
    )
    body = f"""<p>{explain}</p>
<ol class="checks">{"".join(items)}</ol>
<p>{bi("自分で確かめるには：", "To check it yourself: ")} <code>election verify RECORD</code></p>"""
    return _page(data, "verification.html", body)


def _tracker(data: SiteData) -> bytes:
    holds = bi(
        f"このサイトには {len(data.codes)} 件の追跡コードが含まれています。"
        "検索はこのブラウザの中だけで行われ、どこにも送信されません。",
        f"This site holds {len(data.codes)} tracking codes. "
        "The search runs in this browser only; nothing is sent anywhere.",
    )
    body = f"""<p>{say("tracker-how")}</p>
<form id="track-form" class="tracker" autocomplete="off">
<label for="code">{bi("追跡コード", "Tracking code")}</label>
<input id="code" name="code" type="text" inputmode="text" autocapitalize="characters" spellcheck="false"
 placeholder="ABCD-EFGH-JKLM-NPQR" aria-describedby="code-help">
<p id="code-help" class="help">{bi("例：", "e.g. ")} <code>X66L-MJWE-74KT-PRJQ</code></p>
<button id="find" type="submit">{bi("探す", "Find")}</button>
</form>
<div id="answer" class="answer" role="status" aria-live="polite"></div>
<noscript><p class="problem">{say("noscript")}</p></noscript>
<p>{holds}</p>"""
    return _page(data, "tracker.html", body, scripts=("tracker.js", "codes/index.js"))


def _script_json(value: Any) -> str:
    """JSON safe to place in a script file (no ``</script>``, no U+2028/9 surprises)."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _code_files(data: SiteData) -> dict[str, bytes]:
    shards: dict[str, dict[str, list[Any]]] = {}
    for code, where in data.codes.items():
        shards.setdefault(code[:SHARD_PREFIX], {})[code] = where
    files = {
        f"codes/{prefix}.js": f"trackingShard({_script_json(prefix)},{_script_json(codes)});\n".encode("ascii")
        for prefix, codes in sorted(shards.items())
    }
    texts = {kind: {"ja": ja, "en": en} for kind, (ja, en) in KIND_TEXT.items()}
    files["codes/index.js"] = (
        f"trackingIndex({_script_json(sorted(shards))},{_script_json(len(data.codes))},{_script_json(texts)});\n"
    ).encode("ascii")
    return files


def _asset(name: str) -> bytes:
    return resources.files("election.site").joinpath(name).read_bytes()


def render(data: SiteData) -> dict[str, bytes]:
    """Every file of the site from gathered data."""
    files = {
        "index.html": _index(data),
        "results.html": _results(data),
        "stations.html": _stations(data),
        "verification.html": _verification(data),
        "tracker.html": _tracker(data),
    }
    files.update(_code_files(data))
    for name in SITE_ASSETS:
        files[name] = _asset(name)
    return files


def build_site(
    source: RecordSource,
    report: VerificationReport | None = None,
    *,
    workers: int = 1,
    progress: Progress | None = None,
) -> dict[str, bytes]:
    """The observers' site of a record as ``{relative path: bytes}`` (nothing is written).

    The verifier runs over the record first (``workers`` processes) unless ``report`` is given;
    a record that fails verification still gets its site, which shows every failed check on
    every page. A file that cannot be read is shown as a problem, never raised."""
    return render(gather(source, report, workers=workers, progress=progress))


__all__ = ["SiteData", "build_site", "gather", "render"]
