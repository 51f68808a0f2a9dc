"""A station CRL past its date locks every identity out of the broker; `station-hub renew-crl`
(daily on an installed hub, at every `station-hub run`) re-signs it in time, revocations kept,
and a running broker takes it without a restart."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from infra import pki
from infra.broker import Broker
from infra.mqtt import HubClient
from infra.pki import CRL_FILE, StationCA, load_crl
from station_hub.cli import main
from station_hub.station import Station


def age_crl(station: Station, monkeypatch: pytest.MonkeyPatch, left: dt.timedelta) -> None:
    """Re-sign the station CRL as if it had only ``left`` of its validity remaining."""
    with monkeypatch.context() as patch:
        patch.setattr(pki, "CRL_VALIDITY", left)
        StationCA.load(station.directory / "ca").write_crl()


def test_a_fresh_crl_is_left_alone_and_one_near_its_date_is_renewed(station: Station, monkeypatch) -> None:
    ca = StationCA.load(station.directory / "ca")
    ca.revoke_name("t2")
    revoked = {entry.serial_number for entry in load_crl(station.crl_file)}
    before = station.crl_file.read_bytes()
    result = CliRunner().invoke(main, ["renew-crl", str(station.directory), "--if-due"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert station.crl_file.read_bytes() == before
    age_crl(station, monkeypatch, dt.timedelta(days=2))
    result = CliRunner().invoke(main, ["renew-crl", str(station.directory), "--if-due"])
    assert result.exit_code == 0 and "re-signed" in result.output, result.output
    renewed = load_crl(station.crl_file)
    assert renewed.next_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=29)
    assert {entry.serial_number for entry in renewed} == revoked, "the revocations are kept"
    assert renewed.is_signature_valid(ca.certificate.public_key())


def test_a_running_broker_takes_the_renewed_crl_without_a_restart(
    station: Station, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    age_crl(station, monkeypatch, dt.timedelta(seconds=3))  # about to expire
    with Broker(station, tmp_path / "mosquitto.log") as broker:
        pid = broker.process.pid
        time.sleep(4)  # now past its next update: the broker refuses everyone
        refused = HubClient(station, "op1")
        with pytest.raises(Exception):  # noqa: B017 (TLS refusal surfaces as SiteError or SSLError)
            refused.connect(timeout=5)
        refused.close()
        result = CliRunner().invoke(main, ["renew-crl", str(station.directory), "--if-due"])
        assert result.exit_code == 0 and "broker reloaded" in result.output, result.output
        with HubClient(station, "op1").connect(timeout=10):
            pass
        assert broker.process.pid == pid and broker.process.poll() is None


def test_the_crl_file_is_public_and_the_ca_key_private(station: Station) -> None:
    StationCA.load(station.directory / "ca").write_crl()
    assert (station.directory / "ca" / CRL_FILE).stat().st_mode & 0o777 == 0o644
    key = serialization.load_pem_private_key((station.directory / "ca" / "ca.key").read_bytes(), None)
    assert key is not None and (station.directory / "ca" / "ca.key").stat().st_mode & 0o077 == 0
