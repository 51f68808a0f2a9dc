"""The voter session state machine, driven event by event with a fake clock (no I/O)."""

from __future__ import annotations

import pytest

from appliance.session import BUSY_STATES, ERROR_STATES, State, Timeouts, allowed
from appliance.session._state import TRANSITIONS
from appliance.session.events import (
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
    Held,
    HubLink,
    Key,
    KeyPress,
    PinEntered,
    Refusal,
    Seal,
    Sealed,
    ServiceChanged,
    Spoiled,
    StepFailed,
    Tap,
    Tick,
)
from appliance.session.session import Session
from election.chain import tracking_code
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
    session.handle(Tap("select:contest-1:candidate-2"), 7)  # deselect first: a choice is never replaced
    session.handle(Tap("select:contest-1:candidate-1"), 7)
    session.handle(Tap("next"), 7)
    session.handle(Tap("review"), 7)
    assert session.handle(Tap("seal"), 8) == [Seal({"contest-1": ("candidate-1",), "contest-2": ("candidate-3",)})]
    session.handle(Sealed("bb" * 32), 9)
    assert session.handle(Tap("cast"), 10) == [CastBallot()]
    assert session.handle(Cast("cc" * 32), 11) == [EndSession()]
    view = session.view()
    assert view["screen"] == "receipt" and view["ballot_hash"] == "cc" * 32
    assert view["tracking_code"] == tracking_code(bytes.fromhex("cc" * 32)), "the code is known at sealing"
    assert view["receipt"] == "kept", "no link to the station: the ballot waits on this terminal"
    assert view["choices"] == {"contest-1": [], "contest-2": []}, "choices outlive the cast"
    session.handle(HubLink(True), 12)
    assert session.view()["receipt"] == "sending"
    session.handle(Held("dd" * 32), 12)
    assert session.view()["receipt"] == "sending", "a held ack for another ballot was taken as ours"
    session.handle(Held("cc" * 32), 12)
    assert session.view()["receipt"] == "held"
    session.handle(HubLink(False), 12)
    assert session.view()["receipt"] == "held", "once held, always held"
    session.handle(Tap("done"), 13)
    assert session.state is State.IDLE and session.ballots_cast == 1


def test_an_overvote_is_refused_with_a_notice_and_never_replaces_a_choice() -> None:
    session = authenticated_session()
    session.handle(Tap("select:contest-1:candidate-1"), 1)
    session.handle(Tap("select:contest-1:candidate-2"), 1)
    assert session.choices["contest-1"] == ["candidate-1"]
    assert session.view()["notice"] == {
        "kind": "overvote", "contest": "contest-1", "limit": 1, "selection": "candidate-2"
    }  # fmt: skip
    assert session.view()["targets"] == ["dismiss"]
    session.handle(Tap("select:contest-1:candidate-1"), 1)
    assert session.choices["contest-1"] == ["candidate-1"], "the touch only dismissed the notice"
    assert session.view()["notice"] is None
    session.handle(Tap("select:contest-1:candidate-1"), 1)
    assert session.choices["contest-1"] == []
    session.handle(Tap("select:contest-1:candidate-2"), 1)
    assert session.choices["contest-1"] == ["candidate-2"]

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
    assert session.view()["focus"] == "select:contest-1:candidate-1", "focus stops at the first target"
    for _ in range(6):
        session.handle(KeyPress(Key.DOWN), 1)
    assert session.view()["focus"] == "next", "focus stops at the last target (no wrap to candidate 1)"
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


@pytest.mark.parametrize("refusal", [Refusal.HUB_UNREACHABLE, Refusal.ROLL_UNREACHABLE, Refusal.STALE_CRL])
def test_a_station_side_refusal_at_check_in_names_the_part_and_can_be_retried(refusal: Refusal) -> None:
    session = Session(MANIFEST)
    for event in (CardInserted(), PinEntered("1234"), Authenticated()):
        session.handle(event, 0)
    assert session.handle(CheckInFailed(refusal), 1) == []
    assert session.state is State.HUB_UNREACHABLE
    assert session.view()["unreachable"] == refusal.value
    assert session.handle(Tap("retry"), 2) == [CheckIn()]
    assert session.view()["unreachable"] is None
    session.handle(CheckedIn(), 3)
    assert session.state is State.BALLOT


