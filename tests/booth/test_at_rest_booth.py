"""Issue 12's byte scan: after each voter through a real booth (``booth run`` with a PN532 reader
on the emulator — no pcscd —, the real hub: Mosquitto, roll, ledger), including kill -9 at
failpoints and at a random moment, a simulated power cut and a clean close, no file under the
booth's data directory, and no line the booth logged, holds:

- any voter's card handle, voter key or card certificate (raw or hex), ever;
- the blinded value or the blinding inverse of any voter whose ballot was cast;
- the token message of a cast ballot anywhere but in the ballot itself (the outbox's payload);
- after the polls closed, anything of a check-in never cast (the check-in store is empty and its
  RAM keys are gone).

The values come from the test's side: handles and voter keys from the card certificates (the
roll salt is the test's), blinded values from what the roll recorded, token messages and
signatures from the hub's chain, and the inverses recomputed from the roll's key
(``inverse = signature / blind_signature mod n``, every voter × ballot pair). An uncast
check-in's values are read from the store the way an attacker holding the RAM key would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from booth_fixtures import PIN, ROLL_SALT, Voters, booth_set, ledger_rows, terminal_data_dir
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_at_rest_store import leaks

from appliance.card.authenticator import card_handle
from appliance.card.testca import CardFile
from appliance.card.voter_key import voter_key_of
from appliance.config import load_config
from appliance.outbox import CHECKIN_FILE, _Keys
from appliance.simulators.jpki_card import VirtualJpkiCard
from appliance.simulators.pn532_emulator import Pn532Emulator, PtyPn532
from appliance.simulators.scripted_voter import ScriptedVoter, VoterError
from election import tokens
from election.encoding import parse_json
from infra.failpoints import FAILPOINT_ENV
from infra.mqtt import HubClient
from station_hub.operator import change_polls
from station_hub.station import Station

pytestmark = pytest.mark.slow

BOOTH = [sys.executable, "-m", "appliance.cli", "run", "--config"]
CHOICES = {"contest-1": ["candidate-1"], "contest-2": ["candidate-2"]}


def wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


class Booth:
    """``booth run`` in its own process with its RAM directory; every stderr line is kept."""

    def __init__(self, config: Path, ram: Path, lines: list[str], failpoint: str = "") -> None:
        env = {**os.environ, FAILPOINT_ENV: failpoint, "RUNTIME_DIRECTORY": str(ram)}
        self.process = subprocess.Popen([*BOOTH, str(config)], env=env, stderr=subprocess.PIPE)
        self.lines = lines
        self.failpoint_hit = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()
        self.voter = ScriptedVoter(f"http://127.0.0.1:{load_config(config).ui_port}/", timeout=30)
        wait_until(self._serving, 30, f"booth run did not start: {lines[-5:]}")
        wait_until(lambda: self.voter.state()["hub_online"], 30, f"the booth did not reach the hub: {lines[-5:]}")

    def _watch(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if line.startswith("FAILPOINT"):
                self.failpoint_hit.set()

    def _serving(self) -> bool:
        assert self.process.poll() is None, f"booth run exited: {self.lines[-5:]}"
        try:
            self.voter.state()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Rig:
    def __init__(self, station: Station, voters: Voters, root: Path) -> None:
        self.station = station
        self.pty = PtyPn532(Pn532Emulator(None))
        self.config = terminal_data_dir(station, voters, "t1", root / "t1", reader="")
        data = json.loads(self.config.read_text())
        data["reader"] = {"kind": "pn532-uart", "port": self.pty.port}
        self.config.write_text(json.dumps(data, indent=2))
        self.data_dir = self.config.parent
        self.ram = Path("/dev/shm") / f"booth-at-rest-{os.getpid()}-{secrets.token_hex(4)}"
        self.ram.mkdir(mode=0o700)
        self.lines: list[str] = []
        self.booths: list[Booth] = []

    def start(self, failpoint: str = "") -> Booth:
        booth = Booth(self.config, self.ram, self.lines, failpoint)
        self.booths.append(booth)
        return booth

    def insert(self, card: CardFile) -> None:
        with self.pty.lock:
            self.pty.emulator.insert(VirtualJpkiCard(card))

    def remove(self) -> None:
        with self.pty.lock:
            self.pty.emulator.remove()
        time.sleep(0.3)  # the booth polls the reader; the next card must look like a new one

    def power_cut(self) -> None:
        """What a power cut leaves: the medium as it was, RAM (the key files) empty."""
        for path in self.ram.iterdir():
            path.unlink()

    def close(self) -> None:
        for booth in self.booths:
            booth.stop()
        self.pty.close()
        shutil.rmtree(self.ram, ignore_errors=True)


@pytest.fixture
def rig(station: Station, voters: Voters, hub, tmp_path: Path) -> Iterator[Rig]:
    made = Rig(station, voters, tmp_path)
    try:
        yield made
    finally:
        made.close()


# --- what the test knows, from its own side -----------------------------------------------------


def identity_values(name: str, card: CardFile) -> dict[str, bytes]:
    certificate = card.auth.certificate
    return {
        f"{name} card handle": bytes.fromhex(card_handle(certificate.issuer.public_bytes(), certificate.serial_number)),
        f"{name} voter key": bytes.fromhex(voter_key_of(ROLL_SALT, certificate)),
        f"{name} certificate": certificate.public_bytes(Encoding.DER),
        f"{name} card public key": certificate.public_key().public_bytes(Encoding.DER, PublicFormat.PKCS1),
    }


def roll_blinded(station: Station, card: CardFile) -> bytes | None:
    """What the roll recorded for this voter (None while not checked in)."""
    db = sqlite3.connect(f"file:{station.roll_db}?mode=ro", uri=True)
    try:
        key = bytes.fromhex(voter_key_of(ROLL_SALT, card.auth.certificate))
        row = db.execute("SELECT blinded FROM voters WHERE voter_key = ?", (key,)).fetchone()
    finally:
        db.close()
    return row[0] if row and any(row[0]) else None


def cast_tokens(station: Station) -> list[tuple[bytes, bytes]]:
    """(message, signature) of every cast ballot the hub's ledger holds."""
    found = []
    for row in ledger_rows(station):
        token = parse_json(row.stored).get("token") if row.kind == "cast" else None
        if isinstance(token, dict):
            found.append((bytes.fromhex(token["message"]), bytes.fromhex(token["signature"])))
    return found


