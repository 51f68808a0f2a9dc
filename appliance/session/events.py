"""What can happen to a voter session (events in) and what the shell must do (effects out).

Events come from the voter (through the page or the companion keypad), from the card reader,
and back from the shell as the results of the effects it ran. None of them carries a key,
token or nonce: the session never holds a secret, so its view can go to the page as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# --- from the hardware ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardInserted:
    pass


@dataclass(frozen=True, slots=True)
class CardTaken:
    """The reader is empty again."""


@dataclass(frozen=True, slots=True)
class ServiceChanged:
    """The booth can (no longer) serve voters: enclosure opened/closed, reader lost/back."""

    available: bool
    reason: str = ""


class Key(StrEnum):
    UP = "up"
    DOWN = "down"
    SELECT = "select"
    BACK = "back"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class KeyPress:
    """A keypad key (companion board) or the page's arrow/Enter/Escape/F1 keys.

    ``tactile``: from the companion keypad. The first tactile key of a session only wakes the
    audio guide (a voter who cannot see the screen hears it before anything is acted on).
    """

    key: Key
    tactile: bool = False


# --- from the voter (touch) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PinEntered:
    secret: str

    def __repr__(self) -> str:  # never print a PIN in a log line
        return "PinEntered(secret=***)"


@dataclass(frozen=True, slots=True)
class Tap:
    """A touch on one of the screen's targets (the same names the view lists)."""

    target: str


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # "ja" or "en"


@dataclass(frozen=True, slots=True)
class TextSize:
    """One of the four text sizes (1 = default … 4 = largest); reset for each voter."""

    level: int


@dataclass(frozen=True, slots=True)
class Theme:
    """``high`` (default) or ``low`` contrast; reset for each voter."""

    name: str


# --- results of effects -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardChecked:
    """The insertion probe passed (certificate, CRL, not locked, polls open): ask for the PIN.

    ``tries_left`` of ``max_tries`` come from VERIFY without data (no try spent); None when
    the reader could not tell.
    """

    tries_left: int | None = None
    max_tries: int | None = None


@dataclass(frozen=True, slots=True)
class Authenticated:
    pass


class CardProblem(StrEnum):
    WRONG_PIN = "wrong_pin"
    BAD_FORMAT = "bad_format"
    LOCKED = "locked"
    INVALID = "invalid"  # revoked, expired, unknown issuer, cloned, protocol error
    REMOVED = "removed"
    CANNOT_CHECK = "cannot_check"  # the terminal's revocation list is out of date (not the card's fault)


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    problem: CardProblem
    tries_left: int | None = None


@dataclass(frozen=True, slots=True)
class CheckedIn:
    pass


class Refusal(StrEnum):
    NOT_ELIGIBLE = "not_eligible"
    ALREADY_VOTED = "already_voted"
    POLLS_CLOSED = "polls_not_open"
    HUB_UNREACHABLE = "hub_unreachable"
    ROLL_UNREACHABLE = "roll_unreachable"
    """An early-voting or common polling place cannot reach the municipal roll: nobody is
    checked in here until it is back (the voter may retry; nothing falls back silently)."""
    STALE_CRL = "stale_crl"
    """The roll's revocation list is out of date, so no card can be checked until it is renewed."""


@dataclass(frozen=True, slots=True)
class CheckInFailed:
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Sealed:
    ballot_hash: str  # hex, of the ballot as sealed for review (public once cast or spoiled)


@dataclass(frozen=True, slots=True)
class Spoiled:
    """The challenged ballot is in the outbox with its opening; these are the choices it encrypted."""

    ballot_hash: str
    opened_choices: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Cast:
    """The final ballot is committed to the outbox: it is cast."""

    ballot_hash: str


@dataclass(frozen=True, slots=True)
class Held:
    """The station's ledger durably holds a ballot of this terminal (its held ack). No position:
    the ballot is chained later, in a hash-sorted batch."""

    ballot_hash: str


@dataclass(frozen=True, slots=True)
class HubLink:
    """The connection to the station's broker came up or went down."""

    online: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes (drives the idle timeout)."""


@dataclass(frozen=True, slots=True)
class StepFailed:
    """The shell's step for the current busy state raised something unexpected.

    ``step`` names the effect (for the log line); the session resets to an error screen
    instead of waiting for a result that will never come.
    """

    step: str


Event = (
    CardInserted
    | CardTaken
    | ServiceChanged
    | KeyPress
    | PinEntered
    | Tap
    | Language
    | TextSize
    | Theme
    | CardChecked
    | Authenticated
    | AuthenticationFailed
    | CheckedIn
    | CheckInFailed
    | Sealed
    | Spoiled
    | Cast
    | Held
    | HubLink
    | Tick
    | StepFailed
)


# --- effects for the shell ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckCard:
    """The insertion probe: certificate, CRL freshness, tries left (empty VERIFY), polls open.
    Sends no secret to the card; answered with CardChecked, AuthenticationFailed (locked,
    invalid, removed, cannot check) or CheckInFailed(POLLS_CLOSED)."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    secret: str

    def __repr__(self) -> str:
        return "Authenticate(secret=***)"


@dataclass(frozen=True, slots=True)
class CheckIn:
    """Ask the roll for a token for the authenticated voter (the shell holds the voter key)."""


@dataclass(frozen=True, slots=True)
class Seal:
    choices: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Challenge:
    """Spoil the sealed ballot: commit it (token null) with its opening, held until this voter
    casts or leaves, then sent with the cast ballot in one burst (or alone)."""


@dataclass(frozen=True, slots=True)
class CastBallot:
    """Commit the sealed ballot, with the token, to the outbox."""


@dataclass(frozen=True, slots=True)
class EndSession:
    """Forget everything of this voter: voter key, token, sealed ballot, opening, choices."""


Effect = CheckCard | Authenticate | CheckIn | Seal | Challenge | CastBallot | EndSession
