"""The audio ballot without a booth: what the narrator says for views, and the synthesizers'
rate and volume measured with sox."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.audio import EspeakNg, Narrator, OpenJtalk, election_document, load_catalogue, spell
from appliance.session import Session, Timeouts
from appliance.session.events import (
    Authenticated,
    CardChecked,
    CardInserted,
    Cast,
    CheckedIn,
    CheckInFailed,
    Held,
    Key,
    KeyPress,
    PinEntered,
    Refusal,
    Sealed,
    Tap,
)
from election.chain import tracking_code
from election.manifest import sample_manifest

MANIFEST = sample_manifest(contests=2, selections=3)


def narrated(session: Session, narrator: Narrator, *events) -> list[str]:
    said = []
    for event in events:
        session.handle(event, 1)
        utterance = narrator.update(session.view())
        said.append(utterance.text if utterance else "")
    return said


@pytest.mark.parametrize("language", ["ja", "en"])
def test_the_pin_wheel_is_never_spoken_by_value(language: str) -> None:
    """Two voters turning the wheel to different digits hear exactly the same words."""
    heard = []
    for presses in (3, 7):
        session = Session(MANIFEST, Timeouts(), language, check_card=True)
        narrator = Narrator(election_document(MANIFEST), load_catalogue())
        narrated(session, narrator, CardInserted(), CardChecked(3, 3), KeyPress(Key.UP, tactile=True))
        said = narrated(
            session, narrator, *[KeyPress(Key.UP, tactile=True)] * presses, KeyPress(Key.SELECT, tactile=True)
        )
        heard.append(said[presses:])
        assert set(said[:presses]) == {load_catalogue()[language]["say_pin_up"]}
    assert heard[0] == heard[1] and heard[0][-1], "the digit entered is said by position only"


@pytest.mark.parametrize("language", ["ja", "en"])
@pytest.mark.parametrize("refusal", [Refusal.HUB_UNREACHABLE, Refusal.ROLL_UNREACHABLE, Refusal.STALE_CRL])
def test_the_retry_screen_says_which_part_cannot_check_the_voter_in(language: str, refusal: Refusal) -> None:
    words = load_catalogue()[language]
    session = Session(MANIFEST, Timeouts(), language)
    narrator = Narrator(election_document(MANIFEST), load_catalogue())
    said = narrated(
        session,
        narrator,
        CardInserted(),
        KeyPress(Key.UP, tactile=True),
        PinEntered("1234"),
        Authenticated(),
        CheckInFailed(refusal),
    )
    assert words[refusal.value].rstrip("。.") in said[-1]
    others = {r.value for r in Refusal if r.value != refusal.value and r.value in words}
    assert not any(words[other].rstrip("。.") in said[-1] for other in others)


@pytest.mark.parametrize("language", ["ja", "en"])
def test_the_receipt_says_the_tracking_code_at_once_and_only_what_is_true(language: str) -> None:
    """The code is spoken with the receipt, before any ack; "sent, waiting" until the station's
    held ack, then "received" (the published record comes after the close); another ballot's
    ack changes nothing."""
    words = load_catalogue()[language]
    session = Session(MANIFEST, Timeouts(), language)
    narrator = Narrator(election_document(MANIFEST), load_catalogue())
    session.hub_online = True
    said = narrated(
        session, narrator, CardInserted(), KeyPress(Key.UP, tactile=True), PinEntered("1234"), Authenticated(),
        CheckedIn(), Tap("next"), Tap("review"), Tap("seal"), Sealed("aa" * 32), Tap("cast"), Cast("cc" * 32),
        Held("dd" * 32), Held("cc" * 32),
    )  # fmt: skip
    receipt, other_ack, held = said[-3:]
    assert spell(tracking_code(bytes.fromhex("cc" * 32)), language) in receipt
    assert words["receipt_sending"].rstrip("。.") in receipt and words["receipt_held"].rstrip("。.") not in receipt
    assert other_ack == ""
    assert words["receipt_held"].rstrip("。.") in held


def duration_and_rms(path: Path) -> tuple[float, float]:
    stat = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True, check=True).stderr
    values = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in stat.splitlines() if ":" in line
              and line.split(":")[1].strip().replace(".", "", 1).replace("-", "", 1).isdigit()}  # fmt: skip
    return values["Length (seconds)"], values["RMS     amplitude"]


@pytest.mark.parametrize(("make", "text"), [(EspeakNg.find, "Candidate two of seven, not chosen."),
                                            (OpenJtalk.find, "候補者、山田太郎、選択していません。")])  # fmt: skip
def test_rate_and_volume_change_the_speech(tmp_path: Path, make, text: str) -> None:
    synthesizer = make()
    measured = {}
    for rate, volume in ((1, 2), (3, 2), (2, 1), (2, 3)):
        path = tmp_path / f"r{rate}v{volume}.wav"
        synthesizer.synthesize(text, path, rate, volume)
        measured[rate, volume] = duration_and_rms(path)
    assert measured[1, 2][0] > measured[3, 2][0] * 1.2, "slow speech is longer than fast speech"
    assert measured[2, 3][1] > measured[2, 1][1] * 1.5, "loud speech has more RMS amplitude than soft"
    assert min(rms for _, rms in measured.values()) > 0.005
