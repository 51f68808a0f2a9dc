"""An insider holding the hub's whole data directory (roll file, roll DB, ledger DB, every key
file, logs) still cannot obtain a token for an absent voter: no card, no token."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hub_fixtures import SoftCard, cards_of, jpki_files, make_electorate, roll_of, write_election
from test_checkin_card import marked, open_polls

from election import tokens
from election.encoding import parse_json
from infra.broker import Broker, free_port
from infra.errors import SiteError
from infra.files import private_pem
from infra.jpki import derive_voter_key
from infra.pki import Role, StationCA, write_certificate
from protocol.messages import CheckinRequest
from station_hub.ledger_service import LedgerService
from station_hub.roll import VOTER_KEYS_FORMAT, RollStore, read_voter_keys
from station_hub.roll_service import RollService
from station_hub.station import Station, init_station
from station_hub.terminal_client import CheckinRefused, TerminalClient

PASSPHRASE = b"told to the roll at start, kept by the officials"


@pytest.mark.slow
def test_the_whole_data_directory_yields_no_token_for_an_absent_voter(tmp_path: Path):
    electorate = make_electorate(tmp_path / "jpki", 3)
    salt = secrets.token_bytes(32)
    (tmp_path / "voters.json").write_text(json.dumps({"format": VOTER_KEYS_FORMAT,
                                                      "voter_keys": roll_of(electorate, salt)}))  # fmt: skip
    station = init_station(tmp_path / "station", "st-x", write_election(tmp_path / "election"), ["t1"], ["op1"],
                           port=free_port(), roll_salt=salt, roll_passphrase=PASSPHRASE,
                           **jpki_files(electorate))  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    store.import_voters(read_voter_keys((tmp_path / "voters.json").read_bytes()))
    store.close()
    present, absent = cards_of(electorate)[0], cards_of(electorate)[1:]
    with Broker(station, tmp_path / "mosquitto.log"):
        services = [LedgerService(station, checkpoint_interval=0.2), RollService(station, passphrase=PASSPHRASE)]
        threads = [threading.Thread(target=service.run, daemon=True) for service in services]
        for thread in threads:
            thread.start()
        try:
            open_polls(station)
            with TerminalClient(station, "t1").connect() as t1:
                t1.check_in(present)  # the day goes on: one voter came
            stolen = _steal(station, tmp_path / "stolen")
            _attack(stolen, absent, tmp_path)
        finally:
            for service in services:
                service.stop()
            for thread in threads:
                thread.join(10)
    assert marked(station) == 1, "only the voter who came is marked"


def _steal(station: Station, target: Path) -> Station:
    shutil.copytree(station.directory, target)
    return Station.open(target)


def _attack(stolen: Station, absent: list[SoftCard], tmp_path: Path) -> None:
    """Everything an insider can do with the copy (and the live station broker)."""
    # 1. The token key is sealed: no passphrase in the directory, none of its files opens it.
    with pytest.raises(SiteError):
        stolen.token_private_key()
    small = [p for p in stolen.directory.rglob("*") if p.is_file() and p.stat().st_size < 4096]
    for guess in (p.read_bytes().strip() for p in small):
        with pytest.raises(SiteError):
            stolen.token_private_key(guess or b"x")
    # 2. The insider knows the salt and every voter key, and holds the station CA: it makes a
    #    terminal identity of its own choosing and connects as a terminal.
    salt = stolen.roll_salt()
    ca = StationCA.load(stolen.directory / "ca")
    assert len(read_voter_keys_from_db(stolen)) == 3
    key = ed25519.Ed25519PrivateKey.generate()
    write_certificate(tmp_path / "t1-forged.pem", ca.issue(key.public_key(), "t1", Role.TERMINAL))
    (tmp_path / "t1-forged.key").write_bytes(private_pem(key))
    with TerminalClient(stolen, "t1", cert_file=tmp_path / "t1-forged.pem",
                        key_file=tmp_path / "t1-forged.key").connect() as rogue:  # fmt: skip
        victim = absent[0]
        certificate = x509.load_der_x509_certificate(victim.certificate_der)
        assert derive_voter_key(salt, certificate.issuer.public_bytes(), certificate.serial_number) in {
            k.hex() for k in read_voter_keys_from_db(stolen)}  # fmt: skip
        value = tokens.blind(stolen.token_public_key(), secrets.token_bytes(32)).blinded
        # 2a. The old protocol (a bare voter key) is not a check-in any more.
        legacy = json.dumps({"version": 1, "type": "checkin", "voter_key": "00" * 32, "blinded": value.hex()},
                            separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
        assert parse_json(rogue.ask_roll(legacy))["reason"] == "malformed"
        # 2b. The victim's genuine certificate, signed by a key the insider made.
        for signer in (rsa.generate_private_key(public_exponent=65537, key_size=2048),):
            forged = SoftCard(victim.certificate_der, signer)
            with pytest.raises(CheckinRefused) as refused:
                rogue.check_in(forged)
            assert refused.value.reason == "bad_card_signature"
        # 2c. A look-alike JPKI CA (same name) issuing a certificate with the victim's serial.
        fake = _lookalike_card(stolen, certificate)
        with pytest.raises(CheckinRefused) as refused:
            rogue.check_in(fake)
        assert refused.value.reason == "unknown_issuer"
        # 2d. A request without the card's signature is refused, and its replay finds the challenge spent.
        challenge = rogue.challenge()
        request = CheckinRequest(challenge, value, victim.certificate_der, bytes(256))
        assert parse_json(rogue.ask_roll(request.encode()))["reason"] == "bad_card_signature"
        assert parse_json(rogue.ask_roll(request.encode()))["reason"] == "bad_challenge"


def read_voter_keys_from_db(station: Station) -> list[bytes]:
    with sqlite3.connect(station.roll_db) as db:
        return [row[0] for row in db.execute("SELECT voter_key FROM voters")]


def _lookalike_card(station: Station, victim: x509.Certificate) -> SoftCard:
    anchor = x509.load_pem_x509_certificate(next((station.jpki_dir / "anchors").iterdir()).read_bytes())
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    card_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(victim.subject)
        .issuer_name(anchor.subject)
        .public_key(card_key.public_key())
        .serial_number(victim.serial_number)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    return SoftCard(certificate.public_bytes(serialization.Encoding.DER), card_key)
