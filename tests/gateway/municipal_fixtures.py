"""Helpers for the municipal roll tests: a municipality (token key, salt, JPKI trust) whose
register is a JPKI test CA's cards, check-in messages signed as the card would, and
early/common stations that relay to the municipal roll over the real central broker."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway_fixtures import STATIONS
from hub_fixtures import SoftCard, cards_of, jpki_files, make_electorate, roll_of

from election import tokens
from gateway.central import Central
from gateway.municipal_roll import Municipality, MunicipalStore, create_municipality, grant_relay_identity
from infra.broker import Broker, free_port
from protocol.messages import CheckinChallengeRequest, CheckinRequest, checkin_binding
from station_hub.municipal_relay import RelayService, install_municipal_link, relay_request
from station_hub.station import Station, init_station

MUNICIPALITY = "kaga"
VOTERS = 12


@dataclass
class Electorate:
    municipality: Municipality
    voters: list[SoftCard]
    """Cards of the voters on the municipality's register."""
    stranger: SoftCard
    """A genuine card of the same JPKI CA, not on the register."""


def make_municipality(root: Path, name: str = MUNICIPALITY, count: int = VOTERS, key_bits: int = 2048) -> Electorate:
    ca = make_electorate(root / f"{name}-jpki", count)
    salt = secrets.token_bytes(32)
    keys = [bytes.fromhex(k) for k in roll_of(ca, salt)]
    voters = cards_of(ca)
    stranger = SoftCard.of(ca.issue_card(pin="1234", password="PASSWORD1"))
    files = jpki_files(ca)
    # The CRL is published again after the stranger's card: copy the CA's files afterwards.
    municipality = create_municipality(root / name, name, jpki_anchors=files["jpki_anchors"],
                                       jpki_crls=files["jpki_crls"], roll_salt=salt, key_bits=key_bits)  # fmt: skip
    (root / f"{name}-keys.hex").write_text("\n".join(k.hex() for k in keys))
    return Electorate(municipality, voters, stranger)


def register_keys(root: Path, name: str = MUNICIPALITY) -> list[bytes]:
    return [bytes.fromhex(line) for line in (root / f"{name}-keys.hex").read_text().split()]


def prepare_store(url: str, electorate: Electorate, root: Path, stations: dict[str, str]) -> None:
    """Register the municipality, its voters and its early/common stations; open its polls."""
    name = electorate.municipality.municipality
    store = MunicipalStore(url)
    try:
        core = electorate.municipality.core()
        store.add_municipality(name, core.modulus_length)
        store.import_voters(name, register_keys(root, name))
        for station_id, kind in stations.items():
            store.add_station(station_id, name, kind)
        store.set_polls(name, "open")
    finally:
        store.close()


class CardHolder:
    """A terminal's side of the check-in, without MQTT: blind, sign the binding, unblind."""

    def __init__(self, key, station: str, terminal: str) -> None:
        self.key = key
        self.station = station
        self.terminal = terminal

    def blind(self) -> tuple[bytes, tokens.BlindedRequest]:
        message = secrets.token_bytes(32)
        return message, tokens.blind(self.key, message)

    @staticmethod
    def challenge_request() -> bytes:
        return CheckinChallengeRequest().encode()

    def request(self, card: SoftCard, challenge: bytes, blinded: bytes) -> CheckinRequest:
        binding = checkin_binding(self.station, self.terminal, challenge, blinded)
        return CheckinRequest(challenge, blinded, card.certificate_der, card.sign(binding))


@dataclass
class EarlyStation:
    """A station hub of kind early/common: its broker and its roll relay (no ledger needed here)."""

    station: Station
    broker: Broker
    relay: RelayService
    thread: threading.Thread

    def stop(self) -> None:
        self.relay.stop()
        self.thread.join(10)
        self.broker.stop()


def make_early_station(root: Path, station_id: str, kind: str, package: Path, central: Central,
                       municipality: Municipality, *, timeout: float = 2.0) -> EarlyStation:  # fmt: skip
    station = init_station(root / station_id, station_id, package, STATIONS.get(station_id, ["t1"]),
                           [f"op-{station_id}"], port=free_port())  # fmt: skip
    certificate = grant_relay_identity(central.directory, station_id, relay_request(station))
    install_municipal_link(station, municipality=municipality.municipality, kind=kind, host=central.host,
                           port=central.port, ca_pem=central.ca_file.read_bytes(), certificate_pem=certificate,
                           token_public_pem=municipality.token_public_file.read_bytes())  # fmt: skip
    broker = Broker(station, root / f"{station_id}-mosquitto.log")
    relay = RelayService(station, timeout=timeout)
    relay.store.set_polls("open")  # the officials' command is tested through the CLI (test_municipal_cli.py)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    return EarlyStation(station, broker, relay, thread)
