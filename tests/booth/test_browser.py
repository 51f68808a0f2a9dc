"""The kiosk page in Debian's Chromium (Playwright): the full flow with one challenge."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from booth_fixtures import PIN, Voters, ledger_rows, terminal_data_dir
from playwright.sync_api import Page, expect, sync_playwright

from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from election.chain import tracking_code
from infra.broker import Broker
from station_hub.station import Station

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "booth"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 800})
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def screen(page: Page, name: str) -> None:
    expect(page.locator(f'#screen[data-screen="{name}"]')).to_be_visible(timeout=20_000)
    expect(page.locator("#screen h1")).not_to_have_text(["お待ちください…", "Please wait…"], timeout=20_000)


def test_full_flow_in_chromium(
    page: Page, station: Station, voters: Voters, hub, broker: Broker, pcscd, card_slot, tmp_path: Path
) -> None:
    """Card to receipt with one challenge; the receipt shows the tracking code at once, says the
    ballot waits on this terminal while the station is out of reach, and "received" only once
    the station's ledger holds it."""
    config = terminal_data_dir(station, voters, "t1", tmp_path / "t1", pcscd.reader)
    with BoothRunner(load_config(config)) as runner:
        assert runner.ui is not None and runner.booth is not None and runner.booth.link.wait_online(10)
        page.goto(runner.ui.url)
        screen(page, "idle")
        shot(page, "01-idle-ja")
        page.click("#lang-en")
        card = card_slot.insert(VirtualJpkiCard(voters.eligible[0]))
        try:
            screen(page, "pin")
            shot(page, "02-pin")
            page.fill("#pin", "0000")
            page.click("#pin-ok")
            screen(page, "wrong_pin")
            shot(page, "03-wrong-pin")
            page.fill("#pin", PIN)
            page.click("#pin-ok")
            screen(page, "ballot")
            page.click("#t-select-contest-1-candidate-2")
            expect(page.locator("#t-select-contest-1-candidate-2")).to_have_attribute("aria-pressed", "true")
            shot(page, "04-ballot")
            page.click("#t-next")
            page.click("#t-select-contest-2-candidate-1")
            expect(page.locator("#t-select-contest-2-candidate-1")).to_have_attribute("aria-pressed", "true")
            page.click("#t-review")
            screen(page, "review")
            shot(page, "05-review")
            page.click("#t-seal")
            screen(page, "sealed")
            shot(page, "06-sealed")
            page.click("#t-challenge")
            screen(page, "spoiled")
            expect(page.locator("#screen")).to_contain_text("Candidate 2")
            shot(page, "07-spoiled")
            page.click("#t-vote_again")
            screen(page, "ballot")
            page.click("#t-select-contest-1-candidate-2")  # a choice is never replaced: deselect first
            expect(page.locator("#t-select-contest-1-candidate-2")).to_have_attribute("aria-pressed", "false")
            page.click("#t-select-contest-1-candidate-3")
            expect(page.locator("#t-select-contest-1-candidate-3")).to_have_attribute("aria-pressed", "true")
            page.keyboard.press("ArrowDown")  # keypad-style navigation: focus to "next", Enter selects it
            page.keyboard.press("Enter")
            expect(page.locator("#t-review")).to_be_visible()
            page.click("#t-review")
            screen(page, "review")
            page.click("#t-seal")
            screen(page, "sealed")
            # No ack can come while the broker is down: the code must be on the receipt before it.
            broker.stop()
            page.click("#t-cast")
            screen(page, "receipt")
            code = page.locator("#tracking-code")
            expect(code).to_be_visible()
            expect(page.locator("#tracking-qr")).to_be_visible()
            expect(page.locator("#receipt-kept")).to_be_visible()
            expect(page.locator("#receipt-held")).to_have_count(0)
            shot(page, "08-receipt-before-the-ack")
            shown = code.inner_text().strip()
            restarted = Broker(station, tmp_path / "mosquitto.log")
            try:
                expect(page.locator("#receipt-held")).to_be_visible(timeout=30_000)
                expect(code).to_have_text(shown)
                shot(page, "09-receipt-held")
                card_slot.remove(card)
                # Finish while the link is steady: a broker stopping now re-renders the screen
                # (the terminal goes offline), and a tap is taken only if it starts and ends on
                # the same button.
                page.click("#t-done")
                screen(page, "idle")
            finally:
                restarted.stop()
        finally:
            card_slot.remove(card)
    held = {tracking_code(row.ballot_hash): row.kind for row in ledger_rows(station)}
    assert held.get(shown) == "cast", f"tracking code {shown} is not a cast ballot the ledger holds"
    assert sorted(held.values()) == ["cast", "spoiled"]
