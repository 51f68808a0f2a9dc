"""The station CA: create, load, issue (key or CSR), verify, revoke."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.pki import (
    PkiError,
    Role,
    StationCA,
    load_crl,
    role_of,
    verify_certificate,
)


def csr_for(key, name: str) -> bytes:
    request = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    return request.sign(key, None).public_bytes(serialization.Encoding.PEM)


def test_a_created_ca_loads_back_and_keeps_its_key_private(tmp_path):
    created = StationCA.create(tmp_path / "ca", "S001")
    loaded = StationCA.load(tmp_path / "ca")
    assert loaded.certificate == created.certificate
    assert loaded.station_id == "S001"
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o077 == 0
    with pytest.raises(PkiError, match="already holds a CA"):
        StationCA.create(tmp_path / "ca", "S001")


def test_issued_certificates_carry_cn_role_and_usage(station_ca):
    terminal = station_ca.issue_for_csr(csr_for(ed25519.Ed25519PrivateKey.generate(), "T01"), Role.TERMINAL)
    verify_certificate(terminal, station_ca.certificate, crl=station_ca.crl(), role=Role.TERMINAL)
    assert role_of(terminal) is Role.TERMINAL
    usage = terminal.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    broker = station_ca.issue(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        "broker",
        Role.BROKER,
        hostnames=("localhost", "127.0.0.1"),
    )
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    with pytest.raises(PkiError, match="role broker, not terminal"):
        verify_certificate(broker, station_ca.certificate, role=Role.TERMINAL)


def test_revocation_shows_in_the_crl_file(station_ca):
    certificate = station_ca.issue(ed25519.Ed25519PrivateKey.generate().public_key(), "T02", "terminal")
    station_ca.revoke(certificate.serial_number)
    crl = load_crl(station_ca.directory / "crl.pem")
    with pytest.raises(PkiError, match="revoked"):
        verify_certificate(certificate, station_ca.certificate, crl=crl)
    assert [r.revoked_at is not None for r in station_ca.issued()] == [True]
    with pytest.raises(PkiError, match="not issued by this CA"):
        station_ca.revoke(12345)


def test_certificates_from_another_ca_or_out_of_date_are_refused(tmp_path, station_ca):
    other = StationCA.create(tmp_path / "other", "S002")
    foreign = other.issue(ed25519.Ed25519PrivateKey.generate().public_key(), "T01", Role.TERMINAL)
    with pytest.raises(PkiError, match="not issued by"):
        verify_certificate(foreign, station_ca.certificate)
    mine = station_ca.issue(ed25519.Ed25519PrivateKey.generate().public_key(), "T01", Role.TERMINAL)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1000)
    with pytest.raises(PkiError, match="expired"):
        verify_certificate(mine, station_ca.certificate, at=later)


def test_bad_inputs_get_clear_errors(tmp_path, station_ca):
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(PkiError, match="common name"):
        station_ca.issue(key, "T01/#", Role.TERMINAL)
    with pytest.raises(PkiError, match="not a PEM certificate signing request"):
        station_ca.issue_for_csr(b"garbage", Role.TERMINAL)
    with pytest.raises(PkiError, match="cannot read certificate"):
        StationCA.load(tmp_path / "nowhere")
    (station_ca.directory / "index.json").write_text("{broken")
    with pytest.raises(PkiError, match="damaged"):
        station_ca.issued()
