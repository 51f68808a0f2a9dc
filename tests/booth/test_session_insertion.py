"""The insertion probe and the keypad's settings in the voter session (no I/O).

With ``check_card`` (as the booth runs it) a card put in is CHECKING_CARD until the shell's
CheckCard step answers: CardChecked → PIN (with the tries left), a card problem or closed
polls → their own screen, never the PIN screen. The help dialog carries every voter setting.
"""

from __future__ import annotations

import pytest

from appliance.session import BUSY_STATES, State, Timeouts
from appliance.session.events import (
    AuthenticationFailed,
    CardChecked,
    CardInserted,
    CardProblem,
    CardTaken,
    CheckCard,
    CheckInFailed,
    EndSession,
    Key,
    KeyPress,
    PinEntered,
    Refusal,
    StepFailed,
    Tick,
)
from appliance.session.session import DIALOG_TARGETS, Session
from election.manifest import sample_manifest

MANIFEST = sample_manifest(contests=2, selections=3)
TIMEOUTS = Timeouts(voting=60, result=10, busy=20)


def probing(now: float = 0.0) -> Session:
    session = Session(MANIFEST, TIMEOUTS, check_card=True)
    session.handle(CardInserted(), now)
    return session


def test_a_card_is_checked_before_the_pin_screen() -> None:
    session = Session(MANIFEST, TIMEOUTS, check_card=True)
    assert session.handle(CardInserted(), 0) == [CheckCard()]
    assert session.state is State.CHECKING_CARD and State.CHECKING_CARD in BUSY_STATES
    assert session.view()["busy"] is True and session.view()["targets"] == []
    assert session.handle(PinEntered("1234"), 1) == [], "no PIN is taken while the card is checked"
    assert session.handle(CardChecked(2, 3), 1) == []
    view = session.view()
    assert view["screen"] == "pin" and view["tries_left"] == 2 and view["max_tries"] == 3


@pytest.mark.parametrize(
    ("result", "screen"),
    [
        (AuthenticationFailed(CardProblem.LOCKED, 0), State.CARD_LOCKED),
        (AuthenticationFailed(CardProblem.INVALID), State.CARD_INVALID),
        (AuthenticationFailed(CardProblem.CANNOT_CHECK), State.CARD_CHECK_UNAVAILABLE),
        (AuthenticationFailed(CardProblem.REMOVED), State.CARD_REMOVED),
        (CheckInFailed(Refusal.POLLS_CLOSED), State.POLLS_CLOSED),
    ],
)
def test_a_refused_card_gets_its_screen_and_never_the_pin_screen(result, screen: State) -> None:
    session = probing()
    assert session.handle(result, 1) == [EndSession()]
    assert session.state is screen and session.view()["targets"] == ["done"]
    assert session.handle(PinEntered("1234"), 2) == []
    session.handle(CardTaken(), 3)
    assert session.state in (State.IDLE, State.CARD_REMOVED)
    assert session.handle(CardInserted(), 4)[-1] == CheckCard(), "the next card is checked again"


def test_the_card_taken_during_the_check_ends_at_once_and_the_late_result_is_ignored() -> None:
    session = probing()
    assert session.handle(CardTaken(), 1) == [EndSession()]
    assert session.state is State.CARD_REMOVED
    assert session.handle(CardChecked(3, 3), 2) == [] and session.state is State.CARD_REMOVED


@pytest.mark.parametrize("ending", ["step_failed", "busy_timeout"])
def test_a_check_that_fails_or_never_answers_ends_on_card_invalid(ending: str) -> None:
    session = probing(now=100)
    if ending == "step_failed":
        assert session.handle(StepFailed("CheckCard"), 101) == [EndSession()]
    else:
        assert session.handle(Tick(), 119) == [] and session.state is State.CHECKING_CARD
        assert session.handle(Tick(), 120) == [EndSession()]
    assert session.state is State.CARD_INVALID
    session.handle(CardTaken(), 121)
    assert session.handle(CardInserted(), 122) == [CheckCard()], "the next voter's card is checked"


def keys(session: Session, *pressed: Key, now: float = 1.0) -> None:
    for key in pressed:
        session.handle(KeyPress(key), now)


def test_the_keypad_reaches_language_text_size_contrast_and_audio_in_the_help_dialog() -> None:
    session = probing()
    session.handle(CardChecked(3, 3), 0)
    keys(session, Key.HELP)
    view = session.view()
    assert view["targets"] == DIALOG_TARGETS and view["focus"] == "close_help"

    def select(target: str) -> None:
        for _ in range(len(DIALOG_TARGETS)):
            focus = DIALOG_TARGETS.index(session.view()["focus"])
            if focus == DIALOG_TARGETS.index(target):
                break
            keys(session, Key.UP if focus > DIALOG_TARGETS.index(target) else Key.DOWN)
        assert session.view()["focus"] == target
        keys(session, Key.SELECT)

    select("set:language")
    select("set:text_size")
    select("set:text_size")
    select("set:contrast")
    select("set:rate")
    select("set:volume")
    select("set:volume")
    view = session.view()
    assert (view["language"], view["text_size"], view["theme"]) == ("en", 3, "low")
    assert view["audio"] == {"on": True, "rate": 3, "volume": 1, "paused": False, "repeat": 0}
    select("audio:pause")
    assert session.view()["audio"]["paused"] is True
    select("audio:repeat")
    assert session.view()["audio"] == {"on": True, "rate": 3, "volume": 1, "paused": False, "repeat": 1}
    keys(session, Key.UP, Key.UP)  # the focus stops at the top: it never wraps
    assert session.view()["focus"] == "audio:repeat"
    keys(session, Key.BACK)
    assert session.view()["help"] is False and session.state is State.PIN
    assert session.view()["pin_entry"]["entered"] == 0, "the settings entered no PIN digit"


def test_the_first_tactile_key_only_wakes_the_audio_and_settings_are_reset_for_the_next_voter() -> None:
    session = probing()
    session.handle(CardChecked(3, 3), 0)
    assert session.view()["audio"]["on"] is False
    session.handle(KeyPress(Key.UP, tactile=True), 1)
    view = session.view()
    assert view["audio"]["on"] is True and view["pin_entry"] == {"entered": 0, "length": 4, "digit": 0}
    session.handle(KeyPress(Key.UP, tactile=True), 2)
    assert session.view()["pin_entry"]["digit"] == 1, "later keys act"
    session.handle(CardTaken(), 3)
    session.handle(Tick(), 20)
    assert session.state is State.IDLE and session.view()["audio"]["on"] is False
