"""The voter session's states and which events may move it where, as data (like h11's _state).

Keeping the table apart from the code that reacts to events makes the whole flow reviewable
on one screen and lets the tests check that no transition exists that this table does not
name.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    IDLE = "idle"
    CHECKING_CARD = "checking_card"  # card just inserted: its certificate, CRL, tries left, the polls (no PIN)
    PIN = "pin"  # card present, waiting for the PIN / password
    AUTHENTICATING = "authenticating"
    WRONG_PIN = "wrong_pin"  # PIN screen again, with the tries left
    CHECKING_IN = "checking_in"
    BALLOT = "ballot"
    REVIEW = "review"  # the voter's choices in clear, before anything is encrypted
    SEALING = "sealing"
    SEALED = "sealed"  # encrypted; cast it or challenge it
    SPOILING = "spoiling"
    SPOILED = "spoiled"  # challenged: the opened choices are shown, vote again
    CASTING = "casting"
    RECEIPT = "receipt"
    # Errors a voter can hit, each with its own screen.
    CARD_LOCKED = "card_locked"
    CARD_INVALID = "card_invalid"
    CARD_CHECK_UNAVAILABLE = "card_check_unavailable"  # the terminal's CRL is out of date: no card can be checked
    NOT_ELIGIBLE = "not_eligible"
    ALREADY_VOTED = "already_voted"
    POLLS_CLOSED = "polls_closed"
    HUB_UNREACHABLE = "hub_unreachable"
    CARD_REMOVED = "card_removed"
    SESSION_ERROR = "session_error"  # a booth step failed unexpectedly: the session was reset
    TIMED_OUT = "timed_out"  # no touch or key for too long before casting: nothing was cast, choices erased
    OUT_OF_SERVICE = "out_of_service"  # enclosure open or reader gone: no new session


BUSY_STATES = frozenset(
    {State.CHECKING_CARD, State.AUTHENTICATING, State.CHECKING_IN, State.SEALING, State.SPOILING, State.CASTING}
)
"""The shell is doing I/O for the session; the voter sees a "please wait" screen."""

ERROR_STATES = frozenset(
    {
        State.CARD_LOCKED,
        State.CARD_INVALID,
        State.CARD_CHECK_UNAVAILABLE,
        State.NOT_ELIGIBLE,
        State.ALREADY_VOTED,
        State.POLLS_CLOSED,
        State.CARD_REMOVED,
        State.SESSION_ERROR,
        State.TIMED_OUT,
    }
)
"""Screens that end the session: the voter takes the card (or taps OK) and the booth is idle."""

VOTING_STATES = frozenset({State.BALLOT, State.REVIEW, State.SEALED, State.SPOILED, State.SEALING, State.SPOILING})
"""A card removal here cancels the session: nothing was cast, every choice is dropped."""

CARD_BOUND_STATES = VOTING_STATES | {
    State.CHECKING_CARD, State.PIN, State.WRONG_PIN, State.AUTHENTICATING, State.HUB_UNREACHABLE,
}  # fmt: skip
"""States that end in CARD_REMOVED once the card is gone (busy ones at once or when their
step reports back, see Session); CHECKING_IN and CASTING are not here: their step may already
have marked the voter or cast the ballot, so its own result decides."""

TIMEOUT_STATES = frozenset(
    {State.PIN, State.WRONG_PIN, State.HUB_UNREACHABLE, State.BALLOT, State.REVIEW, State.SEALED, State.SPOILED}
)
"""States waiting for the voter before anything is cast: the inactivity warning counts down
here, and its end is TIMED_OUT ("session ended, nothing was cast"), never a silent IDLE."""

RESETTABLE_STATES = frozenset(State) - {State.IDLE, State.OUT_OF_SERVICE}
"""Every state with a voter in it (or a result screen) may be reset to SESSION_ERROR."""

TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CHECKING_CARD, State.PIN, State.OUT_OF_SERVICE}),
    State.CHECKING_CARD: frozenset(
        {
            State.PIN,
            State.CARD_LOCKED,
            State.CARD_INVALID,
            State.CARD_CHECK_UNAVAILABLE,
            State.POLLS_CLOSED,
            State.CARD_REMOVED,
        }
    ),
    State.PIN: frozenset({State.AUTHENTICATING}),
    State.WRONG_PIN: frozenset({State.AUTHENTICATING}),
    State.AUTHENTICATING: frozenset(
        {
            State.CHECKING_IN,
            State.WRONG_PIN,
            State.CARD_LOCKED,
            State.CARD_INVALID,
            State.CARD_CHECK_UNAVAILABLE,
            State.CARD_REMOVED,
        }
    ),
    State.CHECKING_IN: frozenset(
        {State.BALLOT, State.NOT_ELIGIBLE, State.ALREADY_VOTED, State.POLLS_CLOSED, State.HUB_UNREACHABLE}
    ),
    State.HUB_UNREACHABLE: frozenset({State.CHECKING_IN}),
    State.BALLOT: frozenset({State.REVIEW}),
    State.REVIEW: frozenset({State.BALLOT, State.SEALING}),
    State.SEALING: frozenset({State.SEALED}),
    State.SEALED: frozenset({State.CASTING, State.SPOILING}),
    State.SPOILING: frozenset({State.SPOILED}),
    State.SPOILED: frozenset({State.BALLOT}),
    State.CASTING: frozenset({State.RECEIPT}),
    State.RECEIPT: frozenset(),
    State.OUT_OF_SERVICE: frozenset(),
    **{state: frozenset() for state in ERROR_STATES},
}
"""Forward moves. Besides these, every state may go to IDLE (timeout, done, card taken after
the end) and to OUT_OF_SERVICE (tamper, reader lost); CARD_BOUND_STATES go to CARD_REMOVED
when the card leaves; every state but IDLE and OUT_OF_SERVICE goes to SESSION_ERROR when a
booth step fails unexpectedly or a busy step never reports back; TIMEOUT_STATES go to
TIMED_OUT when the voter has done nothing for the voting timeout; ERROR_STATES and
OUT_OF_SERVICE go to CHECKING_CARD (or, in a session without the insertion probe, PIN) when a
card is put in once the cause is gone."""

ALWAYS_REACHABLE = frozenset({State.IDLE, State.OUT_OF_SERVICE})


def allowed(source: State, target: State) -> bool:
    if target in ALWAYS_REACHABLE or target in TRANSITIONS[source]:
        return True
    if target is State.CARD_REMOVED:
        return source in CARD_BOUND_STATES
    if target is State.SESSION_ERROR:
        return source in RESETTABLE_STATES
    if target is State.TIMED_OUT:
        return source in TIMEOUT_STATES
    return target in (State.PIN, State.CHECKING_CARD) and source in ERROR_STATES


class IllegalTransition(RuntimeError):
    """A bug in the session logic: it tried a move the table does not allow."""
