"""The audio ballot: what the booth's screen says, spoken through the headphones.

Japanese with Open JTalk (Debian ``open-jtalk`` + ``open-jtalk-mecab-naist-jdic`` + an HTS
voice), English with espeak-ng (Debian ``espeak-ng``). Three layers:

* :class:`Narrator` (no I/O): from one view of the voter session to the next, the sentence to
  say — the whole screen when it changes (or on "repeat", or when audio comes on), then only
  what moved: the focus, a choice made or removed, a PIN digit entered, a notice. It never
  reads the PIN wheel's value: a digit is "digit 2 of 4 entered", the wheel "up"/"down".
* :class:`Synthesizer` implementations (:class:`OpenJtalk`, :class:`EspeakNg`): text → WAV
  file, at the voter's rate (1–3) and volume (1–3).
* :class:`AudioGuide` (a thread): takes the booth's views (``Booth.view_listeners``), writes
  each sentence to a WAV file in a private spool folder and hands it to a :class:`Player`
  (``aplay``; a new sentence cuts the one playing). Pause stops it, repeat says the screen again.

What is spoken names the voter's choices, so the spool is private (0700, in RAM under
/dev/shm when there is one), each file is deleted once played, and the spool is emptied when a
session ends; the text is never logged. ``keep=True`` (tests) keeps the files and a record of
what was said.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("appliance.audio")

OPEN_JTALK_DICTIONARIES = ("/var/lib/mecab/dic/open-jtalk/naist-jdic",)
HTS_VOICES = (
    # Debian hts-voice-nitech-jp-atr503-m001 (where the release carries it):
    "/usr/share/hts-voice/nitech-jp-atr503-m001/nitech_jp_atr503_m001.htsvoice",
    "/usr/share/hts-voice/mei/mei_normal.htsvoice",
    "/usr/local/share/hts-voice/mei/mei_normal.htsvoice",
)
HTS_VOICE_ENV = "POLLING_STATION_HTS_VOICE"
"""A path to an ``.htsvoice`` file, tried before the packaged locations."""
ESPEAK_RATE = {1: 130, 2: 175, 3: 230}  # words per minute
ESPEAK_AMPLITUDE = {1: 40, 2: 100, 3: 180}  # 0–200
JTALK_SPEED = {1: 0.8, 2: 1.0, 3: 1.3}
JTALK_GAIN_DB = {1: -12.0, 2: -5.0, 3: 0.0}
SYNTH_TIMEOUT = 20.0


# --- the words ----------------------------------------------------------------------------


def load_catalogue() -> dict[str, dict[str, Any]]:
    """The kiosk page's message catalogue (appliance/ui/static/messages.json): one wording."""
    return json.loads(files("appliance.ui").joinpath("static/messages.json").read_text(encoding="utf-8"))


class Words:
    """One language's catalogue, with {placeholders} and plural forms as the page's t()."""

    def __init__(self, catalogue: Mapping[str, Mapping[str, Any]], language: str) -> None:
        self.language = language
        self._own = catalogue.get(language, {})
        self._fallback = catalogue.get("en", {})

    def __call__(self, key: str, **params: Any) -> str:
        message = self._own.get(key, self._fallback.get(key, key))
        if isinstance(message, dict):
            n = params.get("n")
            plural = "one" if n == 1 and self.language == "en" else "other"
            message = message.get(f"={n}", message.get(plural, message["other"]))
        for name, value in params.items():
            message = message.replace("{" + name + "}", str(value))
        return str(message)


def _name(item: Mapping[str, Any], language: str) -> str:
    names = item["name"]
    return str(names.get(language) or names.get("en") or next(iter(names.values())))


def spell(code: str, language: str) -> str:
    """A tracking code said one character at a time (groups already split by '-')."""
    separator = "、" if language == "ja" else ", "
    return separator.join(" ".join(group) for group in code.split("-"))


# --- the narrator (no I/O) ----------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    language: str
    text: str
    rate: int
    volume: int
    kind: str  # "screen", "focus", "choice", "pin", "notice", "dialog", "receipt", "setting"