def test_the_next_voter_never_sees_the_previous_voters_unreachable_part() -> None:
    session = Session(MANIFEST)
    for event in (CardInserted(), PinEntered("1234"), Authenticated()):
        session.handle(event, 0)
    session.handle(CheckInFailed(Refusal.ROLL_UNREACHABLE), 1)
    session.handle(Tap("cancel"), 2)
    session.handle(CardTaken(), 3)
    for event in (CardInserted(), PinEntered("1234"), Authenticated()):
        session.handle(event, 4)
    session.handle(CheckInFailed(Refusal.HUB_UNREACHABLE), 5)
    assert session.view()["unreachable"] == "hub_unreachable"


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
    assert view["screen"] == "timed_out" and view["choices"] == {"contest-1": [], "contest-2": []}
    assert view["tries_left"] is None and view["ballot_hash"] is None
    assert view["targets"] == ["done"]
    session.handle(Tick(), 170)  # the result timeout (10 s)
    assert session.state is State.IDLE


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


# --- busy states never hold the booth ---------------------------------------------------------

BUSY = Timeouts(voting=60, result=10, busy=20)


def session_in(state: State, now: float = 0.0) -> Session:
    """A session driven (the way the shell drives it) into the busy ``state``."""
    session = Session(MANIFEST, BUSY)
    session.handle(CardInserted(), now)
    session.handle(PinEntered("1234"), now)
    if state is State.AUTHENTICATING:
        return session
    session.handle(Authenticated(), now)
    if state is State.CHECKING_IN:
        return session
    session.handle(CheckedIn(), now)
    vote(session, "candidate-1", "candidate-2")
    session.handle(Tap("seal"), now)
    if state is State.SEALING:
        return session
    session.handle(Sealed("aa" * 32), now)
    session.handle(Tap("challenge" if state is State.SPOILING else "cast"), now)
    assert session.state is state
    return session


def next_voter_votes(session: Session, now: float) -> None:
    """After whatever ended the last session, a new card leads to the ballot and a cast."""
    if session.card_present:
        session.handle(CardTaken(), now)
    session.handle(CardInserted(), now)
    assert session.state is State.PIN
    assert session.handle(PinEntered("1234"), now) == [Authenticate("1234")]
    session.handle(Authenticated(), now)
    session.handle(CheckedIn(), now)
    assert session.state is State.BALLOT and session.choices == {"contest-1": [], "contest-2": []}
    session.handle(Tap("select:contest-1:candidate-1"), now)
    session.handle(Tap("next"), now)
    session.handle(Tap("review"), now)
    session.handle(Tap("seal"), now)
    session.handle(Sealed("ee" * 32), now)
    session.handle(Tap("cast"), now)
    session.handle(Cast("ee" * 32), now)
    assert session.state is State.RECEIPT


def test_busy_states_are_the_expected_ones() -> None:
    assert {State.CHECKING_CARD, State.AUTHENTICATING, State.CHECKING_IN, State.SEALING, State.SPOILING,
            State.CASTING} == BUSY_STATES  # fmt: skip
    assert State.SESSION_ERROR in ERROR_STATES


@pytest.mark.parametrize("state", sorted(BUSY_STATES - {State.CHECKING_CARD}))  # that one: test_session_insertion.py
def test_a_busy_step_that_never_reports_times_out_to_an_error_screen(state: State) -> None:
    session = session_in(state, now=100)
    assert session.handle(Tick(), 119) == []
    assert session.state is state
    assert session.handle(Tick(), 120) == [EndSession()]
    expected = State.CARD_INVALID if state is State.AUTHENTICATING else State.SESSION_ERROR
    assert session.state is expected and session.view()["busy"] is False
    assert session.view()["targets"] == ["done"]
    next_voter_votes(session, 121)


