"""The self-test core: each check fails with a sentence a technician can act on."""

import datetime as dt
import json

from appliance.provision import ProvisionRequest, TerminalFiles, provision
from appliance.selftest import (
    SelfTestContext,
    check_certificates,
    check_clock,
    check_companion_board,
    check_election_package,
    run_selftest,
)


def provisioned(tmp_path, station_ca, election_package) -> TerminalFiles:
    request = ProvisionRequest("T01", station_ca.directory, election_package, tmp_path / "t", None, "hub:8883")
    provision(request)
    return TerminalFiles(tmp_path / "t")


def context(files, port=None, now=None):
    return SelfTestContext(files, port, now or dt.datetime.now(dt.UTC))


def test_a_provisioned_terminal_passes_its_offline_checks(tmp_path, station_ca, election_package):
    files = provisioned(tmp_path, station_ca, election_package)
    report = run_selftest(context(files), [check_clock, check_certificates, check_election_package])
    assert report.ok, report.text()


def test_revoked_certificate_and_changed_election_are_caught(tmp_path, station_ca, election_package):
    files = provisioned(tmp_path, station_ca, election_package)
    serial = station_ca.issued()[0].serial
    station_ca.revoke(serial)
    (files.crl).write_bytes((station_ca.directory / "crl.pem").read_bytes())
    assert "revoked" in check_certificates(context(files)).detail
    (files.election_package / "manifest.json").write_text('{"election": "forged"}')
    result = check_election_package(context(files))
    assert not result.ok and "differs" in result.detail


def test_a_clock_in_the_past_and_a_missing_board_fail(tmp_path, station_ca, election_package):
    files = provisioned(tmp_path, station_ca, election_package)
    stale = check_clock(context(files, now=dt.datetime(2001, 1, 1, tzinfo=dt.UTC)))
    assert not stale.ok and "set the time" in stale.detail
    absent = check_companion_board(context(files, port=str(tmp_path / "no-board")))
    assert not absent.ok and "not reachable" in absent.detail
    config = json.loads(files.config.read_text())
    assert config["terminal"] == "T01" and config["station"] == "S001"
