"""Voter aids in the session (no I/O): keypad-only PIN, help, text size and contrast, the
inactivity warning and its "session ended" screen, overvote and undervote notices."""

from __future__ import annotations

from appliance.session import State, Timeouts, allowed
from appliance.session.events import (
    Authenticate,
    AuthenticationFailed,
    CardInserted,
    CardProblem,
    CardTaken,
    CheckedIn,
    EndSession,
    Key,
    KeyPress,
    Language,
    PinEntered,
    Tap,
    TextSize,
    Theme,
    Tick,
)
from appliance.session.events import Authenticated as Authed
from appliance.session.session import Session
from election.manifest import sample_manifest

MANIFEST = sample_manifest(contests=2, selections=3, limit=1)
TIMEOUTS = Timeouts(voting=60, result=10, warning=20)


def keys(session: Session, *pressed: Key, now: float = 1) -> list[object]:
    effects: list[object] = []
    for key in pressed:
        effects += session.handle(KeyPress(key), now)
    return effects


def on_ballot(now: float = 0) -> Session:
    session = Session(MANIFEST, TIMEOUTS)
    for event in (CardInserted(), PinEntered("1234"), Authed(), CheckedIn()):
        session.handle(event, now)
    assert session.state is State.BALLOT
    return session


def test_the_pin_is_entered_on_the_keypad_alone() -> None:
    session = Session(MANIFEST, TIMEOUTS)
    session.handle(CardInserted(), 0)
    assert session.view()["pin_entry"] is None, "no keypad entry shown to a touch voter"
    keys(session, Key.UP)  # digit 1
    assert session.view()["pin_entry"] == {"entered": 0, "length": 4, "digit": 1}
    keys(session, Key.SELECT, Key.UP, Key.UP, Key.SELECT)  # 1, 2
    keys(session, Key.DOWN, Key.SELECT)  # 9 (the digit turns 0 → 9)
    keys(session, Key.SELECT)  # 0
    keys(session, Key.BACK)  # remove the 0
    keys(session, Key.UP, Key.UP, Key.UP, Key.UP, Key.SELECT)  # 4
    view = session.view()
    assert view["pin_entry"] == {"entered": 4, "length": 4, "digit": 0}
    assert "1294" not in repr(view), "the digits entered are never in the view"
    assert keys(session, Key.SELECT) == [Authenticate("1294")]
    assert session.state is State.AUTHENTICATING
    session.handle(AuthenticationFailed(CardProblem.WRONG_PIN, 2), 2)
    assert session.view()["pin_entry"] == {"entered": 0, "length": 4, "digit": 0}, "a fresh entry after a wrong PIN"


def test_back_with_no_digit_cancels_the_pin_screen() -> None:
    session = Session(MANIFEST, TIMEOUTS)
    session.handle(CardInserted(), 0)
    keys(session, Key.SELECT)
    assert keys(session, Key.BACK) == [] and session.state is State.PIN
    assert keys(session, Key.BACK) == [EndSession()] and session.state is State.IDLE


def test_the_help_key_opens_and_closes_help_without_acting() -> None:
    session = on_ballot()
    keys(session, Key.HELP)
    view = session.view()  # the dialog's settings lie above "close", where the focus starts
    assert view["help"] is True and view["targets"][-1] == "close_help" and view["focus"] == "close_help"
    keys(session, Key.DOWN, Key.SELECT)  # select closes help; nothing was chosen
    assert session.view()["help"] is False and session.choices["contest-1"] == []
    keys(session, Key.HELP)
    session.handle(Tap("close_help"), 2)
    assert session.view()["help"] is False
    keys(session, Key.HELP, Key.HELP)
    assert session.view()["help"] is False


def test_focus_is_shown_only_after_a_key_and_selection_is_separate() -> None:
    session = on_ballot()
    assert session.view()["keypad"] is False
    keys(session, Key.DOWN)
    view = session.view()
    assert view["keypad"] is True and view["focus"] == "select:contest-1:candidate-2"
    assert view["choices"]["contest-1"] == [], "moving the focus chooses nothing"


