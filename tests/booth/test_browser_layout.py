"""Every kiosk screen in Debian's Chromium at 800×480 (the Pi 7" display) and 1280×800, in
Japanese and English: each primary action lies inside the viewport without scrolling, nothing
overflows its box, a long contest pages with a "more candidates" cue; and the voter aids
(keypad-only PIN, help, text size, contrast, touch that slides off, overvote, undervote,
inactivity warning). A screenshot of every screen is saved under test-artifacts/booth-layout/.

The page talks to the real aiohttp server and the real voter session; only the shell's steps
(card, roll, sealing, outbox: tested through the real parts in test_browser.py and the hub
tests) answer at once, so every screen, errors included, is reached in a few seconds.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from appliance.audio import load_catalogue
from appliance.booth import Booth
from appliance.session import Session, State, Timeouts
from appliance.session import events as ev
from appliance.session.session import RETRYABLE_REFUSALS
from appliance.ui.server import UiServer
from election.chain import tracking_code
from election.manifest import MANIFEST_VERSION, Manifest
from infra.broker import free_port

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "booth-layout"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
VIEWPORTS = {"800x480": (800, 480), "1280x800": (1280, 800)}
PIN = "1234"
TIMEOUTS = Timeouts(voting=120, result=30, busy=60, warning=30)

CANDIDATES = [
    ("山田 太郎", "YAMADA Taro"), ("佐藤 花子", "SATO Hanako"), ("鈴木 一郎", "SUZUKI Ichiro"),
    ("高橋 美智子", "TAKAHASHI Michiko"), ("田中 健太", "TANAKA Kenta"), ("伊藤 さくら", "ITO Sakura"),
    ("渡辺 大輔", "WATANABE Daisuke"),
]  # fmt: skip


def manifest() -> Manifest:
    """A long vote-for-1 contest (7 candidates, long title) and a short vote-for-2 one."""
    first = {
        "id": "house",
        "name": {"ja": "衆議院小選挙区選出議員選挙（東京都第1区）", "en": "House of Representatives, Tokyo 1st"},
        "limit": 1,
        "selections": [{"id": f"c{i + 1}", "name": {"ja": ja, "en": en}} for i, (ja, en) in enumerate(CANDIDATES)],
    }
    second = {
        "id": "council",
        "name": {"ja": "区議会議員選挙", "en": "Ward council"},
        "limit": 2,
        "selections": [
            {"id": "a", "name": {"ja": "小林 真一", "en": "KOBAYASHI Shinichi"}},
            {"id": "b", "name": {"ja": "加藤 由美", "en": "KATO Yumi"}},
            {"id": "c", "name": {"ja": "吉田 誠", "en": "YOSHIDA Makoto"}},
        ],
    }
    return Manifest.from_json(
        {
            "version": MANIFEST_VERSION,
            "election_id": "layout",
            "name": {"ja": "令和8年 東京都 統一選挙", "en": "2026 Tokyo general election"},
            "batch_min": 2,
            "mode": "rehearsal",
            "contests": [first, second],
        }
    )


class SessionBooth:
    """What the UI server needs of a Booth, around the real Session; the steps answer at once."""

    def __init__(self, election: Manifest) -> None:
        self.election = SimpleNamespace(manifest=election)
        self.now = 0.0
        self._lock = threading.Condition()
        self._version = 0
        self.auth_result: ev.Event = ev.Authenticated()
        self.checkin_result: ev.Event = ev.CheckedIn()
        self.hold_seal = False
        self.language = "ja"  # the voter of the error screens picks it right after the card
        self._choices: dict[str, tuple[str, ...]] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.session = Session(self.election.manifest, TIMEOUTS)
            self.auth_result, self.checkin_result, self.hold_seal = ev.Authenticated(), ev.CheckedIn(), False
            self._publish()

    def wait_view(self, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._lock.wait_for(lambda: self._version > after, timeout)
            return self._version, self._view

    def submit(self, *events: ev.Event) -> None:
        with self._lock:
            for event in events:
                pending = [event, ev.Language(self.language)] if isinstance(event, ev.CardInserted) else [event]
                while pending:
                    for effect in self.session.handle(pending.pop(0), self.now):
                        result = self._run(effect)
                        if result is not None:
                            pending.append(result)
            self._publish()

    def fail(self) -> None:
        with self._lock:
            self.session.fail(self.now)
            self._publish()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.submit(ev.Tick())

    def _publish(self) -> None:
        self._version += 1
        self._view = self.session.view()
        self._lock.notify_all()

    def _run(self, effect: ev.Effect) -> ev.Event | None:
        match effect:
            case ev.Authenticate(secret=secret):
                return self.auth_result if secret == PIN else ev.AuthenticationFailed(ev.CardProblem.WRONG_PIN, 2)
            case ev.CheckIn():
                return self.checkin_result
            case ev.Seal(choices=choices):
                self._choices = choices
                return None if self.hold_seal else ev.Sealed("ab" * 32)
            case ev.Challenge():
                return ev.Spoiled("ab" * 32, self._choices)
            case ev.CastBallot():
                return ev.Cast("cd" * 32)
        return None


@pytest.fixture(scope="module")
def booth() -> Iterator[SessionBooth]:
    harness = SessionBooth(manifest())
    server = UiServer(cast(Booth, harness), free_port()).start()
    harness.url = server.url  # type: ignore[attr-defined]
    try:
        yield harness
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


class Kiosk:
    def __init__(self, page: Page, booth: SessionBooth, folder: Path, size: tuple[int, int]) -> None:
        self.page, self.booth, self.folder, self.size = page, booth, folder, size
        self.count = 0

    def screen(self, name: str) -> None:
        expect(self.page.locator(f'#screen[data-screen="{name}"]')).to_be_visible(timeout=10_000)
        self.page.wait_for_timeout(60)  # one frame after the render

    def shot(self, name: str) -> None:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path))

    def inside(self, selector: str) -> None:
        """The element is drawn, enabled, and wholly inside the viewport (no scrolling)."""
        locator = self.page.locator(selector)
        box = None
        for _ in range(20):  # the page redraws on every new view: measure a settled one
            expect(locator).to_be_visible()
            box = locator.bounding_box()
            if box is not None:
                break
            self.page.wait_for_timeout(50)
        width, height = self.size
        assert box is not None, selector
        assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= width + 0.5 and box["y"] + box["height"] <= height + 0.5, (selector, box)
        centre = self.page.evaluate(
            "([s, x, y]) => { const e = document.elementFromPoint(x, y); return !!e && !!e.closest(s); }",
            [selector, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
        )
        assert centre, f"{selector} is covered by another element"

    def nothing_clipped(self) -> None:
        clipped = self.page.evaluate(
            """() => {
              const out = [];
              if (document.documentElement.scrollWidth > innerWidth + 1) out.push("page scrolls sideways");
              for (const e of document.querySelectorAll("button, h1, h2, p, .code, .meta, .page-of")) {
                if (!e.offsetParent && getComputedStyle(e).position !== "fixed") continue;
                if (e.scrollWidth > e.clientWidth + 1) out.push(`${e.tagName}#${e.id}: ${e.textContent}`);
                const r = e.getBoundingClientRect();
                if (r.right > innerWidth + 1) out.push(`${e.tagName}#${e.id} off the right edge: ${e.textContent}`);
              }
              const list = document.getElementById("choices");
              for (const b of list ? list.querySelectorAll("button.choice:not([hidden])") : []) {
                const r = b.getBoundingClientRect(), l = list.getBoundingClientRect();
                if (r.bottom > l.bottom + 1 || r.top < l.top - 1) out.push(`candidate cut off: ${b.textContent}`);
              }
              return out;
            }"""
        )
        assert clipped == [], clipped

    def check(self, name: str, *primary: str) -> None:
        for selector in primary:
            self.inside(selector)
        self.nothing_clipped()
        self.shot(name)


def kiosk_for(browser: Browser, booth: SessionBooth, viewport: str, language: str, name: str) -> Iterator[Kiosk]:
    width, height = VIEWPORTS[viewport]
    folder = ARTIFACTS / f"{name}-{viewport}-{language}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    page = browser.new_page(viewport={"width": width, "height": height})
    booth.reset()
    booth.language = language
    page.goto(getattr(booth, "url"))  # noqa: B009
    kiosk = Kiosk(page, booth, folder, (width, height))
    kiosk.screen("idle")
    if language == "en":
        page.click("#lang-en")
        expect(page.locator("html")).to_have_attribute("lang", "en")
    try:
        yield kiosk
    finally:
        print(f"screenshots: {folder}")
        page.close()


def to_ballot(kiosk: Kiosk) -> None:
    kiosk.booth.submit(ev.CardInserted())
    kiosk.screen("pin")
    for digit in PIN:
        kiosk.page.click(f"#pin-{digit}")
    kiosk.page.click("#pin-ok")
    kiosk.screen("ballot")


@pytest.mark.slow
@pytest.mark.parametrize("language", ["ja", "en"])
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_screen_fits_with_its_primary_action_in_view(
    browser: Browser, booth: SessionBooth, viewport: str, language: str
) -> None:
    for kiosk in kiosk_for(browser, booth, viewport, language, "screens"):
        page = kiosk.page
        kiosk.check("idle", "#lang-ja", "#lang-en", "#text-size", "#contrast", "#help")
        booth.submit(ev.CardInserted())
        kiosk.screen("pin")
        kiosk.check("pin", *[f"#pin-{d}" for d in "0123456789"], "#pin-clear", "#pin-ok", "#t-cancel", "#pin")
        for digit in "0000":
            page.click(f"#pin-{digit}")
        page.click("#pin-ok")
        kiosk.screen("wrong_pin")
        wrong = "暗証番号が違います。残り2回です。" if language == "ja" else "Wrong PIN. 2 tries left."
        expect(page.locator("#pin-error")).to_have_text(wrong)
        kiosk.check("wrong-pin", "#pin-0", "#pin-ok", "#t-cancel", "#pin-error")
        for digit in PIN:
            page.click(f"#pin-{digit}")
        page.click("#pin-ok")
        kiosk.screen("ballot")
        paged = viewport == "800x480"  # 1280×800 shows all seven at once
        kiosk.check("ballot-page-1", "#t-next", "#screen h1", *(["#page-next"] if paged else ["#t-select-house-c7"]))
        if paged:
            expect(page.locator("#page-next")).to_be_enabled()  # the visible "more candidates" cue
            assert page.locator("#choices button.choice:visible").count() < len(CANDIDATES)
        page.click("#t-select-house-c1")
        expect(page.locator("#t-select-house-c1")).to_have_attribute("aria-pressed", "true")
        page.click("#t-select-house-c2")
        expect(page.locator("#overvote")).to_be_visible()
        expect(page.locator("#t-select-house-c1")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#t-select-house-c2")).to_have_attribute("aria-pressed", "false")
        kiosk.check("ballot-overvote", "#t-dismiss", "#overvote")
        page.click("#t-dismiss")
        expect(page.locator("#overvote")).to_be_hidden()
        expect(page.locator("#t-select-house-c1")).to_have_attribute("aria-pressed", "true")
        if paged:
            page.click("#page-next")
            while page.locator("#page-next").is_enabled():
                page.click("#page-next")
            expect(page.locator("#t-select-house-c7")).to_be_visible()
            kiosk.check("ballot-last-page", "#t-next", "#t-select-house-c7", "#page-prev")
        else:
            expect(page.locator("#page-next")).to_be_hidden()
        page.click("#t-next")
        expect(page.locator("#t-select-council-a")).to_be_visible()
        page.click("#t-select-council-a")
        kiosk.check("ballot-contest-2", "#t-review", "#t-previous")
        page.click("#t-review")
        kiosk.screen("review")
        expect(page.locator("#undervote")).to_be_visible()
        kiosk.check("review-undervote", "#t-seal", "#t-change")
        booth.hold_seal = True
        page.click("#t-seal")
        expect(page.locator("#screen h1")).to_have_text("お待ちください…" if language == "ja" else "Please wait…")
        kiosk.shot("busy")
        booth.hold_seal = False
        booth.submit(ev.Sealed("ab" * 32))
        kiosk.screen("sealed")
        kiosk.check("sealed", "#t-cast", "#t-challenge")
        page.click("#t-challenge")
        kiosk.screen("spoiled")
        kiosk.check("spoiled", "#t-vote_again")
        page.click("#t-vote_again")
        kiosk.screen("ballot")
        page.click("#t-next")
        page.click("#t-review")
        kiosk.screen("review")
        page.click("#t-seal")
        kiosk.screen("sealed")
        page.click("#t-cast")
        kiosk.screen("receipt")
        expect(page.locator("#receipt-kept")).to_be_visible()  # the harness has no link to the station
        kiosk.check("receipt-kept", "#t-done", "#tracking-code", "#tracking-qr", "#receipt-kept")
        booth.submit(ev.HubLink(True))
        kiosk.check("receipt-sending", "#t-done", "#tracking-code", "#tracking-qr", "#receipt-sending")
        booth.submit(ev.Held("cd" * 32))
        kiosk.check("receipt-held", "#t-done", "#tracking-code", "#tracking-qr", "#receipt-held")
        booth.submit(ev.HubLink(False))
        page.click("#t-done")
        kiosk.screen("idle")
        expect(page.locator("html")).to_have_attribute("lang", "ja")  # the next voter starts in the default
        if language == "en":
            page.click("#lang-en")
            expect(page.locator("html")).to_have_attribute("lang", "en")
        booth.language = language
        error_screens(kiosk)


def error_screens(kiosk: Kiosk) -> None:
    booth, page = kiosk.booth, kiosk.page

    def card_then(name: str, setup: Any, screen: str | None = None) -> None:
        booth.submit(ev.CardTaken())
        booth.submit(ev.CardInserted())
        kiosk.screen("pin")
        setup()
        booth.submit(ev.PinEntered(PIN))
        kiosk.screen(screen or name)
        selectors = ["#t-retry", "#t-cancel"] if screen == "hub_unreachable" else ["#t-done"]
        if screen == "hub_unreachable":  # the retry screen names the part that cannot check voters in
            expect(page.locator("#screen h1")).to_have_text(load_catalogue()[booth.language][name])
        kiosk.check(name, *selectors)
        booth.auth_result, booth.checkin_result = ev.Authenticated(), ev.CheckedIn()

    for problem, name in ((ev.CardProblem.LOCKED, "card_locked"), (ev.CardProblem.INVALID, "card_invalid")):
        card_then(name, lambda p=problem: setattr(booth, "auth_result", ev.AuthenticationFailed(p)))
    for refusal in ev.Refusal:
        name = {"polls_not_open": "polls_closed"}.get(refusal.value, refusal.value)
        screen = "hub_unreachable" if refusal in RETRYABLE_REFUSALS else name
        card_then(name, lambda r=refusal: setattr(booth, "checkin_result", ev.CheckInFailed(r)), screen)
    booth.submit(ev.CardTaken())
    kiosk.screen("card_removed")
    kiosk.check("card_removed", "#t-done")
    booth.submit(ev.CardInserted(), ev.PinEntered(PIN))
    kiosk.screen("ballot")
    booth.fail()
    kiosk.screen("session_error")
    expect(page.locator("#screen h1")).not_to_be_empty()
    kiosk.check("session_error", "#t-done")
    booth.submit(ev.CardTaken(), ev.CardInserted(), ev.PinEntered(PIN))
    kiosk.screen("ballot")
    booth.advance(95)
    expect(page.locator("#timeout-warning")).to_be_visible()
    kiosk.check("timeout-warning", "#t-stay", "#countdown")
    booth.advance(30)
    kiosk.screen("timed_out")
    expect(page.locator("#timeout-warning")).to_be_hidden()
    kiosk.check("timed_out", "#t-done")
    booth.submit(ev.ServiceChanged(False, "enclosure open"))
    kiosk.screen("out_of_service")
    kiosk.check("out_of_service")
    booth.submit(ev.ServiceChanged(True))
    kiosk.screen("idle")


@pytest.mark.slow
@pytest.mark.parametrize("language", ["ja", "en"])
def test_keypad_only_vote_help_text_size_and_contrast(browser: Browser, booth: SessionBooth, language: str) -> None:
    """At 800×480: the PIN and the whole ballot by keypad keys alone; focus is not a choice."""
    for kiosk in kiosk_for(browser, booth, "800x480", language, "keypad"):
        page = kiosk.page
        keyboard = page.keyboard
        booth.submit(ev.CardInserted())
        kiosk.screen("pin")
        page.locator("#pin").blur()
        for digit in PIN:
            for _ in range(int(digit)):
                keyboard.press("ArrowUp")
            expect(page.locator("#pin-wheel")).to_have_text(digit)
            keyboard.press("Enter")
        expect(page.locator("#pin-keypad .dots")).to_have_text("●●●●")
        kiosk.check("pin-keypad", "#t-cancel")
        keyboard.press("Enter")
        kiosk.screen("ballot")
        keyboard.press("F1")
        expect(page.locator("#help-dialog")).to_be_visible()
        kiosk.check("help", "#t-close_help")
        keyboard.press("Enter")
        expect(page.locator("#help-dialog")).to_be_hidden()
        keyboard.press("ArrowDown")
        focused = page.locator("#t-select-house-c2")
        expect(focused).to_have_class("choice focus")
        expect(focused).to_have_attribute("aria-pressed", "false")
        style = focused.evaluate("e => [getComputedStyle(e).outlineStyle, getComputedStyle(e).backgroundColor]")
        chosen_bg = page.evaluate("getComputedStyle(document.body).getPropertyValue('--chosen-bg')")
        assert style[0] == "dashed" and style[1] != chosen_bg, style
        keyboard.press("Enter")
        expect(focused).to_have_attribute("aria-pressed", "true")
        kiosk.check("keypad-focus-and-choice", "#t-next")
        for _ in range(len(CANDIDATES) + 3):  # down to the end: the focus stops at "next"
            keyboard.press("ArrowDown")
        expect(page.locator("#t-next")).to_have_class("primary focus")
        expect(focused).to_have_attribute("aria-pressed", "true")
        keyboard.press("ArrowDown")  # no wrap to candidate 1
        expect(page.locator("#t-next")).to_have_class("primary focus")
        keyboard.press("Enter")
        expect(page.locator("#t-select-council-a")).to_be_visible()
        keyboard.press("Enter")  # council: candidate a
        for _ in range(3):  # a → b → c → review (then "previous": the order of view.targets)
            keyboard.press("ArrowDown")
        expect(page.locator("#t-review")).to_have_class("primary focus")
        keyboard.press("Enter")  # review
        kiosk.screen("review")
        keyboard.press("Enter")  # seal
        kiosk.screen("sealed")
        keyboard.press("Enter")  # cast
        kiosk.screen("receipt")
        expect(page.locator("#tracking-code")).to_have_text(tracking_code(bytes.fromhex("cd" * 32)))
        keyboard.press("Enter")
        kiosk.screen("idle")

        booth.submit(ev.CardInserted())
        kiosk.screen("pin")
        for level in (2, 3, 4):
            page.click("#text-size")
            expect(page.locator("body")).to_have_class(f"theme-high size-{level}")
        page.click("#contrast")
        expect(page.locator("body")).to_have_class("theme-low size-4")
        kiosk.check("pin-size-4-low-contrast", "#pin-ok", "#pin-0", "#t-cancel")
        for digit in PIN:
            page.click(f"#pin-{digit}")
        page.click("#pin-ok")
        kiosk.screen("ballot")
        kiosk.check("ballot-size-4-low-contrast", "#t-next", "#page-next")
        page.click("#t-next")
        page.click("#t-review")
        kiosk.screen("review")
        kiosk.check("review-size-4-low-contrast", "#t-seal", "#t-change")
        booth.submit(ev.CardTaken())
        kiosk.screen("card_removed")
        expect(page.locator("body")).to_have_class("theme-low size-4")  # still this voter's screen
        booth.submit(ev.CardInserted())
        kiosk.screen("pin")
        expect(page.locator("body")).to_have_class("theme-high size-1")  # reset for the next voter


@pytest.mark.slow
def test_a_touch_that_slides_off_its_target_does_nothing(browser: Browser, booth: SessionBooth) -> None:
    for kiosk in kiosk_for(browser, booth, "800x480", "en", "touch"):
        page = kiosk.page
        to_ballot(kiosk)
        target = page.locator("#t-select-house-c1").bounding_box()
        other = page.locator("#t-next").bounding_box()
        assert target and other
        page.mouse.move(target["x"] + 20, target["y"] + 20)
        page.mouse.down()
        page.mouse.move(other["x"] + 10, other["y"] + 10, steps=5)
        page.mouse.up()
        page.wait_for_timeout(300)
        expect(page.locator("#t-select-house-c1")).to_have_attribute("aria-pressed", "false")
        assert booth.session.state is State.BALLOT and booth.session.contest_index == 0
        page.mouse.move(other["x"] + 10, other["y"] + 10)
        page.mouse.down()
        page.mouse.move(target["x"] + 20, target["y"] + 20, steps=5)
        page.mouse.up()
        page.wait_for_timeout(300)
        expect(page.locator("#t-select-house-c1")).to_have_attribute("aria-pressed", "false")
        assert booth.session.contest_index == 0
        page.click("#t-select-house-c1")
        expect(page.locator("#t-select-house-c1")).to_have_attribute("aria-pressed", "true")
