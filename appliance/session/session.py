"""The voter session: a state machine that takes events and returns effects, with no I/O.

The shell (appliance.booth) feeds it events from the reader, keypad, page and hub, runs the
effects it returns (authenticate, check in, seal, challenge, cast, forget) and feeds their
results back. Time is passed in (``now``, seconds on any monotonic clock), so the idle
timeout is tested without sleeping.

No state can hold a booth for good: every busy state ("please wait") ends on its step's
result, on a StepFailed from the shell (the step raised), on the busy timeout (its result
never came) and — where nothing of the voter's is at stake yet — on card removal; and if
handling an event itself raises, the shell calls fail(). Each of these ends the session on a
result screen that the next card clears. The session holds only what the screen shows: the
screen, the focus and the voter's choices — never a key, token or nonce — and when a session
ends (done, cancel, card removed, timeout) the choices go with it. The one exception in
transit: PIN digits entered on the keypad alone are held until the fourth is confirmed (then
they leave as Authenticate, like a PinEntered's), never shown in view().

Voter aids live here too, so keypad, page and audio see the same thing: the help dialog,
text size (1–4) and contrast theme (reset for each voter), the overvote notice (a choice is
never silently replaced), the undervotes listed for the review, and the inactivity warning
(the last ``Timeouts.warning`` seconds count down; any touch or key only dismisses it; its
end before a cast is TIMED_OUT, "session ended, no vote cast"). The focus never wraps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from appliance.session._state import (
    BUSY_STATES,
    CARD_BOUND_STATES,
    ERROR_STATES,
    RESETTABLE_STATES,
    TIMEOUT_STATES,
    IllegalTransition,
    State,
    allowed,
)
from appliance.session.events import (
    Authenticate,
    Authenticated,
    AuthenticationFailed,
    CardChecked,
    CardInserted,
    CardProblem,
    CardTaken,
    Cast,
    CastBallot,
    Challenge,
    CheckCard,
    CheckedIn,
    CheckIn,
    CheckInFailed,
    Effect,
    EndSession,
    Event,
    Held,
    HubLink,
    Key,
    KeyPress,
    Language,
    PinEntered,
    Refusal,
    Seal,
    Sealed,
    ServiceChanged,
    Spoiled,
    StepFailed,
    Tap,
    TextSize,
    Theme,
    Tick,
)
from election.chain import tracking_code
from election.manifest import Manifest

LANGUAGES = ("ja", "en")
TEXT_SIZES = (1, 2, 3, 4)
THEMES = ("high", "low")
SPEECH_RATES = (1, 2, 3)  # slow, normal, fast
VOLUMES = (1, 2, 3)  # soft, normal, loud
DEFAULT_RATE = DEFAULT_VOLUME = 2
DIALOG_TARGETS = ["audio:repeat", "audio:pause", "set:language", "set:text_size", "set:contrast", "set:audio",
                  "set:rate", "set:volume", "close_help"]  # fmt: skip
"""The help key's dialog, top to bottom: the keypad reaches every voter setting from here (the
focus starts on "close", at the bottom: select closes at once, up walks to the settings)."""
PIN_LENGTH = 4  # the JPKI authentication PIN; the keypad enters exactly this many digits
VOTER_EVENTS = (KeyPress, Tap, PinEntered, Language, TextSize, Theme)

REFUSAL_STATES = {
    Refusal.NOT_ELIGIBLE: State.NOT_ELIGIBLE,
    Refusal.ALREADY_VOTED: State.ALREADY_VOTED,
    Refusal.POLLS_CLOSED: State.POLLS_CLOSED,
    Refusal.HUB_UNREACHABLE: State.HUB_UNREACHABLE,
    Refusal.ROLL_UNREACHABLE: State.HUB_UNREACHABLE,
    Refusal.STALE_CRL: State.HUB_UNREACHABLE,
}
RETRYABLE_REFUSALS = frozenset({Refusal.HUB_UNREACHABLE, Refusal.ROLL_UNREACHABLE, Refusal.STALE_CRL})
"""Check-in refusals about the station, not the voter: the session waits on a retry screen that
says which part cannot check the voter in (the view's ``unreachable``)."""
CARD_PROBLEM_STATES = {
    CardProblem.LOCKED: State.CARD_LOCKED,
    CardProblem.INVALID: State.CARD_INVALID,
    CardProblem.REMOVED: State.CARD_REMOVED,
    CardProblem.CANNOT_CHECK: State.CARD_CHECK_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds without a voter's touch before the session is cleared."""

    voting: float = 120.0  # PIN, ballot, review, sealed, spoiled
    result: float = 30.0  # receipt and error screens
    busy: float = 60.0  # a "please wait" step that never reports back (the slowest, check-in, allows 8 s)
    warning: float = 30.0  # the last seconds of ``voting`` show a countdown (at most half of it)


class Session:
    def __init__(
        self, manifest: Manifest, timeouts: Timeouts = Timeouts(), language: str = "ja", *, check_card: bool = False
    ) -> None:
        """``check_card``: a card put in is first probed (CHECKING_CARD, effect CheckCard:
        certificate, CRL, tries left, polls) and the PIN is asked only if it passes — what the
        booth does; without it (tests of the screens alone) a card goes straight to PIN."""
        self.manifest = manifest
        self.check_card = check_card
        self.timeouts = timeouts
        self.default_language = language
        self.state = State.IDLE
        self.card_present = False
        self.service_problem: str | None = None
        self.hub_online = False
        self.ballots_cast = 0
        self.busy_since = 0.0
        self._reset_voter(0.0)

    # --- the voter's data (cleared at the end of every session) ---------------------------

    def _reset_voter(self, now: float) -> None:
        self.language = self.default_language
        self.text_size = TEXT_SIZES[0]
        self.theme = THEMES[0]
        self.keypad_used = False  # the focus is drawn only once the voter uses the keypad
        self.help_open = False
        self.help_focus = len(DIALOG_TARGETS) - 1
        self.unreachable = Refusal.HUB_UNREACHABLE.value  # which part the retry screen names
        # Audio ballot (headphones): on once the keypad is used, unless the voter turns it off.
        self.audio: bool | None = None
        self.speech_rate, self.volume = DEFAULT_RATE, DEFAULT_VOLUME
        self.audio_paused = False
        self.audio_repeat = 0  # counts "repeat" requests: the audio guide says the screen again
        self.warning: int | None = None  # seconds left before the inactivity timeout, while warned
        self.notice: dict[str, Any] | None = None  # e.g. an overvote: shown until the next action
        # Digits entered on the keypad (a PIN in transit, like PinEntered's): never in view().
        self._keypad_pin: list[str] = []
        self.pin_wheel = 0
        self.focus = 0
        self.contest_index = 0
        self.choices: dict[str, list[str]] = {contest.id: [] for contest in self.manifest.contests}
        self.tries_left: int | None = None
        self.max_tries: int | None = None
        self.pin_format_error = False
        self.sealed_hash: str | None = None
        self.opened_choices: dict[str, tuple[str, ...]] | None = None
        self.cast_hash: str | None = None
        self.held = False  # the station's ledger holds the cast ballot (its ack came)
        self.last_activity = now

    # --- entry point ----------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Apply one event at time ``now``; returns what the shell must do, in order."""
        if not isinstance(event, Tick | Held | HubLink):
            self.last_activity = now
        before = self.state
        if isinstance(event, VOTER_EVENTS) and (self.warning is not None or self.notice is not None):
            # A dialog is open (inactivity warning, overvote notice): the voter is back, and a
            # touch or key only dismisses it — it never acts on the screen underneath.
            self.warning = self.notice = None
            if isinstance(event, KeyPress | Tap):
                return []
        effects = self._apply(event, now)
        if self.state is not before:
            self.help_open, self.warning, self.notice, self._keypad_pin, self.pin_wheel = False, None, None, [], 0
        if self.state in CARD_BOUND_STATES and self.state not in BUSY_STATES and not self.card_present:
            # The card left while the shell was busy for this voter: cancel now.
            effects += self._end(now, State.CARD_REMOVED)
        if self.state in BUSY_STATES and self.state is not before:
            self.busy_since = now
        return effects

    def fail(self, now: float) -> list[Effect]:
        """Reset after handle() itself raised (a bug): the state may be half-changed.

        The voter's data is dropped and the booth shows SESSION_ERROR, which the next card (or
        the voter taking theirs, or the result timeout) clears, so the next voter can vote.
        """
        if self.state not in RESETTABLE_STATES:
            self._reset_voter(now)
            return [EndSession()]
        return self._end(now, State.SESSION_ERROR)

    def _apply(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Tick():
                return self._tick(now)
            case ServiceChanged(available=available, reason=reason):
                return self._service(available, reason, now)
            case HubLink(online=online):
                self.hub_online = online
                return []
            case CardInserted():
                self.card_present = True
                return self._card_inserted(now)
            case CardTaken():
                self.card_present = False
                return self._card_taken(now)
            case Language(code=code):
                if code in LANGUAGES:
                    self.language = code
                return []
            case TextSize(level=level):
                if level in TEXT_SIZES:
                    self.text_size = level
                return []
            case Theme(name=name):
                if name in THEMES:
                    self.theme = name
                return []
            case KeyPress(key=key, tactile=tactile):
                if tactile and not self.keypad_used and self.audio is None:
                    self.keypad_used = True  # wakes the audio guide: this key does nothing else
                    return []
                return self._key(key, now)
            case Tap(target=target):
                return self._tap(target, now)
            case CardChecked(tries_left=tries, max_tries=limit) if self.state is State.CHECKING_CARD:
                self._move(State.PIN)
                self.tries_left, self.max_tries, self.focus = tries, limit, 0
                return []
            case AuthenticationFailed(problem=problem) if self.state is State.CHECKING_CARD:
                target = CARD_PROBLEM_STATES.get(problem, State.CARD_INVALID)
                return self._end(now, target)
            case CheckInFailed(refusal=Refusal.POLLS_CLOSED) if self.state is State.CHECKING_CARD:
                return self._end(now, State.POLLS_CLOSED)
            case PinEntered(secret=secret) if self.state in (State.PIN, State.WRONG_PIN):
                self._move(State.AUTHENTICATING)
                return [Authenticate(secret)]
            case Authenticated() if self.state is State.AUTHENTICATING:
                if not self.card_present:  # gone before the roll heard of this voter: stop here
                    return self._end(now, State.CARD_REMOVED)
                self._move(State.CHECKING_IN)
                return [CheckIn()]
            case StepFailed():
                return self._step_failed(now)
            case AuthenticationFailed(problem=problem, tries_left=tries) if self.state is State.AUTHENTICATING:
                return self._authentication_failed(problem, tries, now)
            case CheckedIn() if self.state is State.CHECKING_IN:
                self._move(State.BALLOT)
                self.contest_index, self.focus = 0, 0
                return []
            case CheckInFailed(refusal=refusal) if self.state is State.CHECKING_IN:
                self._move(REFUSAL_STATES[refusal])
                self.focus = 0
                if refusal in RETRYABLE_REFUSALS:
                    self.unreachable = refusal.value
                    return []
                return [EndSession()]
            case Sealed(ballot_hash=ballot_hash) if self.state is State.SEALING:
                self.sealed_hash = ballot_hash
                self._move(State.SEALED)
                self.focus = 0
                return []
            case Spoiled(opened_choices=opened) if self.state is State.SPOILING:
                self.opened_choices = opened
                self.sealed_hash = None
                self._move(State.SPOILED)
                self.focus = 0
                return []
            case Cast(ballot_hash=ballot_hash) if self.state is State.CASTING:
                self.cast_hash = ballot_hash
                self.ballots_cast += 1
                self.choices = {contest: [] for contest in self.choices}
                self._move(State.RECEIPT)
                self.focus = 0
                return [EndSession()]
            case Held(ballot_hash=ballot_hash):
                if self.state is State.RECEIPT and ballot_hash == self.cast_hash:
                    self.held = True
                return []
        return []

    # --- handlers -------------------------------------------------------------------------

    def _move(self, target: State) -> None:
        if not allowed(self.state, target):
            raise IllegalTransition(f"{self.state} → {target}")
        self.state = target

    def _end(self, now: float, target: State = State.IDLE) -> list[Effect]:
        """Close the session: forget the voter's data, tell the shell to forget the rest."""
        was_active = self.state is not State.IDLE
        self._move(target)
        shown = (self.language, self.text_size, self.theme, self.keypad_used, self.audio, self.speech_rate, self.volume)
        self._reset_voter(now)
        if target is not State.IDLE:  # the result screen speaks to the voter who is still here (and is heard)
            (self.language, self.text_size, self.theme, self.keypad_used, self.audio, self.speech_rate,
             self.volume) = shown  # fmt: skip
        return [EndSession()] if was_active else []

    def _step_failed(self, now: float) -> list[Effect]:
        """A busy step raised or never answered: end the session on a clear error screen.

        A failed authentication is the card's ("this card cannot be used": it is the card's
        answer the card module could not handle); any other step is SESSION_ERROR, which
        claims nothing about what was recorded (a failed cast may have been committed).
        Outside busy states (a late report) it changes nothing.
        """
        if self.state not in BUSY_STATES:
            return []
        card_step = self.state in (State.CHECKING_CARD, State.AUTHENTICATING)
        return self._end(now, State.CARD_INVALID if card_step else State.SESSION_ERROR)

    def _tick(self, now: float) -> list[Effect]:
        if self.state in BUSY_STATES:
            return self._step_failed(now) if now - self.busy_since >= self.timeouts.busy else []
        elapsed = now - self.last_activity
        if self.state in (State.IDLE, State.OUT_OF_SERVICE):
            if elapsed >= self.timeouts.result and self._has_settings():
                self._reset_voter(now)  # a language or text size chosen by someone who left
            return []
        if self.state in TIMEOUT_STATES:
            limit = self.timeouts.voting
            if elapsed >= limit:
                return self._end(now, State.TIMED_OUT)
            warn = min(self.timeouts.warning, limit / 2)
            self.warning = math.ceil(limit - elapsed) if elapsed >= limit - warn else None
            return []
        if elapsed >= self.timeouts.result:
            return self._end(now)
        return []

    def _has_settings(self) -> bool:
        chosen = (self.language, self.text_size, self.theme) != (self.default_language, TEXT_SIZES[0], THEMES[0])
        return chosen or self.keypad_used or self.audio is not None

    def _service(self, available: bool, reason: str, now: float) -> list[Effect]:
        if available:
            self.service_problem = None
            return self._end(now) if self.state is State.OUT_OF_SERVICE else []
        self.service_problem = reason or "out of service"
        if self.state in BUSY_STATES:
            return []  # the running step finishes; the next event finds the booth out of service
        return self._end(now, State.OUT_OF_SERVICE)

    def _card_inserted(self, now: float) -> list[Effect]:
        if self.service_problem is not None:
            if self.state is not State.OUT_OF_SERVICE:
                return self._end(now, State.OUT_OF_SERVICE)
            return []
        if self.state is State.IDLE or self.state in ERROR_STATES:
            effects = self._end(now) if self.state is not State.IDLE else []
            if not self.check_card:
                self._move(State.PIN)
                return effects
            self._move(State.CHECKING_CARD)
            return [*effects, CheckCard()]
        return []

    def _card_taken(self, now: float) -> list[Effect]:
        if self.state in CARD_BOUND_STATES:  # authenticating too: no result is worth waiting for
            return self._end(now, State.CARD_REMOVED)
        if self.state in ERROR_STATES and self.state is not State.CARD_REMOVED:
            return self._end(now)
        # The receipt stays until done/timeout; check-in and cast report their own outcome
        # (the roll may have marked the voter, the ballot may be committed), bounded by the
        # busy timeout.
        return []

    def _authentication_failed(self, problem: CardProblem, tries: int | None, now: float) -> list[Effect]:
        if problem in (CardProblem.WRONG_PIN, CardProblem.BAD_FORMAT):
            self._move(State.WRONG_PIN)
            self.pin_format_error = problem is CardProblem.BAD_FORMAT
            if tries is not None:
                self.tries_left = tries
            self.focus = 0
            return []
        target = CARD_PROBLEM_STATES[problem]
        effects = self._end(now, target)
        return effects

    # --- touch targets and keypad --------------------------------------------------------

    def targets(self) -> list[str]:
        """The screen's actionable targets, in focus order (the keypad walks this list)."""
        if self.warning is not None:
            return ["stay"]
        if self.notice is not None:
            return ["dismiss"]
        if self.help_open:
            return list(DIALOG_TARGETS)
        return self.screen_targets()

    def screen_targets(self) -> list[str]:
        """The targets of the screen itself (under the help or timeout dialog, if one is open)."""
        state = self.state
        if state is State.BALLOT:
            contest = self.manifest.contests[self.contest_index]
            last = self.contest_index == len(self.manifest.contests) - 1
            targets = [f"select:{contest.id}:{s.id}" for s in contest.selections]
            targets.append("review" if last else "next")
            if self.contest_index > 0:
                targets.append("previous")
            return targets
        return {
            State.PIN: ["cancel"],
            State.WRONG_PIN: ["cancel"],
            State.REVIEW: ["seal", "change"],
            State.SEALED: ["cast", "challenge"],
            State.SPOILED: ["vote_again"],
            State.RECEIPT: ["done"],
            State.HUB_UNREACHABLE: ["retry", "cancel"],
        }.get(state, ["done"] if state in ERROR_STATES else [])

    def _key(self, key: Key, now: float) -> list[Effect]:
        self.keypad_used = True
        if self.state in BUSY_STATES:
            return []
        if key is Key.HELP or (self.help_open and key is Key.BACK):
            self.help_open = not self.help_open
            self.help_focus = len(DIALOG_TARGETS) - 1
            return []
        if self.help_open:  # up/down walk the dialog (no wrap), select acts on its focus
            if key is Key.UP:
                self.help_focus = max(0, self.help_focus - 1)
            elif key is Key.DOWN:
                self.help_focus = min(len(DIALOG_TARGETS) - 1, self.help_focus + 1)
            elif key is Key.SELECT:
                return self._tap(DIALOG_TARGETS[self.help_focus], now)
            return []
        if self.state in (State.PIN, State.WRONG_PIN):
            return self._pin_key(key, now)
        targets = self.targets()
        if key is Key.BACK:
            back = {State.BALLOT: "previous", State.REVIEW: "change", State.PIN: "cancel", State.WRONG_PIN: "cancel"}
            target = back.get(self.state)
            return self._tap(target, now) if target else []
        if not targets:
            return []
        # The focus stops at either end (it never wraps from the last target to the first).
        if key is Key.UP:
            self.focus = max(0, min(self.focus, len(targets) - 1) - 1)
        elif key is Key.DOWN:
            self.focus = min(len(targets) - 1, self.focus + 1)
        elif key is Key.SELECT:
            return self._tap(targets[min(self.focus, len(targets) - 1)], now)
        return []

    def _pin_key(self, key: Key, now: float) -> list[Effect]:
        """PIN entry on the keypad alone: up/down turn the digit, select takes it (and, once all
        four are in, submits), back removes the last digit (or, with none, cancels)."""
        digits = self._keypad_pin
        if key is Key.UP:
            self.pin_wheel = (self.pin_wheel + 1) % 10
        elif key is Key.DOWN:
            self.pin_wheel = (self.pin_wheel - 1) % 10
        elif key is Key.BACK:
            if not digits:
                return self._end(now)
            digits.pop()
        elif len(digits) < PIN_LENGTH:
            digits.append(str(self.pin_wheel))
            self.pin_wheel = 0
        else:
            secret = "".join(digits)
            self._keypad_pin = []
            return self._apply(PinEntered(secret), now)
        return []

    def _tap(self, target: str, now: float) -> list[Effect]:
        state = self.state
        if target not in self.targets():
            return []
        if target == "close_help":
            self.help_open = False
            return []
        if target.startswith(("set:", "audio:")):
            self._setting(target)
            return []
        if target in ("cancel", "done"):
            return self._end(now)
        if target.startswith("select:"):
            _, contest_id, selection_id = target.split(":", 2)
            self._toggle(contest_id, selection_id)
            self.focus = self.screen_targets().index(target)
            return []
        if target in ("next", "previous"):
            self.contest_index += 1 if target == "next" else -1
            self.focus = 0
            return []
        if state is State.BALLOT and target == "review":
            self._move(State.REVIEW)
            self.focus = 0
            return []
        if state is State.REVIEW and target == "change":
            self._move(State.BALLOT)
            self.contest_index, self.focus = 0, 0
            return []
        if state is State.REVIEW and target == "seal":
            self._move(State.SEALING)
            return [Seal({contest: tuple(marks) for contest, marks in self.choices.items()})]
        if state is State.SEALED and target == "cast":
            self._move(State.CASTING)
            return [CastBallot()]
        if state is State.SEALED and target == "challenge":
            self._move(State.SPOILING)
            return [Challenge()]
        if state is State.SPOILED and target == "vote_again":
            self.opened_choices = None
            self._move(State.BALLOT)
            self.contest_index, self.focus = 0, 0
            return []
        if state is State.HUB_UNREACHABLE and target == "retry":
            self._move(State.CHECKING_IN)
            return [CheckIn()]
        return []

    def _setting(self, target: str) -> None:
        """One step of a voter setting from the help dialog (keypad or touch): each cycles."""
        if target == "set:language":
            self.language = LANGUAGES[(LANGUAGES.index(self.language) + 1) % len(LANGUAGES)]
        elif target == "set:text_size":
            self.text_size = TEXT_SIZES[(TEXT_SIZES.index(self.text_size) + 1) % len(TEXT_SIZES)]
        elif target == "set:contrast":
            self.theme = THEMES[(THEMES.index(self.theme) + 1) % len(THEMES)]
        elif target == "set:audio":
            self.audio = not self.audio_on
            self.audio_paused = False
        elif target == "set:rate":
            self.speech_rate = SPEECH_RATES[(SPEECH_RATES.index(self.speech_rate) + 1) % len(SPEECH_RATES)]
        elif target == "set:volume":
            self.volume = VOLUMES[(VOLUMES.index(self.volume) + 1) % len(VOLUMES)]
        elif target == "audio:pause":
            self.audio_paused = not self.audio_paused
        elif target == "audio:repeat":
            self.audio_paused = False
            self.audio_repeat += 1

    @property
    def audio_on(self) -> bool:
        return self.keypad_used if self.audio is None else self.audio

    def _toggle(self, contest_id: str, selection_id: str) -> None:
        marks = self.choices[contest_id]
        limit = self.manifest.contest(contest_id).limit
        if selection_id in marks:
            marks.remove(selection_id)
        elif len(marks) < limit:
            marks.append(selection_id)
        else:  # never replace a choice silently: say so, and let the voter deselect first
            self.notice = {"kind": "overvote", "contest": contest_id, "limit": limit, "selection": selection_id}

    # --- what the page shows -------------------------------------------------------------

    def _focus_index(self) -> int:
        if self.help_open and self.warning is None and self.notice is None:
            return self.help_focus
        return self.focus

    def _receipt_status(self) -> str | None:
        """What the receipt may claim (page and audio say the same): ``held`` once the station's
        ledger holds the cast ballot; before that ``sending`` (sent, no confirmation yet) or,
        with the station out of reach, ``kept`` (it waits on this terminal)."""
        if self.state is not State.RECEIPT:
            return None
        return "held" if self.held else "sending" if self.hub_online else "kept"

    def view(self) -> dict[str, Any]:
        """Everything the page needs to draw the current screen (no secret in it)."""
        targets = self.targets()
        return {
            "screen": self.state.value,
            "busy": self.state in BUSY_STATES,
            "language": self.language,
            "targets": targets,
            "screen_targets": self.screen_targets(),
            "focus": targets[min(self._focus_index(), len(targets) - 1)] if targets else None,
            "contest_index": self.contest_index,
            "choices": {contest: list(marks) for contest, marks in self.choices.items()},
            "tries_left": self.tries_left,
            "max_tries": self.max_tries,
            "pin_format_error": self.pin_format_error,
            "opened_choices": {c: list(m) for c, m in self.opened_choices.items()} if self.opened_choices else None,
            "ballot_hash": self.cast_hash,
            # Known at sealing, from the ballot itself, so the receipt shows it at once.
            "tracking_code": None if self.cast_hash is None else tracking_code(bytes.fromhex(self.cast_hash)),
            "receipt": self._receipt_status(),
            "hub_online": self.hub_online,
            "card_present": self.card_present,
            "service_problem": self.service_problem,
            "unreachable": self.unreachable if self.state is State.HUB_UNREACHABLE else None,
            "text_size": self.text_size,
            "theme": self.theme,
            "keypad": self.keypad_used,
            "help": self.help_open,
            "audio": {
                "on": self.audio_on,
                "rate": self.speech_rate,
                "volume": self.volume,
                "paused": self.audio_paused,
                "repeat": self.audio_repeat,
            },
            "timeout_warning": self.warning,
            "notice": dict(self.notice) if self.notice else None,
            "undervotes": [
                contest.id for contest in self.manifest.contests if len(self.choices[contest.id]) < contest.limit
            ],
            "pin_entry": (
                {"entered": len(self._keypad_pin), "length": PIN_LENGTH, "digit": self.pin_wheel}
                if self.state in (State.PIN, State.WRONG_PIN) and self.keypad_used
                else None
            ),
        }
