"""Neither database, nor both joined, can pair a voter with a ballot."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from pathlib import Path

from cryptography import x509
from hub_fixtures import Hub, chain_of

from infra.jpki import derive_voter_key
from infra.mqtt import HubClient
from station_hub.operator import change_polls
from station_hub.roll import RollStore
from station_hub.station import Station
from station_hub.terminal_client import TerminalClient

CHOICES = {"contest-1": {"candidate-3"}, "contest-2": set()}
MIN_IDENTIFYING = 8
"""Shorter values (small counts, 'open', 'cast') identify nobody."""


def every_value(path: Path) -> set[bytes]:
    """Every cell of every table (schema included), as bytes, plus hex decodings of text."""
    values: set[bytes] = set()
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in [*tables, "sqlite_master"]:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        values.add(cell)
                    elif cell is not None:
                        text = str(cell)
                        values.add(text.encode())
                        with contextlib.suppress(ValueError):
                            values.add(bytes.fromhex(text))
    finally:
        db.close()
    return {value for value in values if len(value) >= MIN_IDENTIFYING}


def test_joining_roll_and_ledger_pairs_no_voter_with_any_ballot(hub: Hub, station: Station, voters: list[str]):
    with HubClient(station, "op1").connect() as operator:
        change_polls(operator, "open")
    with (
        TerminalClient(station, "t1").connect() as t1,
        TerminalClient(station, "t2").connect() as t2,
    ):
        for index, voter in enumerate(voters[:6]):
            terminal = (t1, t2)[index % 2]
            ballot = terminal.seal(CHOICES, terminal.check_in(voter))
            assert terminal.submit(terminal.submission(ballot))["result"] == "held"
    hub.stop()
    roll_values = every_value(station.roll_db)
    ledger_values = every_value(station.ledger_db)
    schema_words = {b"CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"}
    assert roll_values & ledger_values <= schema_words
    # No roll value hides inside a stored ballot either (raw or as hex text).
    # a stored ballot is its canonical JSON; a hash may start with the byte "{" too (1 in 256)
    ballots = [value for value in ledger_values if value.startswith(b'{"ballot_id":')]
    assert len(ballots) == 6
    for value in roll_values:
        for ballot in ballots:
            assert value not in ballot and value.hex().encode() not in ballot
    # The roll holds no terminal id and nothing time-like; the ledger holds no voter key.
    assert not {b"t1", b"t2"} & {v for v in every_value(station.roll_db)}
    salt = station.roll_salt()
    for voter in voters:
        certificate = x509.load_der_x509_certificate(voter.certificate_der)
        key = derive_voter_key(salt, certificate.issuer.public_bytes(), certificate.serial_number)
        assert bytes.fromhex(key) not in ledger_values
    assert len(chain_of(station)) == 6


def test_roll_file_does_not_record_the_order_of_check_ins(tmp_path: Path):
    """Same voters checked in in opposite orders (same blinded tokens): identical files."""
    keys = sorted(secrets.token_bytes(32) for _ in range(40))
    blinded = {key: secrets.token_bytes(384) for key in keys}
    checked_in = keys[::3]
    digests = []
    for name, order in (("forward", checked_in), ("backward", checked_in[::-1])):
        store = RollStore(tmp_path / f"{name}.db", 384)
        store.import_voters(keys)
        store.set_polls("open")
        for key in order:
            store.mark(key, blinded[key])
        assert store.checked_in() == len(checked_in)
        store.close()
        digests.append((tmp_path / f"{name}.db").read_bytes())
        assert not (tmp_path / f"{name}.db-journal").exists()
    assert digests[0] == digests[1]
