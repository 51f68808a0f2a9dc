"""The voter session state machine, driven event by event with a fake clock (no I/O)."""

from __future__ import annotations

import pytest

from appliance.session import State, Timeouts, allowed
from appliance.session._state import TRANSITIONS
from appliance.session.events import (
    Acknowledged,
    Authenticate,
    Authenticated,
    AuthenticationFailed,
    CardInserted,
    CardProblem,
    CardTaken,
    Cast,
    CastBallot,
    Challenge,
    CheckedIn,
    CheckIn,
    CheckInFailed,
    EndSession,
    Key,
    KeyPress,
    PinEntered,
    Refusal,
    Seal,
    Sealed,
    ServiceChanged,
    Spoiled,
    Tap,
    Tick,
)
from appliance.session.session import Session
from election.manifest import sample_manifest

MANIFEST = sample_manifest(contests=2, selections=3, limit=1)


def authenticated_session(now: float = 0.0) -> Session:
    session = Session(MANIFEST, Timeouts(voting=60, result=10))
    session.handle(CardInserted(), now)
    assert session.handle(PinEntered("1234"), now) == [Authenticate("1234")]
    assert session.handle(Authenticated(), now) == [CheckIn()]
    assert session.handle(CheckedIn(), now) == []
    assert session.state is State.BALLOT
    return session


def vote(session: Session, first: str, second: str) -> None:
    session.handle(Tap(f"select:contest-1:{first}"), 1)
    session.handle(Tap("next"), 1)
    session.handle(Tap(f"select:contest-2:{second}"), 1)
    session.handle(Tap("review"), 1)
    assert session.state is State.REVIEW


def test_full_flow_with_one_challenge_then_cast() -> None:
    session = authenticated_session()
    vote(session, "candidate-2", "candidate-3")
    assert session.handle(Tap("seal"), 2) == [Seal({"contest-1": ("candidate-2",), "contest-2": ("candidate-3",)})]
    assert session.view()["busy"] is True
    session.handle(Sealed("aa" * 32), 3)
    assert session.handle(Tap("challenge"), 4) == [Challenge()]
    opened = {"contest-1": ("candidate-2",), "contest-2": ("candidate-3",)}
    session.handle(Spoiled("aa" * 32, opened), 5)
    assert session.state is State.SPOILED
    assert session.view()["opened_choices"] == {"contest-1": ["candidate-2"], "contest-2": ["candidate-3"]}
    session.handle(Tap("vote_again"), 6)
    assert session.state is State.BALLOT and session.view()["opened_choices"] is None
    session.handle(Tap("select:contest-1:candidate-1"), 7)
    session.handle(Tap("next"), 7)
    session.handle(Tap("review"), 7)
    assert session.handle(Tap("seal"), 8) == [Seal({"contest-1": ("candidate-1",), "contest-2": ("candidate-3",)})]
    session.handle(Sealed("bb" * 32), 9)
    assert session.handle(Tap("cast"), 10) == [CastBallot()]
    assert session.handle(Cast("cc" * 32), 11) == [EndSession()]
    view = session.view()
    assert view["screen"] == "receipt" and view["tracking_code"] is None and view["ballot_hash"] == "cc" * 32
    assert view["choices"] == {"contest-1": [], "contest-2": []}, "choices outlive the cast"
    session.handle(Acknowledged("dd" * 32, "XXXX-XXXX-XXXX-XXXX", 3), 12)
    assert session.view()["tracking_code"] is None, "an ack for another ballot was taken as ours"
    session.handle(Acknowledged("cc" * 32, "ABCD-EFGH-IJKL-MNOP", 4), 12)
    assert session.view()["tracking_code"] == "ABCD-EFGH-IJKL-MNOP"
    session.handle(Tap("done"), 13)
    assert session.state is State.IDLE and session.ballots_cast == 1