def test_text_size_and_theme_are_reset_for_the_next_voter() -> None:
    session = on_ballot()
    for event in (TextSize(4), Theme("low"), Language("en"), TextSize(9), Theme("neon")):
        session.handle(event, 1)
    view = session.view()
    assert (view["text_size"], view["theme"], view["language"]) == (4, "low", "en")
    session.handle(CardTaken(), 2)
    session.handle(CardInserted(), 3)
    view = session.view()
    assert (view["text_size"], view["theme"], view["language"]) == (1, "high", "ja")


def test_settings_chosen_at_idle_by_someone_who_left_are_reset() -> None:
    session = Session(MANIFEST, TIMEOUTS)
    session.handle(TextSize(3), 0)
    session.handle(Tick(), 5)
    assert session.view()["text_size"] == 3
    session.handle(Tick(), 10)
    assert session.view()["text_size"] == 1


def test_inactivity_warning_counts_down_and_a_touch_dismisses_it() -> None:
    session = on_ballot()
    session.handle(Tap("select:contest-1:candidate-1"), 0)
    session.handle(Tick(), 39.9)
    assert session.view()["timeout_warning"] is None
    session.handle(Tick(), 40)
    assert session.view()["timeout_warning"] == 20
    session.handle(Tick(), 50.5)
    view = session.view()
    assert view["timeout_warning"] == 10 and view["targets"] == ["stay"]
    assert keys(session, Key.DOWN, now=51) == []
    view = session.view()
    assert view["timeout_warning"] is None and view["focus"] == "select:contest-1:candidate-1", "the key only dismissed"
    assert view["choices"]["contest-1"] == ["candidate-1"]
    session.handle(Tick(), 100)
    session.handle(Tap("stay"), 100)
    assert session.view()["timeout_warning"] is None and session.state is State.BALLOT


def test_inactivity_ends_on_a_session_ended_screen_before_cast_only() -> None:
    session = on_ballot()
    session.handle(Tap("select:contest-1:candidate-1"), 0)
    assert session.handle(Tick(), 60) == [EndSession()]
    assert session.state is State.TIMED_OUT and session.choices["contest-1"] == []
    session.handle(CardInserted(), 61)  # the next voter's card clears it
    assert session.state is State.PIN
    for state in (State.RECEIPT, State.CASTING, State.CHECKING_IN, State.IDLE):
        assert not allowed(state, State.TIMED_OUT), state


def test_timed_out_screen_clears_when_the_card_is_taken() -> None:
    session = on_ballot()
    session.handle(Tick(), 60)
    session.handle(CardTaken(), 61)
    assert session.state is State.IDLE


def test_undervotes_are_listed_for_the_review() -> None:
    session = on_ballot()
    session.handle(Tap("select:contest-1:candidate-1"), 1)
    session.handle(Tap("next"), 1)
    session.handle(Tap("review"), 1)
    assert session.state is State.REVIEW and session.view()["undervotes"] == ["contest-2"]


def test_overvote_in_a_vote_for_two_contest() -> None:
    wide = Session(sample_manifest(contests=1, selections=3, limit=2), TIMEOUTS)
    for event in (CardInserted(), PinEntered("1234"), Authed(), CheckedIn()):
        wide.handle(event, 0)
    for candidate in ("candidate-1", "candidate-2", "candidate-3"):
        wide.handle(Tap(f"select:contest-1:{candidate}"), 1)
    assert wide.choices["contest-1"] == ["candidate-1", "candidate-2"]
    assert wide.handle(KeyPress(Key.SELECT), 1) == [] and wide.choices["contest-1"] == ["candidate-1", "candidate-2"]
    wide.handle(Tap("select:contest-1:candidate-3"), 1)
    view = wide.view()
    assert view["targets"] == ["dismiss"] and view["screen_targets"][0] == "select:contest-1:candidate-1"
    assert view["notice"] == {"kind": "overvote", "contest": "contest-1", "limit": 2, "selection": "candidate-3"}


def test_a_result_screen_keeps_the_voters_language_and_the_next_voter_gets_the_default() -> None:
    session = on_ballot()
    session.handle(Language("en"), 1)
    session.handle(TextSize(2), 1)
    session.handle(CardTaken(), 2)
    view = session.view()
    assert (view["screen"], view["language"], view["text_size"]) == ("card_removed", "en", 2)
    session.handle(CardInserted(), 3)
    view = session.view()
    assert (view["screen"], view["language"], view["text_size"]) == ("pin", "ja", 1)
