"""The self-test core: each check fails with a sentence a technician can act on, and the
self-test fails whenever `booth run` would not start."""

import datetime as dt
import json
from pathlib import Path

from provision_fixtures import TERMINALS

from appliance.provision import ProvisionRequest, ReaderSettings, TerminalFiles, provision
from appliance.selftest import (
    SelfTestContext,
    check_booth_configuration,
    check_certificates,
    check_clock,
    check_companion_board,
    check_election_package,
    run_selftest,
)
from station_hub.enrolment import enroll, export_package
from station_hub.station import Station


def provisioned(tmp_path: Path, hub: Station) -> TerminalFiles:
    package = tmp_path / "package.json"
    package.write_bytes(export_package(hub).encode())
    request = ProvisionRequest("T01", package, tmp_path / "t", no_board=True, reader=ReaderSettings("pcsc"))
    assert provision(request).waiting_for_certificate
    files = TerminalFiles(tmp_path / "t")
    certificate = tmp_path / "T01.pem"
    certificate.write_bytes(enroll(hub, files.certificate_request.read_bytes()).pem)
    assert not provision(ProvisionRequest("T01", package, files.root, certificate=certificate)).waiting_for_certificate
    return files


def context(files, port=None, now=None):
    return SelfTestContext(files, port, now or dt.datetime.now(dt.UTC))


def test_a_provisioned_terminal_passes_its_offline_checks(tmp_path, hub):
    files = provisioned(tmp_path, hub)
    checks = [check_clock, check_certificates, check_election_package, check_booth_configuration]
    report = run_selftest(context(files), checks)
    assert report.ok, report.text()
    assert check_companion_board(context(files)).ok  # none configured: a warning, not a failure
    assert "no tamper monitoring" in check_companion_board(context(files)).detail


def test_revoked_certificate_and_changed_election_are_caught(tmp_path, hub):
    from infra.pki import StationCA

    files = provisioned(tmp_path, hub)
    ca = StationCA.load(hub.directory / "ca")
    ca.revoke_name("T01")
    files.crl.write_bytes(hub.crl_file.read_bytes())
    assert "revoked" in check_certificates(context(files)).detail
    (files.election_package / "manifest.json").write_text('{"election": "forged"}')
    result = check_election_package(context(files))
    assert not result.ok and "differs" in result.detail


def test_the_self_test_fails_when_the_booth_could_not_run(tmp_path, hub):
    """Missing card trust anchors, roll key or reader settings: `booth run` would exit."""
    files = provisioned(tmp_path, hub)
    anchor = files.card_dir / "auth-ca.pem"
    saved = anchor.read_bytes()
    anchor.unlink()
    result = check_booth_configuration(context(files))
    assert not result.ok and "booth run` would exit" in result.detail and "auth-ca.pem" in result.detail
    anchor.write_bytes(saved)
    files.token_key.write_text("not a key")
    assert not check_booth_configuration(context(files)).ok
    files.token_key.unlink()
    assert "token.pem" in check_booth_configuration(context(files)).detail
    config = json.loads(files.config.read_text())
    config["reader"] = {"kind": "pn532-uart"}
    files.config.write_text(json.dumps(config))
    assert "reader.port" in check_booth_configuration(context(files)).detail


def test_a_clock_in_the_past_and_a_missing_board_fail(tmp_path, hub):
    files = provisioned(tmp_path, hub)
    stale = check_clock(context(files, now=dt.datetime(2001, 1, 1, tzinfo=dt.UTC)))
    assert not stale.ok and "set the time" in stale.detail
    absent = check_companion_board(context(files, port=str(tmp_path / "no-board")))
    assert not absent.ok and "not reachable" in absent.detail
    config = json.loads(files.config.read_text())
    assert config["terminal"] == "T01" and config["station"] == "S001" and "T01" in TERMINALS
