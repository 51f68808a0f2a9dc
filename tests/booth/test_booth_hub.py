"""A booth on the real stack: pcscd + vpcd virtual cards, Mosquitto, ledger and roll.

Driven through the UI server's HTTP API (the scripted voter), one hub for the module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from booth_fixtures import PIN, Voters, booth_set, ledger_rows, ledger_statement, terminal_data_dir

from appliance.config import load_config
from appliance.publisher import RESEND_AFTER
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.scripted_voter import ScriptedVoter
from election.ballot import BallotOpening, SealedBallot
from election.chain import tracking_code
from election.devices import set_commitment
from election.encoding import parse_json
from station_hub.station import Station


@pytest.fixture(scope="module")
def booth(
    station: Station, voters: Voters, hub, pcscd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BoothRunner]:
    config = terminal_data_dir(station, voters, "t1", tmp_path_factory.mktemp("t1"), pcscd.reader)
    runner = BoothRunner(load_config(config)).start()
    assert runner.booth is not None and runner.booth.link.wait_online(10)
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def voter(booth: BoothRunner) -> ScriptedVoter:
    assert booth.ui is not None
    voter = ScriptedVoter(booth.ui.url)
    if voter.state()["screen"] != "idle":
        voter.tap("done")  # the previous test left a result screen
    voter.wait_screen("idle", card_present=False)
    return voter


class Card:
    def __init__(self, card, slot) -> None:
        self.slot = slot
        self.link = slot.insert(VirtualJpkiCard(card))

    def remove(self) -> None:
        self.slot.remove(self.link)


@pytest.fixture
def insert(card_slot) -> Callable:
    def put(card) -> Card:
        return Card(card, card_slot)

    return put


def test_a_challenge_is_held_and_sent_with_the_cast_ballot_in_one_burst(
    voter: ScriptedVoter, booth: BoothRunner, insert, voters: Voters, station: Station
) -> None:
    """The spoiled ballot is committed at the challenge but reaches the ledger only with the same
    voter's cast ballot, so both fall in one batch (docs/design-record-v2.md §4); each carries
    the statement made when it was committed; the receipt shows the tracking code before the
    ledger's held ack and says "held" only after it."""
    before = {row.ballot_hash for row in ledger_rows(station)}
    card = insert(voters.eligible[0])
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.vote({"contest-1": ["candidate-2"], "contest-2": ["candidate-3"]})
    voter.seal()
    spoiled = voter.challenge()
    assert spoiled["opened_choices"] == {"contest-1": ["candidate-2"], "contest-2": ["candidate-3"]}
    assert booth.booth is not None and booth.booth.outbox.depth() == 1, "the challenged ballot is not committed"
    time.sleep(RESEND_AFTER + 1.5)  # a resend round would have sent it, were it not held
    assert {row.ballot_hash for row in ledger_rows(station)} == before, "the spoiled ballot left before the cast"
    voter.tap("vote_again")
    voter.vote({"contest-1": ["candidate-1"], "contest-2": []})
    voter.seal()
    receipt = voter.cast(wait_for_code=False)
    assert receipt["tracking_code"] == tracking_code(bytes.fromhex(receipt["ballot_hash"])), "no code at once"
    assert voter.wait_screen("receipt", receipt="held")["tracking_code"] == receipt["tracking_code"]
    card.remove()
    voter.tap("done")
    voter.wait_screen("idle")

    new = [row for row in ledger_rows(station) if row.ballot_hash not in before]
    assert sorted(row.kind for row in new) == ["cast", "spoiled"]
    assert len({row.batch for row in new}) == 1, f"spoiled and cast fell in different batches: {new}"
    manifest = station.election().manifest
    key = station.election().context.joint_public_key
    spoiled_row = next(row for row in new if row.kind == "spoiled")
    spoiled_message = parse_json(spoiled_row.stored)
    spoiled_ballot = SealedBallot.from_json(spoiled_message["ballot"], manifest)
    assert spoiled_ballot.token is None, "a spoiled ballot carries the voter's token"
    opening = BallotOpening.from_json(spoiled_message["opening"], manifest)
    assert opening.opening_failures(spoiled_ballot, manifest, key) == []
    assert opening.choices() == {"contest-1": {"candidate-2"}, "contest-2": {"candidate-3"}}
    cast = SealedBallot.from_json(parse_json(next(row for row in new if row.kind == "cast").stored), manifest)
    assert cast.token is not None and cast.ballot_hash.hex() == receipt["ballot_hash"]
    sealed = booth_set(booth.config.outbox)
    assert {spoiled_ballot.ballot_hash, cast.ballot_hash} <= set(sealed)
    latest = ledger_statement(station, "t1")
    assert latest is not None and latest[:2] == (len(sealed), set_commitment(sealed)), "not t1's latest statement"


