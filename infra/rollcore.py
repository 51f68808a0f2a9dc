"""The roll's decision, shared by every roll: a station's own (station_hub/roll.py) and the
municipal roll at the central office (gateway/municipal_roll.py). Sans-I/O.

A check-in is card-proven (docs/card-protocol.md §5): the terminal first gets a fresh,
single-use challenge that expires (bound to that terminal of that station); the card then signs
``checkin_binding(station, terminal, challenge, blinded)``, and the roll checks the card's
certificate against the JPKI CAs and a fresh CRL, the validity dates and the signature, and
derives the voter key itself with the roll salt, which no terminal holds. Only then does it
look the voter up: it refuses an unknown key (``not_eligible``) or one already used with
another blinded token (``already_voted``); otherwise it says "mark, then grant" and
blind-signs (RFC 9474). A retry with the same blinded token (and a new challenge) gets the
identical answer (RSA signing is deterministic) and marks nothing. The certificate and the
signature are used in memory and dropped: never stored, never logged.

The store is the caller's: ``lookup`` says what the roll holds for a voter key (None = not on
the roll, a blinded value = checked in with it, anything else = not yet). A store shared by
several writers (the municipal roll) marks atomically and, when its mark loses a race, asks
:meth:`RollCore.judge` again with what won.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from election import tokens
from election.encoding import hex_bytes, parse_json
from election.errors import FormatError
from infra.errors import SiteError
from infra.jpki import CardRefused, JpkiVerifier
from protocol.errors import CheckinReason
from protocol.messages import (
    CHALLENGE_BYTES,
    CheckinChallenge,
    CheckinGranted,
    CheckinRefused,
    CheckinReply,
    CheckinRequest,
    checkin_binding,
)

CHALLENGE_TTL = 60.0
"""Seconds a challenge stays valid (a card signature takes up to ~5 s; the voter types first)."""
MAX_OPEN_CHALLENGES = 8
"""Outstanding challenges per terminal; asking for more drops that terminal's oldest."""

VOTER_KEYS_FORMAT = "polling-station/voter-keys/v1"
"""The card module's export (``appliance/card/testca.py``): ``{"format", "mode", "voter_keys"}``."""


def read_voter_keys(data: bytes) -> list[bytes]:
    """Parse a voter-key file: 32-byte lowercase hex keys, no duplicates."""
    try:
        document = parse_json(data, max_size=200_000_000)
        if not isinstance(document, dict) or document.get("format") != VOTER_KEYS_FORMAT:
            raise FormatError(f"voter keys: expected an object with format {VOTER_KEYS_FORMAT!r}")
        keys = document.get("voter_keys")
        if not isinstance(keys, list):
            raise FormatError("voter keys: voter_keys must be a list")
        parsed = [hex_bytes(key, 32, f"voter_keys[{i}]") for i, key in enumerate(keys)]
    except FormatError as error:
        raise SiteError(str(error)) from error
    if len(set(parsed)) != len(parsed):
        raise SiteError("voter keys: the list repeats a key")
    return parsed


@dataclass(frozen=True, slots=True)
class RollDecision:
    reply: CheckinReply
    mark: bool
    """Whether the voter must be marked (durably) before the reply is sent."""
    voter_key: bytes | None = None
    """The voter key the roll derived from the card (only when the card was proven)."""


def _refused(reason: CheckinReason, detail: str) -> RollDecision:
    return RollDecision(CheckinRefused(reason, detail), False)


class Challenges:
    """Fresh challenges, each usable once, by one terminal, within ``ttl`` seconds."""

    def __init__(self, ttl: float = CHALLENGE_TTL, clock: Callable[[], float] = time.monotonic,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:  # fmt: skip
        self.ttl = ttl
        self._clock = clock
        self._random = random_bytes
        self._open: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, terminal: str) -> bytes:
        now = self._clock()
        challenge = self._random(CHALLENGE_BYTES)
        with self._lock:
            self._open = {c: (t, until) for c, (t, until) in self._open.items() if until > now}
            mine = [c for c, (t, _until) in self._open.items() if t == terminal]
            for stale in mine[: max(0, len(mine) - MAX_OPEN_CHALLENGES + 1)]:
                del self._open[stale]
            self._open[challenge] = (terminal, now + self.ttl)
        return challenge

    def redeem(self, terminal: str, challenge: bytes) -> str | None:
        """Spend the challenge; None if it was good, else why not (it is gone either way)."""
        with self._lock:
            entry = self._open.pop(challenge, None)
        if entry is None:
            return "this challenge is unknown or was already used"
        if entry[0] != terminal:
            return "this challenge was issued to another terminal"
        if entry[1] <= self._clock():
            return "this challenge has expired"
        return None

    def __len__(self) -> int:
        return len(self._open)


