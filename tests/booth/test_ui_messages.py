"""The kiosk page's message catalogue and the page's event parser (no browser)."""

from __future__ import annotations

import json

import pytest

from appliance.session import State
from appliance.session import events as ev
from appliance.ui.server import parse_event, static_dir

CATALOGUE = json.loads((static_dir() / "messages.json").read_text(encoding="utf-8"))
RESULT_SCREENS = ["card_locked", "card_invalid", "not_eligible", "already_voted", "polls_closed", "hub_unreachable",
                  "card_removed", "out_of_service", "session_error", "timed_out",
                  "roll_unreachable", "stale_crl"]  # fmt: skip
"""Every screen with a title and a text; the last two are variants of ``hub_unreachable`` (the
view's ``unreachable`` names the part), not states of their own."""


def test_both_languages_have_every_message_and_every_plural_an_other_form() -> None:
    assert set(CATALOGUE["ja"]) == set(CATALOGUE["en"])
    for language in ("ja", "en"):
        for key, message in CATALOGUE[language].items():
            assert isinstance(message, str) or "other" in message, (language, key)


def test_every_result_screen_has_a_title_and_a_text() -> None:
    variants = {refusal.value for refusal in ev.Refusal}
    assert {state.value for state in State} | variants >= set(RESULT_SCREENS)
    for language in ("ja", "en"):
        for screen in RESULT_SCREENS:
            assert CATALOGUE[language][screen] and CATALOGUE[language][f"{screen}_text"], (language, screen)


def test_japanese_wording() -> None:
    text = json.dumps(CATALOGUE["ja"], ensure_ascii=False)
    assert "投票カード" not in text and "集計所" not in text
    assert "マイナンバーカード" in CATALOGUE["ja"]["idle"]


def test_the_session_error_and_receipt_claim_nothing_unproven() -> None:
    for language in ("ja", "en"):
        error = CATALOGUE[language]["session_error_text"]
        assert "No ballot" not in error and "投票されていません" not in error and "投票はされていません" not in error
    assert "stored safely" not in json.dumps(CATALOGUE["en"]) and "will be delivered" not in json.dumps(CATALOGUE["en"])
    assert "kept on this terminal" in CATALOGUE["en"]["receipt_kept"]
    # Before the held ack nothing says the station has the ballot; after it nothing says it is
    # already in the record (it is published after the polls close).
    for language in ("ja", "en"):
        assert "ballot_reference" not in CATALOGUE[language]
    assert "waiting" in CATALOGUE["en"]["receipt_sending"] and "Received" not in CATALOGUE["en"]["receipt_sending"]
    assert "after the polls close" in CATALOGUE["en"]["receipt_held"]
    assert "受け取りました" in CATALOGUE["ja"]["receipt_held"] and "締め切り後" in CATALOGUE["ja"]["receipt_held"]


def test_the_english_counters_are_plural_forms() -> None:
    assert CATALOGUE["en"]["wrong_pin"]["=1"] == "Wrong PIN. 1 try left."
    assert CATALOGUE["en"]["choose_up_to"]["=1"] == "Choose 1"


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ({"kind": "key", "key": "help"}, ev.KeyPress(ev.Key.HELP)),
        ({"kind": "text_size", "level": "3"}, ev.TextSize(3)),
        ({"kind": "theme", "name": "low"}, ev.Theme("low")),
    ],
)
def test_the_page_sends_help_text_size_and_theme(body: dict[str, str], event: ev.Event) -> None:
    assert parse_event(body) == event


@pytest.mark.parametrize("level", ["0", "5", "x", "1.5"])
def test_a_bad_text_size_is_refused(level: str) -> None:
    with pytest.raises(ValueError, match="level"):
        parse_event({"kind": "text_size", "level": level})
