"""``station-hub dashboard``: the monitor as a read-only web page for the station's screen.

The same :class:`~station_hub.monitor.MonitorState` and :class:`~station_hub.monitor.MonitorLink`
as the Textual console (so the same rules: every configured terminal listed, resubscribe on
every reconnect, a STALE/DISCONNECTED banner with the time of the last message, alerts with
terminal and reason), served by aiohttp on the loopback interface only:

- ``GET /`` the page, ``GET /dashboard.js`` and ``/dashboard.css`` its script and style
  (no inline code: the Content-Security-Policy allows only this origin);
- ``GET /status.json`` the state as ``station-hub monitor --json`` prints it, plus the
  station id, the server's clock and the summary line.

Nothing can be changed through it: only GET routes exist (anything else is 405), and it
holds no key but the MQTT identity it reads with (give it its own, as the console's). The
page refreshes every second and, if the server stops answering, says so above the table with
the time of its last good answer: a frozen page never looks current.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
import time
from typing import Any

from aiohttp import web

from infra.errors import SiteError
from infra.service import Vitals
from station_hub.monitor import MonitorLink, station_state
from station_hub.station import Station

DEFAULT_PORT = 8470
REFRESH_MS = 1000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Station STATION — monitor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard.css"></head>
<body>
<header><h1>Station <span id="station">STATION</span> <span lang="ja">投票所モニター</span></h1>
<div id="updated">waiting for the first update…</div></header>
<div id="banner" role="alert" hidden></div>
<p id="summary"></p>
<section><h2>Alerts <span lang="ja">警告</span></h2><ul id="alerts"></ul></section>
<section><h2>Terminals <span lang="ja">端末</span></h2>
<table id="terminals"><thead><tr><th>terminal 端末</th><th>link 接続</th><th>reader 読取機</th><th>tamper 開封</th>
<th>ballots cast 投票数</th><th>outbox 未送信</th><th>last status 最終受信</th></tr></thead><tbody></tbody></table>
</section>
<script src="/dashboard.js"></script>
</body></html>
"""

CSS = """
body { font-family: "Noto Sans CJK JP", "Noto Sans", sans-serif; margin: 1.5rem; background: #fff; color: #000;
       font-size: 1.15rem; }
h1 { font-size: 1.8rem; margin: 0; } h2 { font-size: 1.3rem; margin: 1.2rem 0 .4rem; }
#updated { color: #333; }
#banner { background: #8b0000; color: #fff; font-weight: bold; padding: .8rem 1rem; margin: 1rem 0;
          font-size: 1.3rem; }
#alerts li { color: #8b0000; font-weight: bold; }
#alerts li.quiet { color: #055a05; font-weight: normal; list-style: none; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #555; padding: .35rem .6rem; text-align: left; }
td.bad { background: #ffd7d7; font-weight: bold; }
body.stale #summary, body.stale table { opacity: .45; }
"""

SCRIPT = """
"use strict";
const REFRESH_MS = REFRESH;
let lastGood = null;

function clock(seconds) {
  return seconds === null || seconds === undefined ? "never" : new Date(seconds * 1000).toLocaleTimeString("en-GB");
}

function setBanner(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text || "";
  banner.hidden = !text;
  document.body.classList.toggle("stale", Boolean(text));
}

function render(data) {
  document.getElementById("station").textContent = data.station;
  document.getElementById("summary").textContent = data.summary;
  const alerts = document.getElementById("alerts");
  alerts.replaceChildren();
  const shown = data.alerts.filter((a) => a !== data.stale);
  for (const alert of shown) {
    const item = document.createElement("li");
    item.textContent = "⚠ " + alert;
    alerts.appendChild(item);
  }
  if (!shown.length) {
    const item = document.createElement("li");
    item.className = "quiet";
    item.textContent = "no alerts 警告なし";
    alerts.appendChild(item);
  }
  const body = document.querySelector("#terminals tbody");
  body.replaceChildren();
  for (const row of data.terminals) {
    const tr = document.createElement("tr");
    tr.dataset.terminal = row.terminal;
    for (const key of ["terminal", "link", "reader", "tamper", "ballots_cast", "outbox", "seen"]) {
      const td = document.createElement("td");
      td.textContent = row[key];
      td.dataset.field = key;
      if (["OFFLINE", "never seen", "TAMPER", "unavailable"].includes(row[key])) td.className = "bad";
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  let banner = data.stale ? data.stale + " — the data below may be out of date" : null;
  if (!data.connected && !banner) banner = "not connected to the station broker yet";
  setBanner(banner);
}

async function refresh() {
  try {
    const answer = await fetch("/status.json", { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    const data = await answer.json();
    lastGood = data.now;
    render(data);
    document.getElementById("updated").textContent = "updated 更新 " + clock(data.now);
  } catch (error) {
    setBanner("DASHBOARD SERVER UNREACHABLE (" + error.message + "); last update " + clock(lastGood) +
              " — the data below is out of date");
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
""".replace("REFRESH;", f"{REFRESH_MS};", 1)


class Dashboard:
    """The web dashboard; ``run()`` blocks until ``stop()`` (run it under infra.service)."""

    def __init__(self, station: Station, identity: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 clock: Any = time.time) -> None:  # fmt: skip
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise SiteError(f"the dashboard serves on a loopback address only, not {host!r}")
        self.station = station
        self.identity = identity
        self.host = host
        self.port = port
        self.clock = clock
        self.state = station_state(station)
        self.link = MonitorLink(station, identity, clock)
        self.vitals = Vitals()
        self.started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        self._stop_requested.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def run(self) -> None:
        asyncio.run(self._main())

    def start_thread(self) -> threading.Thread:
        """Serve in a background thread (tests); returns once the page answers."""
        thread = threading.Thread(target=self.run, name="dashboard", daemon=True)
        thread.start()
        if not self.started.wait(10):
            raise SiteError("the dashboard did not start")
        return thread

    def _status(self) -> dict[str, Any]:
        self.link.pump(self.state)
        now = self.clock()
        return {**self.state.to_json(now), "station": self.station.station_id, "now": now,
                "summary": self.state.summary()}  # fmt: skip

    async def _page(self, request: web.Request) -> web.Response:
        page = PAGE.replace("STATION", self.station.station_id)
        return web.Response(text=page, content_type="text/html", headers=SECURITY_HEADERS)

    async def _script(self, request: web.Request) -> web.Response:
        return web.Response(text=SCRIPT, content_type="application/javascript", headers=SECURITY_HEADERS)

    async def _css(self, request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", headers=SECURITY_HEADERS)

    async def _json(self, request: web.Request) -> web.Response:
        return web.json_response(self._status(), headers=SECURITY_HEADERS)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            return
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/dashboard.js", self._script)
        app.router.add_get("/dashboard.css", self._css)
        app.router.add_get("/status.json", self._json)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            server = site._server  # the bound port when port 0 was asked for
            if server is not None and getattr(server, "sockets", None):
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.link.start()
            self.vitals.mark_ready()
            self.started.set()
            while not self._stop.is_set():
                self.vitals.beat()
                self.link.pump(self.state)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
        finally:
            self.link.close()
            await runner.cleanup()