class JpkiDirectory:
    """A roll's JPKI CAs and CRLs (``anchors/``, ``crls/``), re-read whenever a file changes
    (the ``verifier`` of :class:`RollCore` at a station roll and at the municipal roll)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple | None = None
        self._verifier: JpkiVerifier | None = None
        self._lock = threading.Lock()

    def __call__(self) -> JpkiVerifier:
        stamp = tuple(
            (str(path), path.stat().st_mtime_ns, path.stat().st_size)
            for path in sorted(self.directory.glob("*/*"))
            if path.is_file()
        )
        with self._lock:
            if stamp != self._stamp or self._verifier is None:
                self._verifier = JpkiVerifier.from_directory(self.directory)
                self._stamp = stamp
            return self._verifier


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RollCore:
    """Sans-I/O: challenges out, check-ins judged. ``verifier`` is asked anew for each check-in
    (the service re-reads the JPKI directory when a CRL is replaced)."""

    def __init__(
        self,
        token_key: rsa.RSAPrivateKey,
        *,
        station_id: str,
        roll_salt: bytes,
        verifier: Callable[[], JpkiVerifier],
        challenges: Challenges | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.token_key = token_key
        self.modulus_length = (token_key.key_size + 7) // 8
        self.station_id = station_id
        self._salt = roll_salt
        self._verifier = verifier
        self.challenges = challenges if challenges is not None else Challenges()
        self._clock = clock

    def _holder(self, terminal: str, station: str | None) -> str:
        # Station and terminal ids never hold "/": "<station>/<terminal>" names one terminal.
        return terminal if station is None else f"{station}/{terminal}"

    def challenge(self, terminal: str, *, station: str | None = None) -> CheckinChallenge:
        """A challenge for ``terminal`` of ``station`` (None: this roll's own station)."""
        return CheckinChallenge(self.challenges.issue(self._holder(terminal, station)), int(self.challenges.ttl))

    def prove(self, terminal: str, request: CheckinRequest, *, station: str | None = None) -> bytes | RollDecision:
        """The voter key of the card behind ``request``, or the refusal (the challenge is spent).

        ``station``: the terminal's station, which the card signed in the binding (None: this
        roll's own station; the municipal roll judges for many stations)."""
        problem = self.challenges.redeem(self._holder(terminal, station), request.challenge)
        if problem is not None:
            return _refused(CheckinReason.BAD_CHALLENGE, problem)
        station_id = self.station_id if station is None else station
        binding = checkin_binding(station_id, terminal, request.challenge, request.blinded)
        try:
            verifier = self._verifier()
        except (OSError, ValueError) as error:
            return _refused(CheckinReason.STALE_CRL, f"the roll has no usable JPKI trust: {error}")
        try:
            voter_key = verifier.voter_key(request.certificate, binding, request.signature, self._salt, self._clock())
        except CardRefused as refusal:
            return _refused(CheckinReason(refusal.reason), refusal.detail)
        return bytes.fromhex(voter_key)

    def judge(self, voter_key: bytes, request: CheckinRequest, polls: str, stored: bytes | None) -> RollDecision:
        """The answer for a proven ``voter_key`` whose row holds ``stored`` (None = not on the
        roll; ``request.blinded`` = already checked in with this very token; anything else that
        is not all zeros = checked in with another)."""
        if stored is not None and stored == request.blinded:
            try:  # a retry (a row of all 0xff bytes, "voted elsewhere", is no blinded value: refused)
                signature = tokens.blind_sign(self.token_key, request.blinded)
                return RollDecision(CheckinGranted(signature), False, voter_key)
            except tokens.TokenError:
                return _refused(CheckinReason.ALREADY_VOTED, "this voter has already voted")
        if polls != "open":
            return _refused(CheckinReason.POLLS_NOT_OPEN, f"the polls are {polls}")
        if stored is None:
            return _refused(CheckinReason.NOT_ELIGIBLE, "this card is not on the roll")
        if any(stored):
            return _refused(CheckinReason.ALREADY_VOTED, "this voter has already voted")
        try:
            signature = tokens.blind_sign(self.token_key, request.blinded)
        except tokens.TokenError as error:
            return _refused(CheckinReason.MALFORMED, str(error))
        return RollDecision(CheckinGranted(signature), True, voter_key)

    def decide(
        self,
        terminal: str,
        request: CheckinRequest,
        polls: str,
        lookup: Callable[[bytes], bytes | None],
        *,
        station: str | None = None,
    ) -> RollDecision:
        """``lookup(voter_key)``: the voter's row (None = not on the roll, zeros = not yet checked in)."""
        proven = self.prove(terminal, request, station=station)
        if isinstance(proven, RollDecision):
            return proven
        return self.judge(proven, request, polls, lookup(proven))