class Narrator:
    """Turns successive views into sentences. ``election`` is the UI's /api/election document."""

    def __init__(self, election: Mapping[str, Any], catalogue: Mapping[str, Mapping[str, Any]]) -> None:
        self.election = election
        self.catalogue = catalogue
        self.previous: dict[str, Any] | None = None

    def update(self, view: dict[str, Any]) -> Utterance | None:
        before, self.previous = self.previous, view
        audio = view.get("audio") or {}
        if not audio.get("on") or audio.get("paused"):
            return None
        words = Words(self.catalogue, view["language"])
        kind, text = self._what_changed(before, view, words)
        if not text:
            return None
        return Utterance(view["language"], text, int(audio.get("rate", 2)), int(audio.get("volume", 2)), kind)

    # what to say

    def _what_changed(self, before: dict[str, Any] | None, view: dict[str, Any], t: Words) -> tuple[str, str]:
        b_audio = (before or {}).get("audio") or {}
        audio = view["audio"]
        whole = (
            before is None
            or not b_audio.get("on")
            or b_audio.get("paused")
            or audio.get("repeat") != b_audio.get("repeat")
            or before["screen"] != view["screen"]
            or before["busy"] != view["busy"]
            or before["language"] != view["language"]
            or before.get("contest_index") != view.get("contest_index")
        )
        if whole and not (before is not None and before.get("help") and view.get("help")):
            return "screen", self._join(t, self.screen(view, t), self._dialogs(view, t), self.focus(view, t))
        if view.get("timeout_warning") is not None and before.get("timeout_warning") is None:
            return "notice", t("warning_text", n=view["timeout_warning"])
        if view.get("notice") and not before.get("notice"):
            return "notice", self._notice(view, t)
        if view.get("help") and not before.get("help"):
            return "dialog", self._join(t, self._help(view, t), self.focus(view, t))
        if view.get("help") and audio.get("repeat") != b_audio.get("repeat"):
            return "dialog", self._join(t, self._help(view, t), self.focus(view, t))
        pin = self._pin_change(before, view, t)
        if pin:
            return "pin", pin
        choice = self._choice_change(before, view, t)
        if choice:
            return "choice", choice
        if view.get("screen") == "receipt" and view.get("receipt") != before.get("receipt"):
            return "receipt", t(f"receipt_{view['receipt']}")  # sent, then held by the station
        focus_now, focus_before = self.focus(view, t), self.focus(before, Words(self.catalogue, before["language"]))
        if view.get("focus") != before.get("focus") or (focus_now != focus_before and view.get("help")):
            return "focus", focus_now
        if before.get("help") and not view.get("help"):
            return "focus", focus_now
        return "", ""

    @staticmethod
    def _join(t: Words, *parts: str) -> str:
        end = "。" if t.language == "ja" else "."
        sentences = [part.strip().rstrip("。.…") for part in parts if part and part.strip()]
        return ("" if t.language == "ja" else " ").join(sentence + end for sentence in sentences)

    def screen(self, view: dict[str, Any], t: Words) -> str:
        """The whole screen, as a voter who cannot see it needs it."""
        screen = view["screen"]
        if view.get("busy"):
            return t("checking_card") if screen == "checking_card" else t("wait")
        if screen == "idle":
            return t("idle_take") if view.get("card_present") else t("idle")
        if screen in ("pin", "wrong_pin"):
            parts = [t("pin")]
            tries, limit = view.get("tries_left"), view.get("max_tries")
            if screen == "wrong_pin":
                parts = [t("pin_format") if view.get("pin_format_error") or tries is None else t("wrong_pin", n=tries)]
            elif tries is not None and limit is not None and tries < limit:
                parts.append(t("tries_left", n=tries))
            parts.append(t("say_pin_keypad", length=(view.get("pin_entry") or {}).get("length", 4)))
            return self._join(t, *parts)
        if screen == "ballot":
            contests = self.election["contests"]
            contest = contests[view["contest_index"]]
            marks = view["choices"].get(contest["id"], [])
            return self._join(
                t,
                t("contest_of", i=view["contest_index"] + 1, n=len(contests)),
                _name(contest, t.language),
                t("choose_up_to", n=contest["limit"]),
                t("chosen_count", n=len(marks), limit=contest["limit"]),
                t("say_keys"),
            )
        if screen == "review":
            parts = [t("review_title")]
            parts += [self._contest_marks(contest, view["choices"], t) for contest in self.election["contests"]]
            if view.get("undervotes"):
                parts.append(t("undervote_title"))
            return self._join(t, *parts, t("say_keys"))
        if screen == "sealed":
            return self._join(t, t("sealed_title"), t("sealed_text"))
        if screen == "spoiled":
            opened = view.get("opened_choices") or {}
            marks = [self._contest_marks(contest, opened, t) for contest in self.election["contests"]]
            return self._join(t, t("spoiled_title"), t("spoiled_text"), *marks)
        if screen == "receipt":
            code = spell(view["tracking_code"], t.language)
            return self._join(t, t("receipt_title"), t("tracking"), code, t(f"receipt_{view['receipt']}"),
                              t("receipt_text"))  # fmt: skip
        if screen == "hub_unreachable":  # the view names which part cannot check the voter in
            screen = view.get("unreachable") or screen
        return self._join(t, t(screen), t(f"{screen}_text"))

    def _contest_marks(self, contest: Mapping[str, Any], choices: Mapping[str, Any], t: Words) -> str:
        names = [_name(s, t.language) for s in contest["selections"] if s["id"] in choices.get(contest["id"], [])]
        marks = ("、" if t.language == "ja" else ", ").join(names) if names else t("none").strip("（）()")
        return t("say_contest_marks", name=_name(contest, t.language), marks=marks)

    def _dialogs(self, view: dict[str, Any], t: Words) -> str:
        if view.get("timeout_warning") is not None:
            return t("warning_text", n=view["timeout_warning"])
        if view.get("notice"):
            return self._notice(view, t)
        if view.get("help"):
            return self._help(view, t)
        return ""

    def _help(self, view: dict[str, Any], t: Words) -> str:
        helps = {"idle": "help_idle", "pin": "help_pin", "wrong_pin": "help_pin", "ballot": "help_ballot",
                 "review": "help_review", "sealed": "help_sealed"}  # fmt: skip
        return self._join(t, t("help_title"), t(helps.get(view["screen"], "help_other")), t("say_dialog"))

    def _notice(self, view: dict[str, Any], t: Words) -> str:
        notice = view["notice"]
        if notice.get("kind") != "overvote":
            return ""
        contest = next(c for c in self.election["contests"] if c["id"] == notice["contest"])
        wanted = next((s for s in contest["selections"] if s["id"] == notice["selection"]), None)
        name = _name(wanted, t.language) if wanted else ""
        return t("overvote", n=notice["limit"], limit=notice["limit"], name=name)

    def _pin_change(self, before: dict[str, Any], view: dict[str, Any], t: Words) -> str:
        """Digits entered, removed, or the wheel turned — never which digit (its value)."""
        now, then = view.get("pin_entry"), before.get("pin_entry")
        if not now or not then:
            return ""
        entered, length = now["entered"], now["length"]
        if entered > then["entered"]:
            if entered == length:
                return t("say_pin_complete", length=length)
            return t("say_pin_digit", i=entered, length=length)
        if entered < then["entered"]:
            return t("say_pin_removed")
        if now["digit"] != then["digit"]:
            return t("say_pin_up" if (now["digit"] - then["digit"]) % 10 == 1 else "say_pin_down")
        return ""

    def _choice_change(self, before: dict[str, Any], view: dict[str, Any], t: Words) -> str:
        if view["screen"] != "ballot" or before["screen"] != "ballot":
            return ""
        for contest in self.election["contests"]:
            old, new = set(before["choices"].get(contest["id"], [])), set(view["choices"].get(contest["id"], []))
            for selection in contest["selections"]:
                if selection["id"] in new ^ old:
                    state = t("say_chosen") if selection["id"] in new else t("say_not_chosen")
                    counted = t("chosen_count", n=len(new), limit=contest["limit"])
                    return self._join(t, t("say_candidate", name=_name(selection, t.language), state=state), counted)
        return ""

    def focus(self, view: dict[str, Any], t: Words) -> str:
        """The focused target, said as its button reads (only once the keypad is in use)."""
        target = view.get("focus")
        if not target or not view.get("keypad"):
            return ""
        return self.label(target, view, t)

    def label(self, target: str, view: dict[str, Any], t: Words) -> str:
        audio = view.get("audio") or {}
        if target.startswith("select:"):
            _, contest_id, selection_id = target.split(":", 2)
            contest = next(c for c in self.election["contests"] if c["id"] == contest_id)
            ids = [s["id"] for s in contest["selections"]]
            selection = contest["selections"][ids.index(selection_id)]
            chosen = selection_id in view["choices"].get(contest_id, [])
            state = t("say_chosen") if chosen else t("say_not_chosen")
            position = t("say_position", i=ids.index(selection_id) + 1, n=len(ids))
            return self._join(t, t("say_candidate", name=_name(selection, t.language), state=state), position)
        labels = {
            "set:language": t("setting_language"),
            "set:text_size": t("setting_text_size", n=view.get("text_size", 1)),
            "set:contrast": t("contrast_low" if view.get("theme") == "low" else "contrast_high"),
            "set:audio": t("setting_audio_on" if audio.get("on") else "setting_audio_off"),
            "set:rate": t(f"setting_rate_{audio.get('rate', 2)}"),
            "set:volume": t(f"setting_volume_{audio.get('volume', 2)}"),
            "audio:pause": t("audio_resume" if audio.get("paused") else "audio_pause"),
            "audio:repeat": t("audio_repeat"),
            "dismiss": t("ok"),
        }
        return labels.get(target) or t(target)


