"""``election publish``: the observers' static site, read back as HTML and clicked in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page, expect, sync_playwright

from election.chain import (
    TRACKING_ALPHABET,
    ChainState,
    Checkpoint,
    PoolBallot,
    TrackingCodeTypo,
    genesis_hash,
    normalise_tracking_code,
    sign_document,
)
from election.cli import main
from election.encoding import canonical_bytes
from election.manifest import Manifest
from election.publish import SITE_ASSETS, build_site
from election.record import DirectoryRecord, RecordWriter
from election.simulation import simulate
from election.stations import chain_lines, parse_chain_lines
from election.verify import CHECKS

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "publish"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip

MANIFEST = {
    "version": 2,
    "batch_min": 3,
    "mode": "rehearsal",
    "election_id": "minato-2025",
    "name": {"en": "Minato City Election 2025", "ja": "港区選挙 2025"},
    "contests": [
        {
            "id": "mayor",
            "name": {"en": "Mayor", "ja": "区長"},
            "limit": 1,
            "selections": [
                {"id": "tanaka", "name": {"en": "Tanaka Ichiro", "ja": "田中 一郎"}},
                {"id": "suzuki", "name": {"en": "Suzuki Hanako", "ja": "鈴木 花子"}},
                {"id": "obrien", "name": {"en": "O'Brien & <Sons>", "ja": "オブライエン"}},
            ],
        },
        {
            "id": "council",
            "name": {"en": "City Council", "ja": "区議会"},
            "limit": 2,
            "selections": [
                {"id": "sato", "name": {"en": "Sato Ken", "ja": "佐藤 健"}},
                {"id": "ito", "name": {"en": "Ito Mei", "ja": "伊藤 芽衣"}},
                {"id": "kato", "name": {"en": "Kato Jun", "ja": "加藤 純"}},
            ],
        },
    ],
}


class Text(HTMLParser):
    """The visible text of a page, and its tables as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.skip = 0
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "title", "desc"):
            self.skip += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "title", "desc"):
            self.skip -= 1
        elif tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)
            if self.cell is not None:
                self.cell.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def read_page(files: dict[str, bytes], name: str) -> Text:
    parser = Text()
    parser.feed(files[name].decode("utf-8"))
    return parser


def chain_entries(record: Path) -> dict[str, list]:
    return {
        folder.name: list(parse_chain_lines((folder / "chain.jsonl").read_bytes()))
        for folder in sorted((record / "stations").iterdir())
    }


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("publish") / "record"
    outcome = simulate(Manifest.from_json(MANIFEST), RecordWriter(root), 24, trustee_count=3, quorum=2,
                       device_count=3, station_count=2, spoil_rate=0.2, seed=3)  # fmt: skip
    assert outcome.spoiled > 0
    return root


@pytest.fixture(scope="module")
def site(record: Path) -> dict[str, bytes]:
    return build_site(DirectoryRecord(record))


def write_site(files: dict[str, bytes], out: Path) -> Path:
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return out


def test_results_page_shows_totals_by_name_with_undervotes(record: Path, site: dict[str, bytes]) -> None:
    results = json.loads((record / "results.json").read_bytes())
    ballots = results["ballot_count"]
    page = read_page(site, "results.html")
    totals_tables = [t for t in page.tables if t and t[0][:1] == ["候補・選択肢 Choice"]]
    assert len(totals_tables) == len(MANIFEST["contests"])
    for contest, published, table in zip(MANIFEST["contests"], results["contests"], totals_tables, strict=True):
        rows = {row[0]: int(row[1].replace(",", "")) for row in table[1:] if len(row) >= 2 and row[1]}
        votes = 0
        for selection, total in zip(contest["selections"], published["selections"], strict=True):
            label = f"{selection['name']['ja']} {selection['name']['en']}"
            assert rows[label] == total["total"], label
            votes += total["total"]
        undervote_row = next(label for label in rows if "undervotes" in label)
        assert rows[undervote_row] == contest["limit"] * ballots - votes
        assert rows["集計された票 Ballots counted"] == ballots
        assert f"{contest['name']['ja']} {contest['name']['en']}" in page.text
    # names, never ids, in what a reader sees; and a name is text, not markup
    for contest in MANIFEST["contests"]:
        assert contest["id"] not in page.text
        for selection in contest["selections"]:
            assert selection["id"] not in page.text
    html = site["results.html"].decode()
    assert "O&#x27;Brien &amp; &lt;Sons&gt;" in html and "<Sons>" not in html


