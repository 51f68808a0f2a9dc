"""`station-hub self-test` on an early-voting or common polling place (issue 17): its
``public/token.pem`` is the municipality's token key, not the station's own, and that is right —
the self-test says the station is a relay, checks its municipal link, and fails what would
really break check-ins (a token key that is not the municipality's, the municipality's private
key on the hub, a link certificate for another station)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from municipal_fixtures import make_municipality

from gateway.central import Central
from gateway.municipal_roll import grant_relay_identity
from infra.broker import free_port
from infra.selftest import Status
from station_hub.municipal_relay import MunicipalLink, install_municipal_link, relay_request
from station_hub.selftest import run_selftest
from station_hub.station import Station, init_station


@pytest.fixture
def early(tmp_path: Path, central: Central, election_files) -> tuple[Station, Path]:
    """A training station made an early polling place of kaga exactly as `station-hub
    municipal-link` does it (the centre's relay certificate, the municipality's token key)."""
    electorate = make_municipality(tmp_path / "municipality", count=2)
    station = init_station(tmp_path / "st-e", "st-e", election_files[0], ["e1"], ["op1"], port=free_port())
    certificate = grant_relay_identity(central.directory, "st-e", relay_request(station))
    kaga = electorate.municipality
    install_municipal_link(station, municipality="kaga", kind="early", host=central.host, port=central.port,
                           ca_pem=central.ca_file.read_bytes(), certificate_pem=certificate,
                           token_public_pem=kaga.token_public_file.read_bytes())  # fmt: skip
    return station, kaga.token_key_file


def results(station: Station) -> dict[str, tuple[Status, str]]:
    report = run_selftest(station.directory, passphrase=None)
    return {r.name: (r.status, r.detail) for r in report.results}


def test_an_early_place_passes_and_says_it_is_a_relay_of_its_municipality(early: tuple[Station, Path]):
    station, _ = early
    found = results(station)
    status, detail = found["roll token key"]
    assert status is Status.PASS, detail
    assert "an early polling place of kaga: public/token.pem is kaga's token key" in detail
    assert "roll/token.key is not used" in detail
    assert found["municipal link"][0] is Status.PASS, found["municipal link"]
    assert "early polling place of kaga, central broker" in found["municipal link"][1]
    assert found["roll relay database"] == (Status.PASS, "not created yet: the relay makes municipal/relay.db at its "
                                                         "first start")  # fmt: skip
    assert "roll database" not in found and found["JPKI trust"][0] is Status.PASS
    assert {s for name, (s, _d) in found.items() if name != "terminal keys"} == {Status.PASS}, found
    done = subprocess.run([sys.executable, "-m", "station_hub.cli", "self-test", str(station.directory)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  roll token key: an early polling place of kaga" in done.stdout


def test_the_stations_own_key_as_token_key_fails(early: tuple[Station, Path]):
    """public/token.pem put back to the station's own key: booths would blind for a key the
    municipal roll does not sign with."""
    station, _ = early
    own = station.token_private_key().public_key()
    pem = own.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    station.token_public_file.write_bytes(pem)
    status, detail = results(station)["roll token key"]
    assert status is Status.FAIL and "this station's own roll key, not kaga's" in detail


def test_another_token_key_than_granted_fails_and_an_old_link_warns(early: tuple[Station, Path], tmp_path: Path):
    station, _ = early
    other = make_municipality(tmp_path / "other", name="nomi", count=1).municipality
    shutil.copyfile(other.token_public_file, station.token_public_file)
    status, detail = results(station)["roll token key"]
    assert status is Status.FAIL and "not kaga's token key as granted" in detail
    MunicipalLink.open(station.directory).token_key_file.unlink()  # a link installed before token.pem was kept
    status, detail = results(station)["roll token key"]
    assert status is Status.WARN and "cannot be compared" in detail


def test_the_municipalitys_private_key_on_the_hub_fails(early: tuple[Station, Path]):
    station, municipal_private = early
    shutil.copyfile(municipal_private, station.token_key_file)
    status, detail = results(station)["roll token key"]
    assert status is Status.FAIL and "roll/token.key is kaga's private token key" in detail


def test_a_broken_municipal_link_fails(early: tuple[Station, Path], central: Central, election_files):
    station, _ = early
    link = MunicipalLink.open(station.directory)
    other = init_station(link.directory.parent.parent / "st-x", "st-x", election_files[0], ["x1"], ["op1"],
                         port=free_port())  # fmt: skip
    link.cert_file("").write_bytes(grant_relay_identity(central.directory, "st-x", relay_request(other)))
    status, detail = results(station)["municipal link"]
    assert status is Status.FAIL and "st-x.roll" in detail
    assert run_selftest(station.directory, now=dt.datetime.now(dt.UTC), passphrase=None).ok is False