def inverses(station: Station, blinded: list[bytes], signatures: list[bytes]) -> list[bytes]:
    """The blinding inverse of every (blinded, signature) pair: signature · blind_signature⁻¹."""
    key = station.token_private_key()
    n = key.public_key().public_numbers().n
    size = (n.bit_length() + 7) // 8
    out = []
    for value in blinded:
        z = int.from_bytes(tokens.blind_sign(key, value), "big")
        out += [(int.from_bytes(s, "big") * pow(z, -1, n) % n).to_bytes(size, "big") for s in signatures]
    return out


def uncast_checkins(rig: Rig) -> list[tuple[bytes, bytes, bytes]]:
    """(message, blinded, inverse) of every stored check-in, read as an attacker holding the RAM
    key file would (the running booth's /run)."""
    keys = [_Keys.parse(path.read_bytes()) for path in rig.ram.glob("checkin-keys-*") if "." not in path.name]
    store = rig.data_dir / "outbox" / CHECKIN_FILE
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT slot, sealed FROM checkins").fetchall()
    finally:
        db.close()
    out = []
    for slot, sealed in rows:
        opened = next((k.open_row(slot, sealed) for k in keys if k and k.open_row(slot, sealed)), None)
        assert opened is not None, "a stored check-in the RAM key does not open"
        out.append((opened.message, opened.blinded, opened.inverse))
    return out


def stored_checkins(rig: Rig) -> int:
    db = sqlite3.connect(f"file:{rig.data_dir / 'outbox' / CHECKIN_FILE}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM checkins").fetchone()[0]
    finally:
        db.close()