def test_charts_are_inline_svg_with_text_alternatives(site: dict[str, bytes]) -> None:
    html = site["results.html"].decode()
    charts = re.findall(r"<svg .*?</svg>", html, re.S)
    assert len(charts) == len(MANIFEST["contests"])
    for chart in charts:
        assert 'role="img"' in chart and "<title id=" in chart and "<desc id=" in chart
        assert "田中 一郎 / Tanaka Ichiro" in charts[0]
    # nothing is fetched from elsewhere: no http(s) URL, no inline script, a strict CSP
    for name, data in site.items():
        if name.endswith(".html"):
            text = data.decode()
            assert not re.search(r"(src|href)=\"(https?:)?//", text), name
            assert "<script>" not in text and "default-src 'none'" in text


def test_stations_page_counts_each_chain(record: Path, site: dict[str, bytes]) -> None:
    page = read_page(site, "stations.html")
    (table,) = page.tables
    assert table[0] == [
        "投票所 Station",
        "投票 Cast",
        "締切後 Late",
        "集計 Counted",
        "破棄（確認用） Spoiled",
        "受付（名簿） Check-ins (roll)",
    ]
    rows = {row[0]: row[1:] for row in table[1:]}
    for station, entries in chain_entries(record).items():
        cast = sum(e.kind == "cast" for e in entries)
        spoiled = sum(e.kind == "spoiled" for e in entries)
        # every simulated voter checked in once and cast once: the closing report's check-ins
        assert rows[station] == [str(cast), "0", str(cast), str(spoiled), str(cast)]


def test_a_rehearsal_says_so_on_every_page(site: dict[str, bytes]) -> None:
    for name in ("index.html", "results.html", "stations.html", "verification.html", "tracker.html"):
        assert "REHEARSAL: this is not a real election" in read_page(site, name).text, name


def test_verification_page_lists_every_check(site: dict[str, bytes]) -> None:
    html = site["verification.html"].decode()
    for check in CHECKS:
        assert re.search(rf'<li class="check pass" id="check-{check.number}">', html)
    assert "all 20 checks pass" in read_page(site, "index.html").text


def test_the_same_record_gives_the_same_site(record: Path, site: dict[str, bytes]) -> None:
    assert build_site(DirectoryRecord(record)) == site
    assert set(SITE_ASSETS) <= set(site)


def test_tracking_codes_are_embedded_per_prefix(record: Path, site: dict[str, bytes]) -> None:
    embedded: dict[str, list] = {}
    for name, data in site.items():
        if name.startswith("codes/") and name != "codes/index.js":
            match = re.fullmatch(rb'trackingShard\("(..)",(\{.*\})\);\n', data)
            assert match, name
            shard = json.loads(match.group(2))
            assert all(code.startswith(match.group(1).decode()) for code in shard)
            embedded.update(shard)
    expected = {
        entry.tracking_code: [station, entry.batch, entry.kind]
        for station, entries in chain_entries(record).items()
        for entry in entries
    }
    assert embedded == expected


@given(st.text(alphabet=st.characters(codec=None), max_size=200))
def test_the_normaliser_takes_any_text_and_gives_a_code_or_names_the_typo(typed: str) -> None:
    # Lone surrogates, any script, control characters: only a code of the alphabet's symbols in
    # groups of four (normalising twice changes nothing), or TrackingCodeTypo naming I/O/0/1.
    try:
        code = normalise_tracking_code(typed)
    except TrackingCodeTypo as typo:
        assert typo.characters and set(typo.characters) <= set("01IO")
        return
    assert set(code) <= set(TRACKING_ALPHABET) | {"-"}
    assert normalise_tracking_code(code) == code


def python_answer(typed: str) -> dict[str, str | None]:
    """What election lookup makes of ``typed``, in the shape the site's tracker.js returns."""
    try:
        return {"code": normalise_tracking_code(typed), "typo": ""}
    except TrackingCodeTypo as typo:
        return {"code": None, "typo": typo.characters}


TYPED = (
    "x66l mjwe 74kt prjq",
    "ｘ６６ｌ－ｍｊｗｅ　７４ｋｔ　ｐｒｊｑ",
    "X66L ー MJWE ー 74KT ー PRJQ",
    "x66l-m1we-74it-prjq",
    "a0b1-cOdd",
    " 22tf‐erqo ",
    "ĀBC",
    "ı",
    "ﬁx",
)
"""What voters type: spaces, full-width, the IME's long dash, look-alikes, ligatures, Turkish ı."""


def test_the_normaliser_reads_what_people_type() -> None:
    for typed in TYPED[:3]:
        assert normalise_tracking_code(typed) == "X66L-MJWE-74KT-PRJQ", typed
    assert python_answer("x66l-m1we-74it-prjq") == {"code": None, "typo": "1I"}
    assert python_answer("a0b1-cOdd") == {"code": None, "typo": "01O"}
    with pytest.raises(TrackingCodeTypo, match="never contains 0, 1, O"):
        normalise_tracking_code("a0b1-cOdd")