def test_already_voted(voter: ScriptedVoter, insert, voters: Voters) -> None:
    card = insert(voters.eligible[0])  # voted in the test above
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.wait_screen("already_voted")
    card.remove()
    voter.wait_screen("idle")


def test_not_eligible(voter: ScriptedVoter, insert, voters: Voters) -> None:
    card = insert(voters.outsider)
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.wait_screen("not_eligible")
    card.remove()


def test_third_wrong_pin_locks_the_card_and_says_so(voter: ScriptedVoter, insert, voters: Voters) -> None:
    card = insert(voters.eligible[1])  # a fresh virtual card: its PIN counter starts at 3
    voter.wait_screen("pin")
    for tries_left in (2, 1):
        voter.pin("9999")
        voter.wait_screen("wrong_pin", tries_left=tries_left)
    voter.pin("9999")
    voter.wait_screen("card_locked")
    card.remove()


def test_revoked_card_is_not_valid(voter: ScriptedVoter, insert, voters: Voters) -> None:
    card = insert(voters.revoked)
    voter.wait_screen("card_invalid")  # at insertion, before any PIN (test_booth_insertion.py)
    card.remove()


def test_wrong_pin_then_right_pin(voter: ScriptedVoter, insert, voters: Voters) -> None:
    card = insert(voters.eligible[1])
    voter.wait_screen("pin")
    voter.pin("9999")
    assert voter.wait_screen("wrong_pin")["tries_left"] == 2
    voter.pin("12")
    # Wait for the new screen, not the previous wrong-PIN one: a malformed PIN never reaches
    # the card, so it costs no try.
    assert voter.wait_screen("wrong_pin", pin_format_error=True)["tries_left"] == 2
    voter.pin(PIN)
    voter.wait_screen("ballot")
    card.remove()
    view = voter.wait_screen("card_removed")
    assert view["choices"] == {"contest-1": [], "contest-2": []}


def test_card_removed_mid_vote_then_same_voter_votes(
    voter: ScriptedVoter, insert, voters: Voters, station: Station
) -> None:
    """The roll marked the voter at check-in; the stored request gets them the same token again."""
    before = len(ledger_rows(station))
    card = insert(voters.eligible[2])
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.vote({"contest-1": ["candidate-3"]})
    card.remove()
    voter.wait_screen("card_removed")
    assert len(ledger_rows(station)) == before, "a cancelled session left a ballot"
    card = insert(voters.eligible[2])
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.vote({"contest-1": ["candidate-3"]})
    voter.seal()
    assert voter.cast()["tracking_code"]
    card.remove()
    voter.tap("done")


def test_keypad_keys_drive_the_ballot(voter: ScriptedVoter, insert, voters: Voters) -> None:
    card = insert(voters.eligible[3])
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.wait_screen("ballot")
    for key in ("down", "select"):
        voter.key(key)
    assert voter.wait_screen("ballot", choices={"contest-1": ["candidate-2"], "contest-2": []})
    voter.key("back")  # nothing before the first contest
    card.remove()
    voter.wait_screen("card_removed")


def test_bad_page_requests_are_refused(booth: BoothRunner) -> None:
    import urllib.error
    import urllib.request

    assert booth.ui is not None
    for body in (
        b"{",
        b'{"kind": "tap"}',
        b'{"kind": "nope", "x": "y"}',
        b'{"kind": "key", "key": "left"}',
        b"x" * 9000,
    ):
        request = urllib.request.Request(booth.ui.url + "api/event", data=body)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
        assert error.value.code in (400, 413)
