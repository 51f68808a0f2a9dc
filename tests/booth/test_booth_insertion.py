"""Checks at card insertion on the real stack (pcscd + vpcd, Mosquitto, ledger, roll): polls
not open, a revoked, expired or locked card and a stale CRL are each reported on their own
screen before the PIN screen, and the virtual card (recording every APDU) never receives a
VERIFY carrying a PIN. A good card shows the PIN screen with the tries left it reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from booth_fixtures import PIN, Voters, open_polls, terminal_data_dir
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hub_fixtures import Hub

from appliance.audio import AudioOptions
from appliance.card import AuthMode, apdu
from appliance.config import load_config
from appliance.runner import BoothRunner
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.scripted_voter import ScriptedVoter
from station_hub.station import Station

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def hub(station: Station, broker: Any) -> Iterator[Hub]:
    """This module's hub starts with the polls still pending (see ``polls_open``)."""
    running = Hub(station).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def polls_open(hub: Hub, station: Station) -> None:
    open_polls(station)


class Terminal:
    def __init__(self, runner: BoothRunner) -> None:
        assert runner.booth is not None and runner.ui is not None
        self.runner, self.booth = runner, runner.booth
        self.voter = ScriptedVoter(runner.ui.url)
        self.screens: list[str] = []
        self.booth.view_listeners.append(lambda view: self.screens.append(view["screen"]))


@pytest.fixture
def terminal(
    station: Station, voters: Voters, hub: Hub, pcscd: Any, tmp_path: Path
) -> Iterator[Callable[..., Terminal]]:
    runners: list[BoothRunner] = []

    def start(crl_pem: bytes | None = None) -> Terminal:
        config = terminal_data_dir(station, voters, "t1", tmp_path / f"t1-{len(runners)}", pcscd.reader)
        if crl_pem is not None:
            (config.parent / "card" / "auth-crl.pem").write_bytes(crl_pem)
        runner = BoothRunner(load_config(config), audio=AudioOptions(enabled=False)).start()
        runners.append(runner)
        assert runner.booth is not None and runner.booth.link.wait_online(10)
        deadline = time.monotonic() + 10
        while runner.booth.link.polls is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.booth.link.polls is not None, "the booth never heard the ledger's polls state"
        return Terminal(runner)

    try:
        yield start
    finally:
        for runner in runners:
            runner.stop()


def insert_and_expect(terminal: Terminal, card_slot: Any, card: VirtualJpkiCard, screen: str) -> dict[str, Any]:
    terminal.screens.clear()
    link = card_slot.insert(card)
    view = terminal.voter.wait_screen(screen)
    shown = [name for name in terminal.screens if name not in ("idle", "checking_card")]
    assert shown[0] == screen and "pin" not in shown and "wrong_pin" not in shown, terminal.screens
    assert card.secrets_presented() == [], "a PIN reached the card"
    card_slot.remove(link)
    terminal.voter.wait_screen("idle", card_present=False)
    return view


def test_polls_not_open_is_reported_before_the_pin_and_the_card_is_not_even_read(
    terminal, card_slot: Any, voters: Voters
) -> None:
    booth = terminal()
    assert booth.booth.link.polls == "pending", "this test runs before the module opens the polls"
    card = VirtualJpkiCard(voters.eligible[0], record=True)
    insert_and_expect(booth, card_slot, card, "polls_closed")
    assert card.commands == [], "the card was read although the polls are not open"


@pytest.mark.usefixtures("polls_open")
@pytest.mark.parametrize("kind", ["revoked", "expired"])
def test_revoked_and_expired_cards_are_reported_before_the_pin(terminal, card_slot: Any, voters: Voters, kind) -> None:
    booth = terminal()
    if kind == "revoked":
        card_file = voters.revoked
    else:
        now = datetime.now(UTC)
        card_file = voters.ca.issue_card(pin=PIN, password="PASS2024", not_before=now - timedelta(days=400),
                                         not_after=now - timedelta(days=1))  # fmt: skip
    card = VirtualJpkiCard(card_file, record=True)
    insert_and_expect(booth, card_slot, card, "card_invalid")
    assert not any(raw[:2] == b"\x00\x20" for raw in card.commands), "no VERIFY at all for a refused certificate"


@pytest.mark.usefixtures("polls_open")
def test_a_locked_card_is_reported_before_the_pin(terminal, card_slot: Any, voters: Voters) -> None:
    booth = terminal()
    card = VirtualJpkiCard(voters.eligible[1], record=True)
    card.secrets[apdu.EF_AUTH_PIN].tries_left = 0
    insert_and_expect(booth, card_slot, card, "card_locked")
    assert any(raw == bytes.fromhex("00200080") for raw in card.commands), "the empty VERIFY asked the tries"


@pytest.mark.usefixtures("polls_open")
def test_a_stale_crl_is_reported_before_the_pin(terminal, card_slot: Any, voters: Voters) -> None:
    now = datetime.now(UTC)
    ca = voters.ca.ca_certificate(AuthMode.AUTH)
    stale = (
        x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
        .last_update(now - timedelta(days=40)).next_update(now - timedelta(minutes=5))
        .sign(voters.ca.ca_private_key(AuthMode.AUTH), hashes.SHA256())
    )  # fmt: skip
    booth = terminal(stale.public_bytes(serialization.Encoding.PEM))
    card = VirtualJpkiCard(voters.eligible[2], record=True)
    view = insert_and_expect(booth, card_slot, card, "card_check_unavailable")
    assert view["targets"] == ["done"]


@pytest.mark.usefixtures("polls_open")
def test_a_good_card_gets_the_pin_screen_with_its_tries_left_then_votes_on(
    terminal, card_slot: Any, voters: Voters
) -> None:
    booth = terminal()
    card = VirtualJpkiCard(voters.eligible[3], record=True)
    card.secrets[apdu.EF_AUTH_PIN].tries_left = 2
    link = card_slot.insert(card)
    view = booth.voter.wait_screen("pin")
    assert (view["tries_left"], view["max_tries"]) == (2, 3)
    assert card.secrets_presented() == [] and card.secrets[apdu.EF_AUTH_PIN].tries_left == 2
    booth.voter.pin(PIN)
    booth.voter.wait_screen("ballot")
    assert len(card.secrets_presented()) == 1, "exactly one VERIFY with the PIN, after the voter typed it"
    card_slot.remove(link)
    booth.voter.wait_screen("card_removed")
