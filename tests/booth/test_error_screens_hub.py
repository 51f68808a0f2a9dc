"""Error screens against the real hub: polls not open at the roll, and a hub that is away.

This module's hub never opens the polls (it overrides the booth conftest's ``hub``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from booth_fixtures import PIN, Voters, open_polls, terminal_data_dir
from hub_fixtures import Hub

from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.scripted_voter import ScriptedVoter
from infra.broker import Broker
from station_hub.station import Station


@pytest.fixture(scope="module")
def hub(station: Station, broker: Broker) -> Iterator[Hub]:
    running = Hub(station).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def runner(station: Station, voters: Voters, hub, pcscd, tmp_path: Path) -> Iterator[BoothRunner]:
    config = terminal_data_dir(station, voters, "t1", tmp_path / "t1", pcscd.reader)
    with BoothRunner(load_config(config)) as running:
        assert running.booth is not None and running.booth.link.wait_online(10)
        yield running


def test_polls_not_open_shows_polls_closed_and_marks_nobody(
    runner: BoothRunner, voters: Voters, station: Station, card_slot
) -> None:
    assert runner.ui is not None
    voter = ScriptedVoter(runner.ui.url)
    card = card_slot.insert(VirtualJpkiCard(voters.eligible[0]))
    # At insertion once the booth has heard the ledger's polls state, else at the roll's check-in.
    if voter.wait_screen("pin", "polls_closed")["screen"] == "pin":
        voter.pin(PIN)
        voter.wait_screen("polls_closed")
    card_slot.remove(card)
    voter.wait_screen("idle", card_present=False)
    # Once the polls open, the same voter was not marked by the refused check-in: they vote.
    open_polls(station)
    card = card_slot.insert(VirtualJpkiCard(voters.eligible[0]))
    voter.wait_screen("pin")
    voter.pin(PIN)
    voter.wait_screen("ballot")
    card_slot.remove(card)


def test_hub_away_at_check_in_shows_hub_unreachable(
    runner: BoothRunner, voters: Voters, broker: Broker, station: Station, card_slot, tmp_path: Path
) -> None:
    assert runner.ui is not None and runner.booth is not None
    voter = ScriptedVoter(runner.ui.url)
    broker.stop()
    try:
        card = card_slot.insert(VirtualJpkiCard(voters.eligible[1]))
        voter.wait_screen("pin")
        voter.pin(PIN)
        voter.wait_screen("hub_unreachable", timeout=40)
        card_slot.remove(card)
    finally:
        restarted = Broker(station, tmp_path / "mosquitto.log")
    try:
        assert runner.booth.link.wait_online(20)
    finally:
        restarted.stop()
