"""A voter without a browser: drives a booth through the same HTTP calls the kiosk page makes.

For demos, load tests and fault tests. The card is a virtual JPKI card inserted into vpcd
(pcscd) — or any card the booth's reader sees; this class only talks to the UI server.

    voter = ScriptedVoter("http://127.0.0.1:8080/")
    voter.wait_screen("pin"); voter.pin("1234")
    voter.wait_screen("ballot")
    voter.vote({"contest-1": ["candidate-2"], "contest-2": ["candidate-1"]})
    voter.seal(); voter.challenge()            # optional Benaloh challenge → "spoiled"
    voter.tap("vote_again"); voter.vote(...); voter.seal(); view = voter.cast()
    view["tracking_code"], view["receipt"]    # the code at once; "held" once the station has it
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any


class VoterError(Exception):
    """The booth did not reach the expected screen in time (the message names both)."""


class ScriptedVoter:
    def __init__(self, base_url: str, timeout: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.version = -1
        self.view: dict[str, Any] = {}

    def _request(self, path: str, body: dict[str, Any] | None = None, timeout: float = 15.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def election(self) -> dict[str, Any]:
        return self._request("/api/election")

    def state(self, wait: bool = False) -> dict[str, Any]:
        """The current view (with ``wait``: the next one after the last seen, long poll)."""
        answer = self._request(f"/api/state?after={self.version if wait else -1}")
        self.version, self.view = answer["version"], answer["view"]
        return self.view

    def send(self, kind: str, field: str, value: str) -> None:
        self._request("/api/event", {"kind": kind, field: value})

    def tap(self, target: str) -> None:
        self.send("tap", "target", target)

    def pin(self, secret: str) -> None:
        self.send("pin", "secret", secret)

    def key(self, key: str) -> None:
        self.send("key", "key", key)

    def wait_screen(self, *screens: str, timeout: float | None = None, **expect: Any) -> dict[str, Any]:
        """Wait until the booth shows one of ``screens`` (not busy) with the ``expect`` fields."""
        deadline = time.monotonic() + (timeout or self.timeout)
        view = self.state()
        while True:
            if view["screen"] in screens and not view["busy"] and all(view.get(k) == v for k, v in expect.items()):
                return view
            if time.monotonic() > deadline:
                raise VoterError(f"expected {screens} {expect or ''}, the booth shows {view['screen']!r}")
            view = self.state(wait=True)

    def vote(self, choices: dict[str, list[str]]) -> dict[str, Any]:
        """From the first contest's screen, mark ``choices`` and go to the review screen."""
        contests = [contest["id"] for contest in self.election()["contests"]]
        view = self.wait_screen("ballot")
        for index, contest in enumerate(contests):
            view = self.wait_screen("ballot", contest_index=index)
            for selection in view["choices"][contest]:  # clear what a previous round left
                self.tap(f"select:{contest}:{selection}")
            for selection in choices.get(contest, []):
                self.tap(f"select:{contest}:{selection}")
            self.tap("review" if index == len(contests) - 1 else "next")
        return self.wait_screen("review")

    def seal(self) -> dict[str, Any]:
        self.tap("seal")
        return self.wait_screen("sealed")

    def challenge(self) -> dict[str, Any]:
        self.tap("challenge")
        return self.wait_screen("spoiled")

    def cast(self, wait_for_code: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Cast; returns the receipt view. The tracking code is on it at once (it derives from
        the ballot); ``wait_for_code`` waits until the receipt confirms it, i.e. the station's
        ledger holds the ballot (``receipt`` "held"), or the timeout."""
        self.tap("cast")
        view = self.wait_screen("receipt")
        if wait_for_code and view["receipt"] != "held":
            deadline = time.monotonic() + (timeout or self.timeout)
            while view["receipt"] != "held" and time.monotonic() < deadline:
                view = self.state(wait=True)
        return view