def resign_station(record: Path, station: str, late: int, check_ins_extra: int) -> None:
    """Re-chain ``station`` with ``late`` of its cast ballots as ``late`` (one batch after the
    close) under a new ledger key, and add the ledger's signed closing report (what the gateway
    exports after late ballots)."""
    folder = record / "stations" / station
    base_hash = bytes.fromhex(json.loads((record / "context.json").read_bytes())["base_hash"])
    entries = list(parse_chain_lines((folder / "chain.jsonl").read_bytes()))
    late_hashes = {e.ballot_hash for e in [e for e in entries if e.kind == "cast"][:late]}
    state = ChainState(genesis_hash(base_hash, station))
    rebuilt = []
    before = [PoolBallot(e.ballot_hash, e.kind) for e in entries if e.ballot_hash not in late_hashes]
    after = [PoolBallot(h, "late") for h in late_hashes]
    for pool in (before, after):  # the batch committed at the final close, then the late one
        for entry in state.next_batch(pool) if pool else ():
            state.append(entry)
            rebuilt.append(entry)
    key = Ed25519PrivateKey.generate()
    station_json = json.loads((folder / "station.json").read_bytes())
    station_json["ledger_key"] = key.public_key().public_bytes_raw().hex()
    (folder / "station.json").write_bytes(canonical_bytes(station_json))
    (folder / "chain.jsonl").write_bytes(chain_lines(rebuilt))
    (folder / "checkpoint.json").write_bytes(canonical_bytes(Checkpoint(station, base_hash, state.head).sign(key)))
    counted = sum(e.kind in ("cast", "late") for e in rebuilt)
    body = {
        "version": 2, "type": "closing_report", "station_id": station, "base_hash": base_hash.hex(),
        "position": state.head.position, "head_hash": state.head.entry_hash.hex(), "terminals": {},
        "ballots": counted, "spoiled": sum(e.kind == "spoiled" for e in rebuilt),
        "check_ins": counted + check_ins_extra, "closed_position": state.head.position - late,
        "unreachable": {}, "late": {},
    }  # fmt: skip
    (folder / "closing.json").write_bytes(canonical_bytes(sign_document(body, key)))
    reconciliation = json.loads((record / "reconciliation.json").read_bytes())  # the centre's figures follow
    reconciliation["stations"][station].update(check_ins=body["check_ins"], ballots=counted)
    (record / "reconciliation.json").write_bytes(canonical_bytes(reconciliation))


def test_late_ballots_and_closing_report(record: Path, tmp_path: Path) -> None:
    copy = tmp_path / "record"
    shutil.copytree(record, copy)
    resign_station(copy, "station-1", late=2, check_ins_extra=1)
    files = build_site(DirectoryRecord(copy))
    assert "all 20 checks pass" in read_page(files, "index.html").text, read_page(files, "verification.html").text
    page = read_page(files, "stations.html")
    (table,) = page.tables
    assert table[0][2] == "締切後 Late"
    rows = {row[0]: row[1:] for row in table[1:]}
    entries = chain_entries(copy)
    one = entries["station-1"]
    cast, spoiled = sum(e.kind == "cast" for e in one), sum(e.kind == "spoiled" for e in one)
    assert rows["station-1"] == [str(cast), "2", str(cast + 2), str(spoiled), f"{cast + 3} 差あり differs"]
    assert rows["station-2"][-1] == rows["station-2"][2]  # its own closing report: check-ins = counted
    assert "Late ballots (counted)" in read_page(files, "index.html").text


@pytest.fixture
def failing_record(record: Path, tmp_path: Path) -> Path:
    """A cast ballot whose device signature was altered after signing: check 7 fails."""
    copy = tmp_path / "failing"
    shutil.copytree(record, copy)
    ballot = sorted((copy / "ballots").glob("*.json"))[0]
    data = json.loads(ballot.read_bytes())
    signature = bytearray.fromhex(data["signature"])
    signature[0] ^= 1
    data["signature"] = signature.hex()
    ballot.write_bytes(canonical_bytes(data))
    return copy


def test_a_failing_record_shows_the_failed_check(failing_record: Path) -> None:
    files = build_site(DirectoryRecord(failing_record))
    html = files["verification.html"].decode()
    failed = re.search(r'<li class="check fail" id="check-7">(.*?)</li>\s*<li class="check', html, re.S)
    assert failed, "check 7 is shown as FAIL"
    assert ">FAIL<" in failed.group(1) and "signature" in failed.group(1)
    assert '<li class="check pass" id="check-1">' in html
    for name in ("index.html", "results.html", "stations.html", "tracker.html"):
        text = read_page(files, name).text
        assert "VERIFICATION FAILED: check" in text and " 7" in text, name


