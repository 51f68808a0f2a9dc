"""The station package (strict, total decoder) and enrolment: the hub certifies a key the terminal
made; the ledger's device directory trusts every in-date, unrevoked certificate without a restart."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from provision_fixtures import REPO

from election.encoding import canonical_bytes
from infra.errors import SiteError
from infra.pki import StationCA
from protocol.errors import Refusal
from protocol.station_package import StationPackage
from station_hub.enrolment import enroll, export_package
from station_hub.station import DeviceDirectory, Station


def request_for(key, name: str = "T01") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    signed = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else __import__(
        "cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256())  # fmt: skip
    return signed.public_bytes(serialization.Encoding.PEM)


def test_the_package_round_trips_and_holds_no_private_key(hub: Station):
    package = export_package(hub)
    encoded = package.encode()
    assert StationPackage.decode(encoded) == package
    assert package.terminals == ("T01", "T02") and package.broker == "127.0.0.1:8883"
    assert b"PRIVATE KEY" not in encoded and hub.roll_salt().hex().encode() not in encoded
    assert set(package.election) == {"manifest.json", "context.json"}
    assert package.election["manifest.json"] == (hub.directory / "election" / "manifest.json").read_bytes()


def _tampered(package: StationPackage, change) -> bytes:
    data = json.loads(package.encode())
    change(data)
    return canonical_bytes(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=True), "version"),
        (lambda d: d.update(extra=1), "fields"),
        (lambda d: d.update(terminals=["T02", "T01"]), "sorted"),
        (lambda d: d.update(terminals=[]), "terminal ids"),
        (lambda d: d["card"].update(trust_anchors={}), "at least one JPKI CA"),
        (lambda d: d["card"]["trust_anchors"].update({"../x.pem": d["station_ca"]}), "plain file name"),
        (lambda d: d["card"].update(mode="pin"), "mode"),
        (lambda d: d["broker"].update(port=0), "port"),
        (lambda d: d["broker"].update(host="evil:1"), "host"),
        (lambda d: d.update(roll_token_key=d["station_ca"]), "key"),
        (lambda d: d["election"].update({"context.json": "!!"}), "base64"),
        (lambda d: d["election"].update({"manifest.json": base64.b64encode(b"{}").decode()}), "manifest"),
    ],
)
def test_a_bad_package_is_refused_with_a_reason(hub: Station, change, message: str):
    with pytest.raises(Refusal, match=message):
        StationPackage.decode(_tampered(export_package(hub), change))


def test_non_canonical_foreign_crl_and_garbage_are_refused(hub: Station, tmp_path):
    package = export_package(hub)
    with pytest.raises(Refusal, match="canonical"):
        StationPackage.decode(json.dumps(json.loads(package.encode()), indent=1).encode())
    other = StationCA.create(tmp_path / "other", "S002")
    foreign = other.crl().public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(Refusal, match="not signed by the station CA"):
        StationPackage.decode(_tampered(package, lambda d: d.update(station_crl=foreign)))
    for garbage in (b"", b"\xff\xfe", b"[]", b'{"version":1}', "text"):
        with pytest.raises(Refusal):
            StationPackage.decode(garbage)  # type: ignore[arg-type]


def test_export_refuses_a_station_without_jpki_trust_anchors(hub: Station):
    for anchor in (hub.jpki_dir / "anchors").iterdir():
        anchor.unlink()
    with pytest.raises(SiteError, match="no JPKI CA"):
        export_package(hub)


def test_enrolment_checks_the_request(hub: Station):
    with pytest.raises(SiteError, match="not a terminal of station"):
        enroll(hub, request_for(ed25519.Ed25519PrivateKey.generate(), "T99"))
    with pytest.raises(SiteError, match="Ed25519"):
        enroll(hub, request_for(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SiteError, match="not a PEM certificate request"):
        enroll(hub, b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n")
    operator = hub.cert_file("op1").read_bytes()
    with pytest.raises(SiteError, match="operator"):  # one name, one role: op1 is an operator
        hub_with_op = Station(hub.directory, hub.station_id, hub.host, hub.port, (*hub.terminals, "op1"), ())
        enroll(hub_with_op, request_for(ed25519.Ed25519PrivateKey.generate(), "op1"))
    assert hub.cert_file("op1").read_bytes() == operator and hub.key_file("op1").exists(), "nothing revoked"
    assert not StationCA.load(hub.directory / "ca").revoked_names()


def test_the_device_directory_trusts_every_current_certificate_without_restart(hub: Station):
    directory = DeviceDirectory(hub)  # held by the running ledger and roll
    first, second = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    one = enroll(hub, request_for(first))
    assert not hub.key_file("T01").exists(), "the training key init may have made is gone"
    again = enroll(hub, request_for(first))
    assert again.reused and again.certificate == one.certificate, "enrolling twice gives the same certificate"
    key = directory.lookup("T01")
    assert not isinstance(key, str) and key.public_bytes_raw() == first.public_key().public_bytes_raw()
    message = b"ballot"
    key.verify(first.sign(message), message)

    two = enroll(hub, request_for(second))  # e.g. the terminal was re-imaged and enrolled again
    both = directory.lookup("T01")
    assert not isinstance(both, str)
    both.verify(first.sign(message), message)
    both.verify(second.sign(message), message)
    assert both.public_bytes_raw() == second.public_key().public_bytes_raw(), "the newest key is reported"

    StationCA.load(hub.directory / "ca").revoke(one.certificate.serial_number)
    only = directory.lookup("T01")
    assert not isinstance(only, str) and only.public_bytes_raw() == second.public_key().public_bytes_raw()
    with pytest.raises(InvalidSignature):
        only.verify(first.sign(message), message)
    StationCA.load(hub.directory / "ca").revoke(two.certificate.serial_number)
    assert directory.lookup("T01") == "revoked_device"
    assert directory.lookup("T02") != "revoked_device"  # untouched


def test_the_package_matches_its_json_schema(hub: Station):
    import sys

    sys.path.insert(0, str(REPO / "tests" / "schemas"))
    from schema_tools import assert_valid

    assert_valid("station-package.schema.json", json.loads(export_package(hub).encode()))
