"""The booth on the real stack (pcscd + vpcd, Mosquitto, ledger, roll) with cards that are
legal but unusual, cards it cannot use, and booth steps that raise: the voter always sees a
clear screen, the booth never freezes on "please wait", and the next voter votes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from booth_fixtures import PIN, Voters, terminal_data_dir

sys.path.insert(0, str(Path(__file__).parents[1] / "card"))

from card_fixtures import Forge, malformed_certificates

from appliance.card import AuthMode
from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import CardQuirks, VirtualJpkiCard
from appliance.simulators.scripted_voter import ScriptedVoter
from station_hub.station import Station

pytestmark = pytest.mark.timeout(240)
CHOICES = {"contest-1": ["candidate-1"], "contest-2": ["candidate-2"]}


@pytest.fixture(scope="module")
def booth(
    station: Station, voters: Voters, hub: Any, pcscd: Any, tmp_path_factory: pytest.TempPathFactory
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
        voter.tap("done")
    voter.wait_screen("idle", card_present=False)
    return voter


def refused_as_invalid(voter: ScriptedVoter, card_slot: Any, card: VirtualJpkiCard) -> None:
    """Insert ``card``; it must end on "card invalid" (at insertion or after the PIN), then out."""
    link = card_slot.insert(card)
    view = voter.wait_screen("pin", "card_invalid")
    if view["screen"] == "pin":
        voter.pin(PIN)
        voter.wait_screen("card_invalid")
    card_slot.remove(link)
    voter.wait_screen("idle", card_present=False)


def votes(voter: ScriptedVoter, card_slot: Any, card: VirtualJpkiCard) -> None:
    """The voter with ``card`` goes from the PIN to the receipt: the ballot is cast."""
    link = card_slot.insert(card)
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.vote(CHOICES)
    voter.seal()
    receipt = voter.cast(wait_for_code=False)  # the hub's ack and tracking code: test_booth_hub.py
    assert receipt["screen"] == "receipt" and receipt["ballot_hash"], "the ballot was not cast"
    card_slot.remove(link)
    voter.tap("done")
    voter.wait_screen("idle", card_present=False)


def test_cards_answering_short_reads_6cxx_and_61xx_vote(voter: ScriptedVoter, card_slot: Any, voters: Voters) -> None:
    quirks = CardQuirks(short_read=90, exact_le=128, response_chunk=100)
    votes(voter, card_slot, VirtualJpkiCard(voters.eligible[0], quirks))


@pytest.mark.parametrize("kind", ["undecodable-utf8-issuer", "version-4", "negative-serial", "truncated-file"])
def test_a_malformed_certificate_is_card_invalid_and_the_next_voter_votes(
    voter: ScriptedVoter, card_slot: Any, voters: Voters, kind: str
) -> None:
    forge = Forge(voters.ca, voters.eligible[5], AuthMode.AUTH)
    refused_as_invalid(voter, card_slot, forge.on_card(malformed_certificates(forge)[kind]))
    if kind == "undecodable-utf8-issuer":  # one full vote after such a card is enough
        votes(voter, card_slot, VirtualJpkiCard(voters.eligible[1]))


class _Exploding:
    """Passes the insertion probe (the real card's), then raises at authentication."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def probe(self) -> Any:
        return self._real.probe()

    def authenticate(self, secret: str) -> None:
        raise RuntimeError("a bug in the card path")


def test_an_unexpected_exception_while_authenticating_is_card_invalid_then_the_next_voter_votes(
    booth: BoothRunner, voter: ScriptedVoter, card_slot: Any, voters: Voters, caplog: pytest.LogCaptureFixture
) -> None:
    assert booth.booth is not None
    real = booth.booth.authenticator
    booth.booth.authenticator = lambda reader: _Exploding(real(reader))  # type: ignore[assignment,return-value]
    caplog.set_level(logging.ERROR, logger="appliance.booth")
    try:
        refused_as_invalid(voter, card_slot, VirtualJpkiCard(voters.eligible[2]))
    finally:
        booth.booth.authenticator = real
    failures = [r for r in caplog.records if "booth step Authenticate failed" in r.getMessage()]
    assert len(failures) == 1, "the failure must be logged once"
    assert PIN not in caplog.text
    votes(voter, card_slot, VirtualJpkiCard(voters.eligible[2]))


def test_an_unexpected_exception_at_check_in_shows_session_error_then_the_voter_votes(
    booth: BoothRunner, voter: ScriptedVoter, card_slot: Any, voters: Voters, caplog: pytest.LogCaptureFixture
) -> None:
    assert booth.booth is not None
    link = booth.booth.link

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug at check-in")

    link.request_checkin = broken  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="appliance.booth")
    try:
        card = card_slot.insert(VirtualJpkiCard(voters.eligible[3]))
        voter.wait_screen("pin")
        voter.pin(PIN)
        view = voter.wait_screen("session_error")
        assert view["targets"] == ["done"] and view["choices"] == {"contest-1": [], "contest-2": []}
        card_slot.remove(card)
        voter.wait_screen("idle", card_present=False)
    finally:
        del link.request_checkin  # the class's method again
    assert len([r for r in caplog.records if "booth step CheckIn failed" in r.getMessage()]) == 1
    votes(voter, card_slot, VirtualJpkiCard(voters.eligible[3]))
