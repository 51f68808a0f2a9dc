"""A keypad-only vote with the audio ballot, from card tap to tracking code, in Japanese (Open
JTalk) and English (espeak-ng), on the real stack: pcscd + vpcd virtual card, Mosquitto,
ledger, roll, and the tactile keypad of a virtual companion board running the real firmware
in MicroPython. The audio guide writes every sentence to a WAV file; each is checked with sox
(``sox FILE -n stat``: RMS amplitude above silence, a sane duration).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from booth_fixtures import PIN, Voters, terminal_data_dir

from appliance.audio import AudioOptions, load_catalogue, spell
from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.session.session import DIALOG_TARGETS
from appliance.simulators.companion_board import VirtualCompanionBoard, install_factory_firmware
from appliance.simulators.jpki_card import VirtualJpkiCard
from station_hub.station import Station

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SILENCE_RMS = 0.005
CATALOGUE = load_catalogue()


def sox_stat(path: Path) -> dict[str, float]:
    done = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True, timeout=30, check=True)
    stats = {}
    for line in done.stderr.splitlines():
        match = re.match(r"^(.+?):\s+(-?[0-9.]+)$", line.strip())
        if match:
            stats[match.group(1).strip()] = float(match.group(2))
    return stats


class Keypad:
    """The companion board's keys, each press waited for until the booth's view moved."""

    def __init__(self, board: VirtualCompanionBoard, runner: BoothRunner) -> None:
        assert runner.booth is not None
        self.board, self.booth = board, runner.booth

    def press(self, key: str, times: int = 1) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for _ in range(times):
            version, _ = self.booth.view()
            self.board.press(key)
            after, view = self.booth.wait_view(version, 5)
            assert after > version, f"the booth did not react to the {key} key"
        return view

    def wait(self, screen: str, timeout: float = 20, **expect: Any) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        version, view = self.booth.view()
        while not (view["screen"] == screen and not view["busy"] and all(view.get(k) == v for k, v in expect.items())):
            assert time.monotonic() < deadline, f"expected {screen} {expect}, the booth shows {view['screen']}"
            version, view = self.booth.wait_view(version, 1)
        return view


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualCompanionBoard]:
    root = tmp_path_factory.mktemp("board")
    install_factory_firmware(root / "fs")
    virtual = VirtualCompanionBoard(root / "fs", port_link=root / "ttyCOMPANION").start()
    try:
        yield virtual
    finally:
        virtual.stop()


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def runner(station: Station, voters: Voters, hub: Any, pcscd: Any, board: VirtualCompanionBoard, spool: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoothRunner]:  # fmt: skip
    config_path = terminal_data_dir(station, voters, "t1", tmp_path_factory.mktemp("t1"), pcscd.reader)
    config = json.loads(config_path.read_text())
    config["companion_port"] = board.port
    config_path.write_text(json.dumps(config))
    running = BoothRunner(load_config(config_path), audio=AudioOptions(spool=spool, keep=True, play=False)).start()
    assert running.booth is not None and running.booth.link.wait_online(10)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(("language", "voter"), [("ja", 4), ("en", 5)])
def test_a_keypad_only_vote_with_the_audio_ballot(
    runner: BoothRunner, board: VirtualCompanionBoard, card_slot: Any, voters: Voters, language: str, voter: int
) -> None:
    guide = runner.audio
    assert guide is not None and set(guide.synthesizers) == {"ja", "en"}, "Open JTalk and espeak-ng must be installed"
    keypad = Keypad(board, runner)
    keypad.wait("idle", card_present=False)
    first = len(guide.spoken)
    link = card_slot.insert(VirtualJpkiCard(voters.eligible[voter]))
    keypad.wait("pin")
    assert keypad.press("select")["audio"]["on"] is True, "the first key wakes the audio guide"
    if language == "en":  # help → ▲ to "Language" → select → back: the keypad reaches the settings
        keypad.press("help")
        keypad.press("up", len(DIALOG_TARGETS) - 1 - DIALOG_TARGETS.index("set:language"))
        assert keypad.press("select")["language"] == "en"
        assert keypad.press("back")["help"] is False
    for digit in PIN:
        if int(digit):
            keypad.press("up", int(digit))
        keypad.press("select")
    keypad.press("select")  # confirm the 4 digits
    keypad.wait("ballot")
    keypad.press("select")  # candidate 1 of contest 1
    keypad.press("down", 3)
    keypad.press("select")  # next
    keypad.wait("ballot", contest_index=1)
    keypad.press("down")
    keypad.press("select")  # candidate 2 of contest 2
    keypad.press("down", 2)
    keypad.press("select")  # review
    review = keypad.wait("review")
    assert review["choices"] == {"contest-1": ["candidate-1"], "contest-2": ["candidate-2"]}
    keypad.press("select")  # seal
    keypad.wait("sealed")
    keypad.press("select")  # cast
    code = keypad.wait("receipt")["tracking_code"]
    assert code, "no tracking code"
    keypad.wait("receipt", receipt="held")
    assert guide.wait_idle(120), "the audio guide did not finish speaking"
    card_slot.remove(link)
    keypad.press("select")  # finish
    keypad.wait("idle")

    spoken = guide.spoken[first:]
    after_language = [s for s in spoken if s.screen != "pin" or s.utterance.language == language]
    assert {s.utterance.language for s in after_language[-5:]} == {language}
    kinds = {s.utterance.kind for s in spoken}
    assert {"screen", "pin", "focus", "choice"} <= kinds, kinds
    texts = [s.utterance.text for s in spoken]
    words = CATALOGUE[language]
    assert any(words["say_pin_digit"].replace("{length}", "4").replace("{i}", "1") in text for text in texts)
    assert any(words["say_pin_complete"].replace("{length}", "4") in text for text in texts)
    assert any(spell(code, language) in text for text in texts), "the tracking code was not read out"
    assert any(words["receipt_held"].rstrip("。.") in text for text in texts), "the station's receipt was not said"
    pin_texts = [s.utterance.text for s in spoken if s.utterance.kind == "pin"]
    up = words["say_pin_up"]
    assert pin_texts.count(up) == sum(int(d) for d in PIN), "each turn of the wheel is 'up', never its value"
    for item in spoken:
        assert item.path.is_file() and item.path.name.split("-")[1] == item.utterance.language
        stats = sox_stat(item.path)
        assert stats["RMS     amplitude"] > SILENCE_RMS, (item.path.name, stats)
        assert 0.1 < stats["Length (seconds)"] < 60, (item.path.name, stats)