def test_an_unreadable_manifest_still_gives_a_site(record: Path, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(record, copy)
    (copy / "manifest.json").write_bytes(b"{not json")
    files = build_site(DirectoryRecord(copy))
    assert "The results cannot be shown" in read_page(files, "results.html").text
    assert '<li class="check fail" id="check-1">' in files["verification.html"].decode()


def test_cli_writes_the_site_and_refuses_a_full_folder(record: Path, failing_record: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "site"
    result = runner.invoke(main, ["publish", str(record), str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        build_site(DirectoryRecord(record))
    )
    assert "writing site" in result.output  # the progress lines (stderr is mixed in by CliRunner)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    again = runner.invoke(main, ["publish", str(record), str(out), "--workers", "1"])
    assert again.exit_code != 0 and "not empty" in again.output
    failing = runner.invoke(main, ["publish", str(failing_record), str(out), "--workers", "1", "--replace"])
    assert failing.exit_code == 1 and "VERIFICATION FAILED: checks 7" in failing.output
    assert "VERIFICATION FAILED" in (out / "index.html").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_assets_are_package_data() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"*.css", "*.js"} <= set(package_data["election.site"])
    for name in SITE_ASSETS:
        assert (ROOT / "election" / "site" / name).is_file()


# -- in Chromium, from file:// -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        yield page
        assert errors == []
    finally:
        page.close()


def find(page: Page, typed: str) -> None:
    page.fill("#code", typed)
    page.click("#find")
    expect(page.locator("#answer")).not_to_have_attribute("data-result", "searching")


def test_tracker_finds_a_real_code_in_chromium(record: Path, site: dict[str, bytes], page: Page,
                                               tmp_path: Path) -> None:  # fmt: skip
    out = write_site(site, tmp_path / "site")
    station, entries = next(iter(chain_entries(record).items()))
    entry = next(e for e in entries if e.kind == "cast")
    page.goto((out / "tracker.html").as_uri())
    typed = entry.tracking_code.lower().replace("-", " ")
    find(page, typed)
    answer = page.locator("#answer")
    expect(answer).to_have_attribute("data-result", "found")
    expect(answer).to_contain_text("Found: your ballot is in the record.")
    expect(answer).to_contain_text(entry.tracking_code)
    expect(answer).to_contain_text(station)
    expect(answer).to_contain_text("counted in the tally")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tracker-found.png"), full_page=True)

    spoiled = next(e for es in chain_entries(record).values() for e in es if e.kind == "spoiled")
    full_width = spoiled.tracking_code.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}).replace(
        "－", "　"
    )  # full-width letters and digits, ideographic spaces
    find(page, full_width)
    expect(answer).to_have_attribute("data-result", "found")
    expect(answer).to_contain_text("challenged and spoiled: not counted")
    expect(answer.locator("dd").nth(2)).to_have_text(str(spoiled.batch))  # the batch that holds it

    wrong = "AAAA-AAAA-AAAA-AAAA" if entry.tracking_code != "AAAA-AAAA-AAAA-AAAA" else "BBBB-BBBB-BBBB-BBBB"
    same_shard = entry.tracking_code[:5] + "ZZZZ-ZZZZ-ZZZZ"  # a shard that exists, a code that does not
    for typed in (wrong, same_shard.lower()):
        find(page, typed)
        expect(answer).to_have_attribute("data-result", "not-found")
        expect(answer).to_contain_text("Not found")
        expect(answer).to_contain_text("見つかりません")
    page.screenshot(path=str(ARTIFACTS / "tracker-not-found.png"), full_page=True)
    find(page, "abcd")
    expect(answer).to_contain_text("a tracking code has 16 letters and digits; you typed 4")
    find(page, entry.tracking_code.replace("A", "0").replace("B", "I") + "O1")
    expect(answer).to_have_attribute("data-result", "typo")
    expect(answer).to_contain_text("a tracking code never contains")
    # the page and election lookup read what people type the same way (the same typos named)
    for typed in TYPED:
        assert page.evaluate("normaliseTrackingCode", typed) == python_answer(typed), typed


def test_pages_render_in_chromium(site: dict[str, bytes], failing_record: Path, page: Page, tmp_path: Path) -> None:
    out = write_site(site, tmp_path / "site")
    page.goto((out / "results.html").as_uri())
    expect(page.locator("svg.chart")).to_have_count(len(MANIFEST["contests"]))
    expect(page.locator("h2").first).to_contain_text("区長")
    assert page.locator("svg.chart").first.bounding_box()["width"] > 300
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=True)
    failing = write_site(build_site(DirectoryRecord(failing_record)), tmp_path / "failing")
    page.goto((failing / "verification.html").as_uri())
    expect(page.locator("#check-7 .mark")).to_have_text("FAIL")
    expect(page.locator("[role=alert]")).to_contain_text("VERIFICATION FAILED")
    page.screenshot(path=str(ARTIFACTS / "verification-failed.png"), full_page=True)