# --- synthesis and playback ---------------------------------------------------------------


class AudioUnavailable(RuntimeError):
    """A synthesizer (or its dictionary or voice) is not installed."""


class Synthesizer(Protocol):
    def synthesize(self, text: str, path: Path, rate: int, volume: int) -> None: ...


def _run(command: Sequence[str], text: str) -> None:
    try:
        done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=SYNTH_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AudioUnavailable(f"{command[0]}: {error}") from error
    if done.returncode != 0:  # its stderr may quote the text (the voter's choices): not logged
        raise AudioUnavailable(f"{command[0]} exited with status {done.returncode}")


def find_htsvoice(candidates: Sequence[str] = HTS_VOICES) -> Path:
    configured = os.environ.get(HTS_VOICE_ENV)
    for candidate in ([configured] if configured else []) + list(candidates):
        if Path(candidate).is_file():
            return Path(candidate)
    for root in ("/usr/share/hts-voice", "/usr/local/share/hts-voice"):
        found = sorted(Path(root).glob("*/*.htsvoice")) if Path(root).is_dir() else []
        if found:
            return found[0]
    raise AudioUnavailable(f"no HTS voice for Open JTalk (hts-voice-nitech-jp-atr503-m001, or set {HTS_VOICE_ENV})")


@dataclass(frozen=True)
class OpenJtalk:
    """Japanese: ``open_jtalk -x DIC -m VOICE -r SPEED -g DB -ow FILE`` with the text on stdin."""

    binary: str
    dictionary: Path
    voice: Path

    @classmethod
    def find(cls) -> OpenJtalk:
        binary = shutil.which("open_jtalk")
        dictionary = next((Path(p) for p in OPEN_JTALK_DICTIONARIES if Path(p, "sys.dic").is_file()), None)
        if binary is None or dictionary is None:
            raise AudioUnavailable("open_jtalk or its dictionary is missing (open-jtalk, open-jtalk-mecab-naist-jdic)")
        return cls(binary, dictionary, find_htsvoice())

    def synthesize(self, text: str, path: Path, rate: int, volume: int) -> None:
        command = [self.binary, "-x", str(self.dictionary), "-m", str(self.voice), "-r", str(JTALK_SPEED[rate]),
                   "-g", str(JTALK_GAIN_DB[volume]), "-ow", str(path)]  # fmt: skip
        _run(command, text)


