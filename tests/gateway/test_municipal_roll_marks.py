"""An election-day station opened after early voting refuses early voters: it imports the
municipal roll's signed early marks into its own roll segment before it opens, and then works
offline (real PostgreSQL for the municipal roll; real Mosquitto, roll and ledger at the station)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway_fixtures import fresh_database
from hub_fixtures import Hub
from municipal_fixtures import CardHolder, make_municipality, prepare_store, register_keys

from demo.linking import link_station
from election import tokens
from gateway.central import Central
from gateway.errors import GatewayError
from gateway.municipal_roll import MunicipalRoll, MunicipalStore, export_early_marks, import_station_marks
from infra.broker import Broker, free_port
from infra.errors import SiteError
from infra.mqtt import HubClient
from protocol.messages import CheckinGranted
from protocol.municipal import MUNICIPAL_ROLL_NAME, RollMarks
from station_hub.municipal_marks import export_station_marks, import_early_marks, load_marks_key
from station_hub.operator import change_polls
from station_hub.roll import RollStore
from station_hub.station import Station, init_station
from station_hub.terminal_client import CheckinRefused, TerminalClient


def station_link_key(station: Station) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key((station.directory / "central" / "hub.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def roll_store(station: Station) -> RollStore:
    return RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)


def early_check_in(roll: MunicipalRoll, municipality, card) -> None:
    holder = CardHolder(municipality.token_public_key(), "st-a", "a1")
    challenge = roll.handle("st-a", "a1", holder.challenge_request())
    _message, blinded = holder.blind()
    granted = roll.check_in("st-a", "a1", holder.request(card, challenge.challenge, blinded.blinded))
    assert isinstance(granted, CheckinGranted), granted


def test_an_election_day_station_refuses_early_voters_and_its_marks_flow_back(
    tmp_path: Path, postgres_admin: str, election_files, central: Central
):
    root = tmp_path / "municipality"
    electorate = make_municipality(root)
    municipality = electorate.municipality
    url = fresh_database(postgres_admin)
    prepare_store(url, electorate, root, {"st-a": "early"})

    # Early voting: voter 0 checks in at the early station (card-proven, at the municipal roll).
    store = MunicipalStore(url)
    roll = MunicipalRoll(store, {municipality.municipality: municipality.core()})
    early_check_in(roll, municipality, electorate.voters[0])

    # The election-day station: its own roll segment (same salt as the municipal register), own key.
    station = init_station(tmp_path / "st-day", "st-day", election_files[0], ["d1"], ["op1"], port=free_port(),
                           roll_salt=municipality.roll_salt(),
                           jpki_anchors=sorted((municipality.jpki_dir / "anchors").iterdir()),
                           jpki_crls=sorted((municipality.jpki_dir / "crls").iterdir()))  # fmt: skip
    segment = roll_store(station)
    segment.import_voters([*register_keys(root), secrets.token_bytes(32)])  # the whole register, and one more
    segment.close()
    link_station(central, station.directory)
    base_hash = station.election().manifest.base_hash
    marks = export_early_marks(municipality, store, base_hash)
    marks_key = load_marks_key(municipality.marks_public_file.read_bytes())

    # Forged or misdirected marks change nothing.
    forged = RollMarks("kaga", MUNICIPAL_ROLL_NAME, base_hash, tuple(register_keys(root)[:8])).signed(
        Ed25519PrivateKey.generate()
    )
    with pytest.raises(SiteError, match="signature"):
        import_early_marks(station, forged, marks_key, "kaga")
    with pytest.raises(SiteError, match="municipality"):
        import_early_marks(station, marks, marks_key, "nomi")
    tampered = marks.replace(b'"voter_keys":["', b'"voter_keys":["' + register_keys(root)[1].hex().encode() + b'","')
    with pytest.raises(SiteError):
        import_early_marks(station, tampered, marks_key, "kaga")
    assert import_early_marks(station, marks, marks_key, "kaga") == 1
    # Voter 2 votes early after the station took its marks (stale marks): reconciliation must see it.
    early_check_in(roll, municipality, electorate.voters[2])

    broker = Broker(station, tmp_path / "st-day-mosquitto.log")
    hub = Hub(station).start()
    try:
        with HubClient(station, "op1").connect() as operator:
            change_polls(operator, "open", 10)
        with pytest.raises(SiteError, match="before the polls open"):
            import_early_marks(station, marks, marks_key, "kaga")
        with TerminalClient(station, "d1").connect() as d1:
            with pytest.raises(CheckinRefused) as refused:
                d1.check_in(electorate.voters[0])
            assert refused.value.reason == "already_voted"
            token = d1.check_in(electorate.voters[1])  # a voter who did not vote early
            assert tokens.verify(station.token_public_key(), token.message, token.signature)
            d1.check_in(electorate.voters[2])  # the stale marks let voter 2 in again …
        with pytest.raises(SiteError, match="closed"):
            export_station_marks(station, "kaga")
        with HubClient(station, "op1").connect() as operator:
            change_polls(operator, "close", 10)
    finally:
        hub.stop()
        broker.stop()
    segment = roll_store(station)
    try:
        assert (segment.checked_in(), segment.voted_elsewhere(), segment.eligible()) == (2, 1, 13)
    finally:
        segment.close()

    # After close, the station's marks flow back, signed with its central-link key.
    back = export_station_marks(station, "kaga")
    with pytest.raises(GatewayError, match="signature"):
        import_station_marks(
            central.directory,
            store,
            "kaga",
            "st-day",
            RollMarks("kaga", "st-day", base_hash, tuple(register_keys(root))).signed(Ed25519PrivateKey.generate()),
            base_hash,
        )
    with pytest.raises(GatewayError):
        import_station_marks(central.directory, store, "kaga", "st-a", back, base_hash)  # an early station has none
    result = import_station_marks(central.directory, store, "kaga", "st-day", back, base_hash)
    # … and the municipal roll finds it: voter 1 marked now, voter 2 voted twice.
    assert (result.marked, result.voted_twice, result.not_registered) == (1, 1, 0)
    assert store.checked_in("kaga") == 3
    again = import_station_marks(central.directory, store, "kaga", "st-day", back, base_hash)
    assert again == result  # the same marks again: a no-op
    other = RollMarks("kaga", "st-day", base_hash, tuple(register_keys(root)))
    with pytest.raises(GatewayError, match="already sent"):
        import_station_marks(
            central.directory, store, "kaga", "st-day", other.signed(station_link_key(station)), base_hash
        )
    assert store.checked_in("kaga") == 3
    store.close()
