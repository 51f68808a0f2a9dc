"""ONE table of bad sealed ballots, run through every place that admits one.

Three places judge a sealed ballot, each with its own code, on purpose: the station's ledger
(``station_hub/ledger.py``, before it chains and acknowledges), the central office
(``gateway/checker.py``, before it stores what a hub forwards) and the independent verifier
(``election/verify.py``, which must stay free of both so that it checks them). So that the
three can never drift apart, every case below says what each of them must answer:

- ``ledger``: the refusal reason of the ack (``None``: accepted);
- ``gateway``: ``(outcome, reason)`` — ``refused`` (the whole forwarded message), ``invalid``
  (the entry is not chained, its bytes are kept as evidence), ``flagged`` (chained, because
  the station's ledger signed it, with an incident for the officials) or ``chained`` — and the
  rule it broke in the ledger's vocabulary (:class:`protocol.errors.Reason`);
- ``verifier``: exactly the numbered checks that fail on a record that holds the ballot.

``NA`` marks a place that cannot see the case at all (``why`` says why). A case's last
submission is the bad one; the ones before it are good and must be accepted everywhere. Every
submission carries its terminal's honest device statement unless the case gives another one
(``protocol_kit.honest``); only the ledger sees those, the centre and the verifier see each
terminal's final statement.

To add a rule: add a case here first. ``test_bad_ballots.py`` runs the table.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol_kit import Kit, Sub, honest

from election.encoding import canonical_bytes, sha256
from protocol.errors import Reason

NA = "not applicable"


@dataclass(frozen=True)
class BadBallot:
    name: str
    build: Callable[[Kit], list[Sub]]
    ledger: Reason | None
    gateway: tuple[str, Reason | None] | str
    verifier: frozenset[int] | str
    why: str = ""


REASON_CHECKS: dict[Reason, frozenset[int]] = {
    Reason.MALFORMED: frozenset({6}),
    Reason.WRONG_ELECTION: frozenset({6}),
    Reason.UNKNOWN_DEVICE: frozenset({7}),
    Reason.BAD_SIGNATURE: frozenset({7}),
    Reason.BAD_STATEMENT: frozenset({8}),
    Reason.DUPLICATE_BALLOT_ID: frozenset({9, 17}),
    Reason.TOKEN_USED: frozenset({9}),
    Reason.BAD_PROOF: frozenset({10, 11}),
    Reason.BAD_OPENING: frozenset({12}),
    Reason.NO_TOKEN: frozenset({18}),
    Reason.BAD_TOKEN: frozenset({18}),
    Reason.TOKEN_ON_SPOILED: frozenset({18}),
}
"""The verifier check that owns each ledger rule (docs/verifier.md): a case refused for a
reason must fail (at least) one of these checks."""

UNREADABLE = frozenset({6, 8, 17})
"""A ballot the verifier cannot parse fails check 6, its chain entry then has no ballot (17), and
its terminal's final statement, which counts it, no longer matches the terminal's ballots (8)."""


def _mutated(change: Callable[[dict[str, Any]], None]) -> Callable[[Kit], list[Sub]]:
    """A good cast ballot, changed by ``change`` and re-signed by its terminal (so only the
    change is wrong)."""

    def build(kit: Kit) -> list[Sub]:
        ballot = copy.deepcopy(kit.cast())
        change(ballot)
        return [Sub(kit.resign(ballot))]

    return build


def _raw(change: Callable[[bytes], bytes]) -> Callable[[Kit], list[Sub]]:
    """A good cast ballot's bytes, changed into something JSON or canonical form cannot be."""

    def build(kit: Kit) -> list[Sub]:
        raw = change(canonical_bytes(kit.cast()))
        return [Sub(raw=raw)]

    return build


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(ballot: dict[str, Any]) -> None:
        target = ballot
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _delete(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda ballot: ballot.pop(name)


def _swap_ciphertexts(ballot: dict[str, Any]) -> None:
    """Exchange two selections' ciphertexts: another vote, the contest's sum (and its proof) intact."""
    selections = ballot["contests"][0]["selections"]
    selections[0]["ciphertext"], selections[1]["ciphertext"] = selections[1]["ciphertext"], selections[0]["ciphertext"]


def _swap_contest_proofs(ballot: dict[str, Any]) -> None:
    first, second = ballot["contests"][0], ballot["contests"][1]
    first["proof"], second["proof"] = second["proof"], first["proof"]


def _good(kit: Kit) -> list[Sub]:
    return [Sub(kit.cast())]


def _challenged_then_cast(kit: Kit) -> list[Sub]:
    spoiled, opening = kit.spoiled()
    return [Sub(spoiled, opening), Sub(kit.cast())]


def _two_terminals_resending(kit: Kit) -> list[Sub]:
    """Ballots of two terminals, interleaved and resent, statements arriving out of order: all held."""
    first, second, other = kit.cast(), kit.cast(), kit.cast("x2")
    subs = honest([Sub(first), Sub(second), Sub(other, sender="x2")])
    return [subs[1], subs[0], subs[2], subs[1]]


def _unregistered(kit: Kit) -> list[Sub]:
    return [Sub(kit.cast("x9"), sender="x9")]


def _other_sender(kit: Kit) -> list[Sub]:
    return [Sub(kit.cast(), sender="x2")]


def _stolen_resend(kit: Kit) -> list[Sub]:
    ballot = kit.cast()
    return [Sub(ballot), Sub(ballot, sender="x2")]


def _signed_by(device: str) -> Callable[[Kit], list[Sub]]:
    return lambda kit: [Sub(kit.resign(kit.cast(), device))]


def _bad_signature(kit: Kit) -> list[Sub]:
    ballot = kit.cast()
    flipped = "0" if ballot["signature"][-1] != "0" else "1"
    return [Sub({**ballot, "signature": ballot["signature"][:-1] + flipped})]


def _statement_signed_by(device: str) -> Callable[[Kit], list[Sub]]:
    """x1's ballot whose statement (naming x1) carries ``device``'s signature."""

    def build(kit: Kit) -> list[Sub]:
        ballot = kit.cast()
        statement = kit.statement("x1", [sha256(canonical_bytes(ballot))])
        body = {name: value for name, value in statement.items() if name != "signature"}
        signature = kit.signers[device].sign(canonical_bytes(body)).hex()
        return [Sub(ballot, statement={**statement, "signature": signature})]

    return build


def _statement_of(device: str) -> Callable[[Kit], list[Sub]]:
    def build(kit: Kit) -> list[Sub]:
        ballot = kit.cast()
        return [Sub(ballot, statement=kit.statement(device, [sha256(canonical_bytes(ballot))]))]

    return build


def _statement_contradicted(kit: Kit) -> list[Sub]:
    """Two ballots, each with a statement of one ballot: the device signed two sets of one."""
    first, second = kit.cast(), kit.cast()
    return [Sub(first), Sub(second, statement=kit.statement("x1", [sha256(canonical_bytes(second))]))]


def _no_token(kit: Kit) -> list[Sub]:
    return [Sub(kit.seal()[0].to_json())]


def _foreign_token(kit: Kit) -> list[Sub]:
    return [Sub(kit.cast(token=kit.token(kit.other_roll)))]


def _token_twice(kit: Kit) -> list[Sub]:
    token = kit.token()
    return [Sub(kit.cast(token=token)), Sub(kit.cast(token=token))]


def _copy_with_fresh_token(kit: Kit) -> list[Sub]:
    first = kit.cast()
    return [Sub(first), Sub(kit.resign({**first, "token": kit.token().to_json()}))]


def _cast_copy_of_spoiled(kit: Kit) -> list[Sub]:
    """The voter's challenged ballot — whose opening is public — cast after all: anyone could
    read that vote. The ledger must refuse it by its ballot id."""
    spoiled, opening = kit.spoiled()
    return [Sub(spoiled, opening), Sub(kit.resign({**spoiled, "token": kit.token().to_json()}))]


def _spoiled_with_token(kit: Kit) -> list[Sub]:
    ballot, opening = kit.seal(token=kit.token())
    return [Sub(ballot.to_json(), opening.to_json(kit.manifest))]


def _bad_opening(kit: Kit) -> list[Sub]:
    spoiled, opening = kit.spoiled()
    opening = copy.deepcopy(opening)
    selection = opening["contests"][0]["selections"][0]
    selection["vote"] = 1 - selection["vote"]
    return [Sub(spoiled, opening)]


def _canonical_with_space(raw: bytes) -> bytes:
    return raw.replace(b",", b", ", 1)


def _huge_version(raw: bytes) -> bytes:
    return raw.replace(b'"version":2}', b'"version":' + b"9" * 5000 + b"}")


def _float_version(raw: bytes) -> bytes:
    return raw.replace(b'"version":2}', b'"version":2.0}')


CASES: tuple[BadBallot, ...] = (
    # --- controls: good ballots are accepted everywhere -----------------------------------
    BadBallot("good cast ballot", _good, None, ("chained", None), frozenset()),
    BadBallot("challenged, then cast", _challenged_then_cast, None, ("chained", None), frozenset()),
    BadBallot("two terminals, out of order and resent", _two_terminals_resending, None, NA, NA,
              "a resend is the station's business: the centre and the record see each ballot once"),
    # --- not a sealed ballot (schema, encoding, group elements) ---------------------------
    BadBallot("version true", _mutated(_set(("version",), True)), Reason.MALFORMED, ("invalid", Reason.MALFORMED),
              UNREADABLE),
    BadBallot("a device_seq as in format 1", _mutated(_set(("device_seq",), 1)), Reason.MALFORMED,
              ("refused", Reason.MALFORMED), UNREADABLE,
              "the centre refuses the batch: an entry's ballot must have exactly the sealed fields"),
    BadBallot("device id with a trailing newline", _mutated(_set(("device_id",), "x1\n")), Reason.MALFORMED,
              ("invalid", Reason.MALFORMED), UNREADABLE),
    BadBallot("upper-case hex ballot id", _mutated(lambda b: b.update(ballot_id=b["ballot_id"].upper())),
              Reason.MALFORMED, ("invalid", Reason.MALFORMED), UNREADABLE),
    BadBallot("identity point as alpha", _mutated(_set(("contests", 0, "selections", 0, "ciphertext", "alpha"),
                                                       "01" + "00" * 31)),
              Reason.MALFORMED, ("invalid", Reason.MALFORMED), UNREADABLE),
    BadBallot("not a group element", _mutated(_set(("contests", 0, "selections", 0, "ciphertext", "beta"), "ff" * 32)),
              Reason.MALFORMED, ("invalid", Reason.MALFORMED), UNREADABLE),
    BadBallot("scalar beyond the group order", _mutated(_set(("contests", 0, "proof", "challenges", 0), "ff" * 32)),
              Reason.MALFORMED, ("invalid", Reason.MALFORMED), UNREADABLE),
    BadBallot("a contest missing", _mutated(lambda b: b["contests"].pop()), Reason.MALFORMED,
              ("invalid", Reason.MALFORMED), UNREADABLE),
    BadBallot("an extra field", _mutated(_set(("cast_at",), 1)), Reason.MALFORMED, ("refused", Reason.MALFORMED),
              UNREADABLE, "the centre refuses the batch: an entry's ballot must have exactly the sealed fields"),
    BadBallot("the token field missing", _mutated(_delete("token")), Reason.MALFORMED, ("refused", Reason.MALFORMED),
              UNREADABLE),
    BadBallot("lone surrogate", _raw(lambda r: r[:-1] + b',"z":"\\udfff"}'), Reason.MALFORMED,
              ("refused", Reason.MALFORMED), UNREADABLE),
    BadBallot("5,000-digit integer", _raw(_huge_version), Reason.MALFORMED, ("refused", Reason.MALFORMED),
              UNREADABLE),
    BadBallot("a float", _raw(_float_version), Reason.MALFORMED, ("refused", Reason.MALFORMED), UNREADABLE),
    BadBallot("truncated", _raw(lambda r: r[:-1]), Reason.MALFORMED, ("refused", Reason.MALFORMED), UNREADABLE),
    BadBallot("duplicated key", _raw(lambda r: b'{"version":1,' + r[1:]), Reason.MALFORMED,
              ("refused", Reason.MALFORMED), UNREADABLE),
    BadBallot("not canonical", _raw(_canonical_with_space), Reason.MALFORMED, ("refused", Reason.MALFORMED),
              UNREADABLE),
    BadBallot("UTF-16", _raw(lambda r: r.decode().encode("utf-16")), Reason.MALFORMED, ("refused", Reason.MALFORMED),
              UNREADABLE),
    # --- the election, the terminal and its signature --------------------------------------
    BadBallot("another election's base hash", _mutated(_set(("base_hash",), "ab" * 32)), Reason.WRONG_ELECTION,
              ("invalid", Reason.WRONG_ELECTION), frozenset({6, 8, 10, 11}),
              "the proofs bind the base hash, so the verifier also fails 10 and 11; the terminal's "
              "statement names that election too (8)"),
    BadBallot("one signature bit flipped", _bad_signature, Reason.BAD_SIGNATURE, ("invalid", Reason.BAD_SIGNATURE),
              frozenset({7})),
    BadBallot("signed with another terminal's key", _signed_by("x2"), Reason.BAD_SIGNATURE,
              ("invalid", Reason.BAD_SIGNATURE), frozenset({7})),
    BadBallot("an unregistered terminal", _unregistered, Reason.UNKNOWN_DEVICE, ("invalid", Reason.UNKNOWN_DEVICE),
              frozenset({7, 8}), "no station forwards a statement of a terminal it does not have (8)"),
    BadBallot("sent by another terminal", _other_sender, Reason.DEVICE_MISMATCH, NA, NA,
              "only the station broker knows the sender (the certificate's CN)"),
    BadBallot("another terminal resends a chained ballot", _stolen_resend, Reason.DEVICE_MISMATCH, NA, NA,
              "only the station broker knows the sender; the ledger never chains a resend"),
    # --- the device statement each submission carries ---------------------------------------
    BadBallot("a statement signed with another terminal's key", _statement_signed_by("x2"), Reason.BAD_STATEMENT,
              NA, NA, "only the ledger sees a terminal's statements before its final one"),
    BadBallot("another terminal's statement", _statement_of("x2"), Reason.MALFORMED, NA, NA,
              "only the ledger sees a terminal's statements before its final one"),
    BadBallot("a second, different statement of the same count", _statement_contradicted, Reason.BAD_STATEMENT,
              NA, NA, "only the ledger sees a terminal's statements before its final one"),
    # --- ballot ids and tokens -------------------------------------------------------------
    BadBallot("a copy with a fresh token", _copy_with_fresh_token, Reason.DUPLICATE_BALLOT_ID,
              ("flagged", Reason.DUPLICATE_BALLOT_ID), frozenset({8, 17}),
              "the record holds one file per ballot id, so the copy overwrites the original there: "
              "the original's chain entry has no ballot (17) and the device's ballots no longer match "
              "its final statement (8)"),
    BadBallot("the cast copy of a challenged ballot", _cast_copy_of_spoiled, Reason.DUPLICATE_BALLOT_ID,
              ("flagged", Reason.DUPLICATE_BALLOT_ID), frozenset({9})),
    BadBallot("a cast ballot without a token", _no_token, Reason.NO_TOKEN, ("invalid", Reason.NO_TOKEN),
              frozenset({18})),
    BadBallot("a token of another roll", _foreign_token, Reason.BAD_TOKEN, ("invalid", Reason.BAD_TOKEN),
              frozenset({18})),
    BadBallot("a token spent twice", _token_twice, Reason.TOKEN_USED, ("flagged", Reason.TOKEN_USED),
              frozenset({9})),
    BadBallot("a spoiled ballot with the voter's token", _spoiled_with_token, Reason.TOKEN_ON_SPOILED,
              ("invalid", Reason.TOKEN_ON_SPOILED), frozenset({18})),
    # --- proofs and openings ---------------------------------------------------------------
    BadBallot("two ciphertexts swapped", _mutated(_swap_ciphertexts), Reason.BAD_PROOF, ("invalid", Reason.BAD_PROOF),
              frozenset({10})),
    BadBallot("two contest proofs swapped", _mutated(_swap_contest_proofs), Reason.BAD_PROOF,
              ("invalid", Reason.BAD_PROOF), frozenset({11})),
    BadBallot("an opening that does not reproduce the ballot", _bad_opening, Reason.BAD_OPENING,
              ("invalid", Reason.BAD_OPENING), frozenset({12})),
)  # fmt: skip

assert len({case.name for case in CASES}) == len(CASES)