@dataclass(frozen=True)
class EspeakNg:
    """English: ``espeak-ng -v en -s WPM -a AMPLITUDE -w FILE --stdin``."""

    binary: str
    voice: str = "en"

    @classmethod
    def find(cls) -> EspeakNg:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise AudioUnavailable("espeak-ng is not installed")
        return cls(binary)

    def synthesize(self, text: str, path: Path, rate: int, volume: int) -> None:
        command = [self.binary, "-v", self.voice, "-s", str(ESPEAK_RATE[rate]), "-a", str(ESPEAK_AMPLITUDE[volume]),
                   "-w", str(path), "--stdin"]  # fmt: skip
        _run(command, text)


def default_synthesizers() -> dict[str, Synthesizer]:
    """Japanese and English, each if installed (a missing one is logged; that language is silent)."""
    found: dict[str, Synthesizer] = {}
    for language, finder in (("ja", OpenJtalk.find), ("en", EspeakNg.find)):
        try:
            found[language] = finder()
        except AudioUnavailable as error:
            log.warning("audio ballot in %s unavailable: %s", language, error)
    return found


class Player(Protocol):
    """Plays one WAV file; ``stop()`` cuts it short. The thin layer over the sound device."""

    def play(self, path: Path, interrupted: Callable[[], bool]) -> None: ...


