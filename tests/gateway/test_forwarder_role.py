"""Installing the centre's link grant certifies the hub's forwarder in the role ``forwarder``
(never ``ledger``), and replaces a forwarder certificate an older hub issued as ``ledger``."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from hub_fixtures import copy_station

from demo.linking import link_station
from gateway.central import Central
from infra.files import private_pem, write_private
from infra.pki import Role, StationCA, load_certificate, role_of, write_certificate
from protocol.topics import FORWARDER_NAME
from station_hub.station import write_acl


def test_the_forwarder_is_certified_as_forwarder(central: Central, station_templates, tmp_path: Path) -> None:
    station = copy_station(station_templates["st-a"][0], tmp_path / "st-a")
    link_station(central, station.directory)
    certificate = load_certificate(station.cert_file(FORWARDER_NAME))
    assert role_of(certificate) is Role.FORWARDER
    roles = {r.role for r in StationCA.load(station.directory / "ca").issued() if r.common_name == FORWARDER_NAME}
    assert roles == {Role.FORWARDER}
    link_station(central, station.directory)  # installing the grant again keeps that certificate
    assert load_certificate(station.cert_file(FORWARDER_NAME)).serial_number == certificate.serial_number


def test_a_forwarder_certified_as_ledger_is_revoked_and_replaced(
    central: Central, station_templates, tmp_path: Path
) -> None:
    station = copy_station(station_templates["st-a"][0], tmp_path / "st-a")
    ca = StationCA.load(station.directory / "ca")
    key = ed25519.Ed25519PrivateKey.generate()
    old = ca.issue(key.public_key(), FORWARDER_NAME, Role.LEDGER)  # as hubs before roles did
    write_certificate(station.cert_file(FORWARDER_NAME), old)
    write_private(station.key_file(FORWARDER_NAME), private_pem(key))
    link_station(central, station.directory)
    new = load_certificate(station.cert_file(FORWARDER_NAME))
    assert role_of(new) is Role.FORWARDER and new.serial_number != old.serial_number
    ca = StationCA.load(station.directory / "ca")
    assert ca.crl().get_revoked_certificate_by_serial_number(old.serial_number) is not None
    assert FORWARDER_NAME not in ca.revoked_names()
    assert f"user {FORWARDER_NAME}" in write_acl(station)
