"""The read-only web dashboard in Debian's Chromium (Playwright), against the real broker and
services: every configured terminal listed, live updates, a banner when the broker goes away
and when the dashboard server itself stops answering; nothing but GET."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from hub_fixtures import Hub
from playwright.sync_api import Page, expect, sync_playwright

from infra.broker import Broker
from infra.errors import SiteError
from protocol.messages import TerminalStatus
from station_hub.dashboard import Dashboard
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 800})
        finally:
            browser.close()


def cell(page: Page, terminal: str, field: str):
    return page.locator(f'#terminals tr[data-terminal="{terminal}"] td[data-field="{field}"]')


def test_dashboard_shows_the_station_live_and_never_stale_data_as_current(
    hub: Hub, broker: Broker, station: Station, page: Page
) -> None:
    board = Dashboard(station, "op1", port=0)
    thread = board.start_thread()
    try:
        page.goto(board.url)
        expect(page.locator("#station")).to_have_text("st-1")
        for terminal in ("t1", "t2"):  # configured, never seen: listed all the same
            expect(cell(page, terminal, "link")).to_have_text("never seen", timeout=10_000)
        expect(page.locator("#summary")).to_contain_text("polls pending")
        expect(page.locator("#alerts")).to_contain_text("terminal t1 never seen")
        expect(page.locator("#banner")).to_be_hidden()

        with TerminalClient(station, "t1").connect() as t1:
            status = TerminalStatus(True, "ok", False, 4, 1)
            t1.publish(station.topics.terminal_status("t1"), status.encode(), retain=True)
            expect(cell(page, "t1", "link")).to_have_text("online", timeout=10_000)
            expect(cell(page, "t1", "ballots_cast")).to_have_text("4")
            expect(cell(page, "t1", "outbox")).to_have_text("1")
        with urllib.request.urlopen(board.url + "status.json", timeout=5) as answer:
            data = json.load(answer)
            assert answer.headers["Cache-Control"] == "no-store"
            assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert data["station"] == "st-1" and data["polls"] == "pending" and data["connected"] is True
        assert [row["terminal"] for row in data["terminals"]] == ["t1", "t2"]

        request = urllib.request.Request(board.url + "status.json", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 405  # read-only

        broker.stop()  # the broker goes away: the page says so at once, with the last message's time
        expect(page.locator("#banner")).to_contain_text("DISCONNECTED from the station broker", timeout=10_000)
        expect(page.locator("#banner")).to_contain_text("last message")
        page.screenshot(path=str(station.directory / "dashboard-disconnected.png"))
    finally:
        board.stop()
        thread.join(10)
    assert not thread.is_alive()
    # The server itself is gone: the open page does not keep showing its last table as current.
    expect(page.locator("#banner")).to_contain_text("DASHBOARD SERVER UNREACHABLE", timeout=10_000)


def test_the_dashboard_serves_on_loopback_only(station: Station) -> None:
    for host in ("0.0.0.0", "192.168.50.1", "hub.local"):
        with pytest.raises(SiteError, match="loopback"):
            Dashboard(station, "op1", host=host)