@dataclass
class CommandPlayer:
    """``aplay -q FILE`` (alsa-utils) into the headphone output; stopped when interrupted."""

    command: tuple[str, ...] = ("aplay", "-q")

    @classmethod
    def find(cls) -> CommandPlayer | None:
        return cls() if shutil.which("aplay") else None

    def play(self, path: Path, interrupted: Callable[[], bool]) -> None:
        process = subprocess.Popen([*self.command, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while process.poll() is None:
                if interrupted():
                    process.terminate()
                    break
                threading.Event().wait(0.05)
        finally:
            process.wait(5)


# --- the guide ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spoken:
    """What was said (kept only with ``keep=True``, for tests)."""

    path: Path
    utterance: Utterance
    screen: str


@dataclass
class AudioOptions:
    """How a booth speaks. ``spool`` None: a private folder in RAM. ``keep``: tests."""

    enabled: bool = True
    spool: Path | None = None
    keep: bool = False
    play: bool = True


def private_spool() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="booth-audio-", dir=base))  # mode 0700


@dataclass
class AudioGuide:
    narrator: Narrator
    synthesizers: Mapping[str, Synthesizer]
    spool: Path
    player: Player | None = None
    keep: bool = False
    spoken: list[Spoken] = field(default_factory=list)
    _views: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None
    _count: int = 0
    _idle: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def for_election(
        cls, election: Mapping[str, Any], options: AudioOptions, synthesizers: Mapping[str, Synthesizer] | None = None
    ) -> AudioGuide:
        spool = options.spool or private_spool()
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        player = CommandPlayer.find() if options.play else None
        if options.play and player is None:
            log.warning("no audio player (aplay) found: the audio ballot is synthesised but not played")
        found = default_synthesizers() if synthesizers is None else synthesizers
        return cls(Narrator(election, load_catalogue()), found, spool, player, options.keep)

    def start(self) -> AudioGuide:
        self._thread = threading.Thread(target=self._run, name="audio-guide", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._views.put(None)
        if self._thread is not None:
            self._thread.join(10)
        if not self.keep:
            shutil.rmtree(self.spool, ignore_errors=True)

    def on_view(self, view: dict[str, Any]) -> None:
        """Booth.view_listeners: called on the booth's worker, returns at once."""
        self._idle.clear()
        self._views.put(view)

    def wait_idle(self, timeout: float) -> bool:
        """Until every view so far has been spoken (tests)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            try:
                view = self._views.get(timeout=0.5)
            except queue.Empty:
                self._idle.set()
                continue
            if view is None:
                return
            try:
                self._speak(view)
            except Exception:
                log.exception("the audio guide failed on a view")
            if self._views.empty():
                self._idle.set()

    def _speak(self, view: dict[str, Any]) -> None:
        utterance = self.narrator.update(view)
        if view["screen"] == "idle" and not self.keep:
            self._wipe()  # the session is over: nothing of it stays, even in RAM
        if utterance is None:
            return
        synthesizer = self.synthesizers.get(utterance.language)
        if synthesizer is None:
            return
        self._count += 1
        path = self.spool / f"{self._count:06d}-{utterance.language}-{utterance.kind}.wav"
        try:
            synthesizer.synthesize(utterance.text, path, utterance.rate, utterance.volume)
        except AudioUnavailable as error:
            log.error("speech synthesis failed: %s", error)
            return
        if self.keep:
            self.spoken.append(Spoken(path, utterance, view["screen"]))
        if self.player is not None:
            self.player.play(path, interrupted=lambda: not self._views.empty())
        if not self.keep:
            path.unlink(missing_ok=True)

    def _wipe(self) -> None:
        for leftover in self.spool.glob("*.wav"):
            leftover.unlink(missing_ok=True)


def election_document(manifest: Any) -> dict[str, Any]:
    """The names the narrator needs, as the UI's /api/election has them."""
    return {
        "contests": [
            {
                "id": contest.id,
                "name": dict(contest.name),
                "limit": contest.limit,
                "selections": [{"id": s.id, "name": dict(s.name)} for s in contest.selections],
            }
            for contest in manifest.contests
        ]
    }