def test_limit_one_replaces_and_limit_two_refuses_overvote() -> None:
    session = authenticated_session()
    session.handle(Tap("select:contest-1:candidate-1"), 1)
    session.handle(Tap("select:contest-1:candidate-2"), 1)
    assert session.choices["contest-1"] == ["candidate-2"]
    session.handle(Tap("select:contest-1:candidate-2"), 1)
    assert session.choices["contest-1"] == []

    wide = Session(sample_manifest(contests=1, selections=3, limit=2))
    for event in (CardInserted(), PinEntered("1234"), Authenticated(), CheckedIn()):
        wide.handle(event, 0)
    for candidate in ("candidate-1", "candidate-2", "candidate-3"):
        wide.handle(Tap(f"select:contest-1:{candidate}"), 1)
    assert wide.choices["contest-1"] == ["candidate-1", "candidate-2"]


def test_unknown_or_out_of_screen_targets_are_ignored() -> None:
    session = authenticated_session()
    assert session.handle(Tap("cast"), 1) == []
    assert session.handle(Tap("select:contest-2:candidate-1"), 1) == [], "a contest not on screen was marked"
    assert session.handle(Tap("select:contest-1:nobody"), 1) == []
    assert session.state is State.BALLOT and session.choices == {"contest-1": [], "contest-2": []}


def test_keypad_walks_targets_and_selects() -> None:
    session = authenticated_session()
    assert session.view()["focus"] == "select:contest-1:candidate-1"
    session.handle(KeyPress(Key.DOWN), 1)
    session.handle(KeyPress(Key.SELECT), 1)
    assert session.choices["contest-1"] == ["candidate-2"]
    session.handle(KeyPress(Key.UP), 1)
    session.handle(KeyPress(Key.UP), 1)
    assert session.view()["focus"] == "next", "focus does not wrap around"
    session.handle(KeyPress(Key.SELECT), 1)
    assert session.contest_index == 1
    session.handle(KeyPress(Key.BACK), 1)
    assert session.contest_index == 0


@pytest.mark.parametrize(
    ("problem", "screen"),
    [
        (CardProblem.LOCKED, State.CARD_LOCKED),
        (CardProblem.INVALID, State.CARD_INVALID),
        (CardProblem.REMOVED, State.CARD_REMOVED),
    ],
)
def test_card_problems_end_the_session(problem: CardProblem, screen: State) -> None:
    session = Session(MANIFEST)
    session.handle(CardInserted(), 0)
    session.handle(PinEntered("1234"), 0)
    assert session.handle(AuthenticationFailed(problem), 1) == [EndSession()]
    assert session.state is screen


def test_wrong_pin_shows_tries_left_and_allows_retry() -> None:
    session = Session(MANIFEST)
    session.handle(CardInserted(), 0)
    session.handle(PinEntered("0000"), 0)
    session.handle(AuthenticationFailed(CardProblem.WRONG_PIN, 2), 1)
    assert session.state is State.WRONG_PIN and session.view()["tries_left"] == 2
    assert session.handle(PinEntered("1234"), 2) == [Authenticate("1234")]


@pytest.mark.parametrize(
    ("refusal", "screen"),
    [
        (Refusal.NOT_ELIGIBLE, State.NOT_ELIGIBLE),
        (Refusal.ALREADY_VOTED, State.ALREADY_VOTED),
        (Refusal.POLLS_CLOSED, State.POLLS_CLOSED),
    ],
)
def test_roll_refusals_end_the_session(refusal: Refusal, screen: State) -> None:
    session = Session(MANIFEST)
    for event in (CardInserted(), PinEntered("1234"), Authenticated()):
        session.handle(event, 0)
    assert session.handle(CheckInFailed(refusal), 1) == [EndSession()]
    assert session.state is screen
    session.handle(CardTaken(), 2)
    assert session.state is State.IDLE