def outbox_depth(rig: Rig) -> int:
    db = sqlite3.connect(f"file:{rig.data_dir / 'outbox' / 'outbox.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def scan(rig: Rig, voters: list[CardFile], cast: list[CardFile], extra: dict[str, bytes] | None = None) -> None:
    """The byte scan of the whole data directory and the booth's log lines."""
    station = rig.station
    forbidden: dict[str, bytes] = dict(extra or {})
    for index, card in enumerate(voters):
        forbidden.update(identity_values(f"voter {index}", card))
    cast_blinded = [b for b in (roll_blinded(station, card) for card in cast) if b is not None]
    assert len(cast_blinded) == len(cast), "a voter who cast is not marked on the roll"
    ballots = cast_tokens(station)
    for index, value in enumerate(cast_blinded):
        forbidden[f"cast blinded {index}"] = value
    for index, value in enumerate(inverses(station, cast_blinded, [s for _, s in ballots])):
        forbidden[f"inverse candidate {index}"] = value
    found = leaks(rig.data_dir, forbidden, texts=tuple(rig.lines))
    # Token messages: only inside the ballots themselves (the ballot outbox, hex in the payload).
    messages = {f"token message {index}": message for index, (message, _) in enumerate(ballots)}
    for path in rig.data_dir.rglob("*"):
        if path.is_file() and not path.name.startswith("outbox.db"):
            data = path.read_bytes()
            found += [f"{path}: {n}" for n, m in messages.items() if m in data or m.hex().encode() in data]
        elif path.is_file():
            found += [f"{path}: {n} (raw)" for n, m in messages.items() if m in path.read_bytes()]
    found += [f"log: {n}" for n, m in messages.items() for line in rig.lines if m.hex() in line]
    assert found == [], "\n".join(found)


def check_in_and_vote(booth: Booth, rig: Rig, card: CardFile, *, until: str = "receipt") -> dict:
    """Insert the card, enter the PIN, vote; stop at ``until`` (ballot, sealed, receipt)."""
    rig.insert(card)
    voter = booth.voter
    try:
        voter.wait_screen("pin")
        voter.pin(PIN)
        view = voter.wait_screen("ballot", "already_voted")
        if view["screen"] == "already_voted" or until == "ballot":
            return view
        voter.vote(CHOICES)
        voter.seal()
        if until == "sealed":
            return voter.state()
        return voter.cast()
    except VoterError as error:
        raise AssertionError(f"{error}; the booth logged: {rig.lines[-8:]}") from error


def finish(booth: Booth, rig: Rig) -> None:
    if booth.voter.state()["screen"] in ("receipt", "already_voted"):
        booth.voter.tap("done")
    rig.remove()


def test_no_booth_file_links_a_voter_to_a_ballot(rig: Rig, station: Station, voters: Voters) -> None:
    cards = list(voters.eligible)
    seed = int(os.environ.get("AT_REST_SEED", secrets.randbits(32)))
    print(f"AT_REST_SEED={seed}")
    rng = random.Random(seed)
    cast: list[CardFile] = []
    before = len(cast_tokens(station))

    def cast_count() -> int:
        return len(cast_tokens(station)) - before

    # Voter 0: an ordinary vote.
    booth = rig.start()
    assert check_in_and_vote(booth, rig, cards[0])["tracking_code"]
    finish(booth, rig)
    cast.append(cards[0])
    scan(rig, cards, cast)

    # Voter 1: killed after sealing (checked in, not cast); back after the restart, same token.
    booth.stop()
    booth = rig.start(failpoint="booth-after-seal")
    rig.insert(cards[1])
    booth.voter.wait_screen("pin")
    booth.voter.pin(PIN)
    booth.voter.vote(CHOICES)
    booth.voter.tap("seal")
    assert booth.failpoint_hit.wait(30), f"failpoint not reached: {rig.lines[-5:]}"
    booth.kill()
    rig.remove()
    assert stored_checkins(rig) == 1, "the interrupted voter's check-in was not kept for the retry"
    scan(rig, cards, cast)
    booth = rig.start()
    assert check_in_and_vote(booth, rig, cards[1])["tracking_code"], "the retry did not get the stored token"
    finish(booth, rig)
    cast.append(cards[1])
    scan(rig, cards, cast)

    # Voter 2: killed between the ballot's commit and the check-in's removal; repaired on restart.
    booth.stop()
    booth = rig.start(failpoint="booth-before-checkin-spent")
    rig.insert(cards[2])
    check_in_and_vote(booth, rig, cards[2], until="sealed")
    booth.voter.tap("cast")
    assert booth.failpoint_hit.wait(30), f"failpoint not reached: {rig.lines[-5:]}"
    booth.kill()
    rig.remove()
    assert stored_checkins(rig) == 1, "the failpoint is not between the two commits"
    booth = rig.start()
    wait_until(lambda: cast_count() == 3, 30, "the committed ballot was not resent")
    cast.append(cards[2])
    assert stored_checkins(rig) == 0, "the cast ballot's check-in survived the restart"
    scan(rig, cards, cast)

    # Voter 3: kill -9 at a random moment of the session; the voter tries again.
    killer = threading.Timer(rng.uniform(0.5, 6.0), booth.kill)
    killer.start()
    with contextlib.suppress(Exception):  # the booth may die under the voter
        check_in_and_vote(booth, rig, cards[3])
    killer.join()
    if booth.process.poll() is None:
        booth.kill()
    rig.remove()
    scan(rig, cards, cast if cast_count() == 3 else [*cast, cards[3]])
    booth = rig.start()
    wait_until(lambda: outbox_depth(rig) == 0, 30, "the outbox did not drain after the restart")
    if cast_count() == 3:  # not cast before the kill: the stored check-in gives the same token
        view = check_in_and_vote(booth, rig, cards[3])
        assert view["screen"] == "receipt", f"the voter killed mid-session could not vote: {view['screen']}"
        finish(booth, rig)
    else:
        rig.insert(cards[3])
        booth.voter.wait_screen("pin")
        booth.voter.pin(PIN)
        booth.voter.wait_screen("already_voted")
        finish(booth, rig)
    wait_until(lambda: cast_count() == 4, 30, "voter 3's ballot is not in the chain once")
    cast.append(cards[3])
    scan(rig, cards, cast)

    # Voter 5: checked in, then a power cut (kill -9, RAM emptied): the trade-off of the RAM key.
    # The stored check-in cannot be read any more and is purged; the roll has marked the voter
    # and refuses a new blinded request as already voted: the voter is sent to a poll worker.
    check_in_and_vote(booth, rig, cards[5], until="ballot")
    booth.kill()
    rig.remove()
    rig.power_cut()
    booth = rig.start()
    assert stored_checkins(rig) == 0, "a check-in whose RAM key is gone was kept"
    view = check_in_and_vote(booth, rig, cards[5], until="ballot")
    assert view["screen"] == "already_voted", view["screen"]
    finish(booth, rig)
    scan(rig, cards, cast)

    # Voter 4: checks in and walks away (card pulled): the check-in stays until the polls close.
    check_in_and_vote(booth, rig, cards[4], until="ballot")
    rig.remove()
    booth.voter.wait_screen("card_removed", "idle")
    # Voter 5's refused request is stored too (the booth keeps a request it sent until cast or close).
    stored = uncast_checkins(rig)
    assert roll_blinded(station, cards[4]) in [blinded for _, blinded, _ in stored], "not the request the roll saw"
    uncast = {f"uncast {field} {n}": value for n, row in enumerate(stored)
              for field, value in zip(("message", "blinded", "inverse"), row, strict=True)}  # fmt: skip
    scan(rig, cards, cast, extra=uncast)  # sealed: unreadable without the RAM key

    # The polls close: the booth purges every check-in never cast and deletes its RAM keys.
    with HubClient(station, "op1").connect() as operator:
        change_polls(operator, "close", unreachable=None, drain_wait=10, timeout=60)
    wait_until(lambda: stored_checkins(rig) == 0, 20, "the uncast check-in was not purged at the close")
    wait_until(lambda: not list(rig.ram.iterdir()), 10, f"RAM keys left: {list(rig.ram.iterdir())}")
    booth.stop()  # a clean close
    assert cast_count() == 4
    scan(rig, cards, cast, extra=uncast)
    # The journal-mode store left no journal; the ballot outbox never had a check-in table.
    outbox_dir = rig.data_dir / "outbox"
    assert not (outbox_dir / f"{CHECKIN_FILE}-journal").exists()
    tables = dict(sqlite3.connect(outbox_dir / "outbox.db").execute("SELECT name, sql FROM sqlite_master").fetchall())
    assert "checkins" not in tables
    # Issue 16: the outbox is emptied by the held acks and keeps only the set of ballot hashes,
    # without row ids, laid out in hash order whatever order the voters cast in.
    assert "WITHOUT ROWID" in tables["outbox"] and "WITHOUT ROWID" in tables["sealed"]
    assert outbox_depth(rig) == 0
    hashes = booth_set(outbox_dir / "outbox.db")
    assert {row.ballot_hash for row in ledger_rows(station) if row.kind == "cast"} <= set(hashes)
    data = (outbox_dir / "outbox.db").read_bytes()
    by_place = sorted(hashes, key=data.index)
    assert by_place in (sorted(hashes), sorted(hashes, reverse=True)), "the outbox file keeps the casting order"
    # The audit log counts ballots per interval; no entry names a ballot.
    audit = (rig.data_dir / "audit" / "booth.log").read_text()
    assert not any(h.hex() in audit for h in hashes) and '"ballot_id"' not in audit
    counted = [json.loads(line)["data"]["count"] for line in audit.splitlines() if '"kind":"ballots_cast"' in line]
    assert sum(counted) == 4, counted
