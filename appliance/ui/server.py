"""The kiosk page's server (aiohttp, 127.0.0.1 only).

The page is a thin view: it draws what ``GET /api/state`` returns (the session's view, no
secret in it) and sends what the voter does with ``POST /api/event``. Every request body is
validated; anything else gets a 400 with a sentence saying why. The same two calls are the
API of the scripted voter (appliance/simulators/scripted_voter.py).

    GET  /api/election          contests, selections and names (ja/en) of the manifest
    GET  /api/state?after=N     the view once its version is > N (long poll, 10 s max)
    POST /api/event             {"kind": "tap", "target": T} | {"kind": "pin", "secret": S}
                                | {"kind": "key", "key": up|down|select|back|help}
                                | {"kind": "language", "code": ja|en}
                                | {"kind": "text_size", "level": "1".."4"}
                                | {"kind": "theme", "name": high|low}
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import segno
from aiohttp import web

from appliance.booth import Booth
from appliance.session import events as ev

log = logging.getLogger("appliance.ui")
BIND_RETRY_SECONDS = 5.0
LONG_POLL_MAX = 10.0
MAX_BODY = 4096


def static_dir() -> Path:
    """The kiosk page's folder, shipped inside the `appliance.ui` package (pyproject package data).

    Found with importlib.resources so an installed booth serves the page it was installed with.
    aiohttp serves from a real directory, which pip's unpacked install always is.
    """
    folder = files("appliance.ui").joinpath("static")
    if not isinstance(folder, Path) or not folder.joinpath("index.html").is_file():
        raise RuntimeError(f"the kiosk page is not installed ({folder}): reinstall the product from its wheel")
    return folder


def election_json(booth: Booth) -> dict[str, Any]:
    manifest = booth.election.manifest
    return {
        "name": dict(manifest.name),
        "contests": [
            {
                "id": contest.id,
                "name": dict(contest.name),
                "limit": contest.limit,
                "selections": [{"id": s.id, "name": dict(s.name)} for s in contest.selections],
            }
            for contest in manifest.contests
        ],
    }


def parse_event(data: Any) -> ev.Event:
    """The page's request → a session event; ValueError with a reason otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise ValueError("expected an object with a kind")
    kind = data["kind"]
    value = {
        "tap": "target",
        "pin": "secret",
        "key": "key",
        "language": "code",
        "text_size": "level",
        "theme": "name",
    }.get(kind)
    if value is None:
        raise ValueError(f"unknown kind {kind!r}")
    if set(data) != {"kind", value} or not isinstance(data[value], str) or len(data[value]) > 200:
        raise ValueError(f"{kind}: expected exactly {value} (a short string)")
    text = data[value]
    if kind == "tap":
        return ev.Tap(text)
    if kind == "pin":
        return ev.PinEntered(text)
    if kind == "key":
        try:
            return ev.KeyPress(ev.Key(text))
        except ValueError:
            raise ValueError(f"unknown key {text!r}") from None
    if kind == "text_size":
        if text not in ("1", "2", "3", "4"):
            raise ValueError("text_size: level must be 1, 2, 3 or 4")
        return ev.TextSize(int(text))
    if kind == "theme":
        return ev.Theme(text)
    return ev.Language(text)


def make_app(booth: Booth) -> web.Application:
    routes = web.RouteTableDef()
    election = election_json(booth)
    static = static_dir()

    @routes.get("/")
    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static / "index.html", headers={"Cache-Control": "no-store"})

    @routes.get("/api/election")
    async def get_election(request: web.Request) -> web.Response:
        return web.json_response(election)

    @routes.get("/api/state")
    async def get_state(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "-1"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an integer") from None
        loop = asyncio.get_running_loop()
        version, view = await loop.run_in_executor(None, booth.wait_view, after, LONG_POLL_MAX)
        code = view.get("tracking_code")
        qr = segno.make(code, error="m").svg_data_uri(scale=8, border=2) if code else None
        return web.json_response({"version": version, "view": view, "qr": qr}, headers={"Cache-Control": "no-store"})

    @routes.post("/api/event")
    async def post_event(request: web.Request) -> web.Response:
        try:
            body = await request.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ValueError("request too large")
            event = parse_event(json.loads(body))
        except (ValueError, UnicodeDecodeError) as error:
            log.warning("page sent a bad event: %s", error)
            raise web.HTTPBadRequest(text=str(error)) from None
        booth.submit(event)
        return web.json_response({"accepted": True})

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes(routes)
    app.router.add_static("/static/", static)
    return app


class UiServer:
    """The aiohttp server on its own thread and event loop, bound to 127.0.0.1 only."""

    def __init__(self, booth: Booth, port: int, host: str = "127.0.0.1") -> None:
        self.booth, self.host, self.port = booth, host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="ui", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> UiServer:
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"the UI server did not start on {self.host}:{self.port}: {self._error}")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(make_app(self.booth), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(self._bind())
        except BaseException as error:  # reported by start()
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _bind(self) -> None:
        """Listen on the kiosk port; a booth restarted at once (systemd, or after a crash) may
        find the port still held for a moment by what the old process left, so it retries."""
        assert self._runner is not None
        deadline = time.monotonic() + BIND_RETRY_SECONDS
        while True:
            try:
                await web.TCPSite(self._runner, self.host, self.port).start()
                return
            except OSError as error:
                if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                log.info("kiosk port %s:%d busy; retrying", self.host, self.port)
                await asyncio.sleep(0.25)

    def stop(self) -> None:
        if self._runner is None or not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