def test_hub_unreachable_at_check_in_can_be_retried() -> None:
    session = Session(MANIFEST)
    for event in (CardInserted(), PinEntered("1234"), Authenticated()):
        session.handle(event, 0)
    assert session.handle(CheckInFailed(Refusal.HUB_UNREACHABLE), 1) == []
    assert session.state is State.HUB_UNREACHABLE
    assert session.handle(Tap("retry"), 2) == [CheckIn()]
    session.handle(CheckedIn(), 3)
    assert session.state is State.BALLOT


def test_card_removed_mid_vote_drops_every_choice() -> None:
    session = authenticated_session()
    vote(session, "candidate-1", "candidate-2")
    assert session.handle(CardTaken(), 5) == [EndSession()]
    assert session.state is State.CARD_REMOVED
    assert session.view()["choices"] == {"contest-1": [], "contest-2": []}
    session.handle(CardInserted(), 6)
    assert session.state is State.PIN


def test_card_taken_during_check_in_cancels_once_the_step_returns() -> None:
    session = Session(MANIFEST)
    for event in (CardInserted(), PinEntered("1234"), Authenticated()):
        session.handle(event, 0)
    session.handle(CardTaken(), 1)
    assert session.state is State.CHECKING_IN
    assert session.handle(CheckedIn(), 2) == [EndSession()]
    assert session.state is State.CARD_REMOVED


def test_card_taken_while_sealing_cancels_and_ignores_the_late_result() -> None:
    session = authenticated_session()
    vote(session, "candidate-1", "candidate-2")
    session.handle(Tap("seal"), 2)
    assert session.handle(CardTaken(), 3) == [EndSession()]
    assert session.handle(Sealed("aa" * 32), 4) == []
    assert session.state is State.CARD_REMOVED and session.sealed_hash is None


def test_card_taken_after_cast_keeps_the_receipt() -> None:
    session = authenticated_session()
    vote(session, "candidate-1", "candidate-2")
    session.handle(Tap("seal"), 2)
    session.handle(Sealed("aa" * 32), 3)
    session.handle(Tap("cast"), 4)
    session.handle(Cast("aa" * 32), 5)
    session.handle(CardTaken(), 6)
    assert session.state is State.RECEIPT


def test_idle_timeout_clears_everything() -> None:
    session = authenticated_session(now=100)
    vote(session, "candidate-1", "candidate-2")
    session.last_activity = 100
    assert session.handle(Tick(), 159) == []
    assert session.handle(Tick(), 160) == [EndSession()]
    view = session.view()
    assert view["screen"] == "idle" and view["choices"] == {"contest-1": [], "contest-2": []}
    assert view["tries_left"] is None and view["ballot_hash"] is None


def test_result_screens_time_out_sooner() -> None:
    session = Session(MANIFEST, Timeouts(voting=60, result=10))
    for event in (CardInserted(), PinEntered("1234"), Authenticated(), CheckInFailed(Refusal.ALREADY_VOTED)):
        session.handle(event, 0)
    session.handle(Tick(), 10)
    assert session.state is State.IDLE


def test_tamper_takes_the_booth_out_of_service_until_cleared() -> None:
    session = authenticated_session()
    assert session.handle(ServiceChanged(False, "enclosure open"), 1) == [EndSession()]
    assert session.state is State.OUT_OF_SERVICE
    session.handle(CardTaken(), 2)
    session.handle(CardInserted(), 2)
    assert session.state is State.OUT_OF_SERVICE
    session.handle(ServiceChanged(True), 3)
    assert session.state is State.IDLE


def test_view_never_holds_a_secret() -> None:
    session = authenticated_session()
    session.handle(PinEntered("9999"), 1)
    assert "9999" not in repr(session.view())
    assert "9999" not in repr(PinEntered("9999")) and "9999" not in repr(Authenticate("9999"))


def test_transition_table_is_closed() -> None:
    for source, targets in TRANSITIONS.items():
        for target in targets:
            assert allowed(source, target)
    assert not allowed(State.SEALED, State.REVIEW), "a sealed ballot could be silently dropped"
    assert not allowed(State.IDLE, State.BALLOT)
    assert not allowed(State.RECEIPT, State.CARD_REMOVED)