@pytest.mark.parametrize("state", sorted(BUSY_STATES - {State.CHECKING_CARD}))  # that one: test_session_insertion.py
def test_a_failed_step_resets_the_session_and_the_late_result_is_ignored(state: State) -> None:
    session = session_in(state)
    assert session.handle(StepFailed("Boom"), 1) == [EndSession()]
    expected = State.CARD_INVALID if state is State.AUTHENTICATING else State.SESSION_ERROR
    assert session.state is expected
    assert session.view()["choices"] == {"contest-1": [], "contest-2": []}
    late = {
        State.AUTHENTICATING: Authenticated(),
        State.CHECKING_IN: CheckedIn(),
        State.SEALING: Sealed("aa" * 32),
        State.SPOILING: Spoiled("aa" * 32, {}),
        State.CASTING: Cast("aa" * 32),
    }[state]
    assert session.handle(late, 2) == [] and session.state is expected
    next_voter_votes(session, 3)


def test_a_step_failure_reported_outside_a_busy_state_changes_nothing() -> None:
    session = authenticated_session()
    assert session.handle(StepFailed("Late"), 1) == []
    assert session.state is State.BALLOT


def test_the_result_timeout_clears_the_session_error_screen() -> None:
    session = session_in(State.CHECKING_IN)
    session.handle(StepFailed("CheckIn"), 1)
    session.handle(Tick(), 11)
    assert session.state is State.IDLE


def test_card_removed_while_authenticating_ends_at_once() -> None:
    session = session_in(State.AUTHENTICATING)
    assert session.handle(CardTaken(), 1) == [EndSession()]
    assert session.state is State.CARD_REMOVED
    assert session.handle(Authenticated(), 2) == [], "a late result revived a finished session"
    assert session.state is State.CARD_REMOVED
    next_voter_votes(session, 3)


def test_an_authentication_that_succeeds_after_the_card_left_does_not_check_in() -> None:
    session = session_in(State.AUTHENTICATING)
    session.card_present = False  # the shell saw the card go while the step ran
    assert session.handle(Authenticated(), 1) == [EndSession()]
    assert session.state is State.CARD_REMOVED


def test_a_wrong_pin_reported_after_the_card_left_ends_as_removed() -> None:
    session = session_in(State.AUTHENTICATING)
    session.card_present = False
    assert session.handle(AuthenticationFailed(CardProblem.WRONG_PIN, 2), 1) == [EndSession()]
    assert session.state is State.CARD_REMOVED


def test_hub_unreachable_reported_after_the_card_left_ends_as_removed() -> None:
    session = session_in(State.CHECKING_IN)
    session.handle(CardTaken(), 1)
    assert session.state is State.CHECKING_IN, "check-in's own result decides"
    assert session.handle(CheckInFailed(Refusal.HUB_UNREACHABLE), 2) == [EndSession()]
    assert session.state is State.CARD_REMOVED


def test_a_locked_card_reported_at_once_ends_on_its_screen_and_the_next_card_is_served() -> None:
    session = session_in(State.AUTHENTICATING)
    session.handle(AuthenticationFailed(CardProblem.LOCKED, 0), 1)
    assert session.state is State.CARD_LOCKED
    next_voter_votes(session, 2)


@pytest.mark.parametrize("state", [State.PIN, State.AUTHENTICATING, State.BALLOT, State.CASTING, State.RECEIPT])
def test_fail_resets_whatever_state_handle_left(state: State) -> None:
    session = session_in(State.CASTING) if state in (State.CASTING, State.RECEIPT) else session_in(State.AUTHENTICATING)
    session.state = state  # as a half-applied event could leave it
    assert session.fail(5) == [EndSession()]
    assert session.state is State.SESSION_ERROR and session.view()["busy"] is False
    next_voter_votes(session, 6)


def test_fail_when_idle_stays_idle() -> None:
    session = Session(MANIFEST)
    assert session.fail(1) == [EndSession()]
    assert session.state is State.IDLE


def test_session_error_is_reachable_from_every_state_with_a_voter() -> None:
    for state in State:
        assert allowed(state, State.SESSION_ERROR) is (state not in (State.IDLE, State.OUT_OF_SERVICE))
    assert allowed(State.SESSION_ERROR, State.PIN) and allowed(State.SESSION_ERROR, State.IDLE)
