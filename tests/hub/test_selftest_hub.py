"""`station-hub self-test`: a freshly made station passes; each breakage fails its own check, with
the reason and what to do, and exit status 1; the self-test writes nothing into the station."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hub_fixtures import copy_station, jpki_files, make_electorate, roll_of, write_election

from infra.broker import Broker
from infra.files import private_pem
from infra.pki import Role, StationCA, load_certificate, load_crl
from infra.selftest import PortProbe, PortState, Status, check_crl, check_port
from station_hub.ledger_store import LedgerStore
from station_hub.roll import VOTER_KEYS_FORMAT, RollStore, read_voter_keys
from station_hub.selftest import judge_terminal_keys, run_selftest
from station_hub.station import ROLL_PASSPHRASE_ENV, Station, init_station

PASSPHRASE = "correct horse battery staple"
NOW = dt.datetime.now(dt.UTC)


# --- stations ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station made as docs/provisioning.md says: no terminal keys, the roll's key sealed."""
    root = tmp_path_factory.mktemp("real-station")
    election = write_election(root / "election-package")
    electorate = make_electorate(root / "jpki", 3)
    salt = secrets.token_bytes(32)
    station = init_station(root / "station", "st-9", election, ["T01", "T02"], ["op1"], port=1, roll_salt=salt,
                           training_terminal_keys=False, roll_passphrase=PASSPHRASE.encode(),
                           **jpki_files(electorate))  # fmt: skip
    store = RollStore(station.roll_db, (station.token_public_key().key_size + 7) // 8)
    keys = json.dumps({"format": VOTER_KEYS_FORMAT, "voter_keys": roll_of(electorate, salt)}).encode()
    store.import_voters(read_voter_keys(keys))
    store.close()
    return root / "station"


@pytest.fixture
def real(real_template: Path, tmp_path: Path) -> Station:
    return copy_station(real_template, tmp_path / "real")


def self_test(directory: Path, *, passphrase: str | None = PASSPHRASE, path: str | None = None,
              as_json: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != ROLL_PASSPHRASE_ENV}
    if passphrase is not None:
        env[ROLL_PASSPHRASE_ENV] = passphrase
    if path is not None:
        env["PATH"] = path
    command = [sys.executable, "-m", "station_hub.cli", "self-test", str(directory), *(["--json"] if as_json else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


def checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    document = json.loads(done.stdout)
    return {check["name"]: check for check in document["checks"]}


def failures(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {name: check for name, check in checks(done).items() if check["status"] == "FAIL"}


# --- what a fresh station shows ---------------------------------------------------------


def test_a_real_station_passes_every_check(real: Station) -> None:
    done = self_test(real.directory, as_json=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "station-hub self-test: all 17 checks passed"
    assert all(line.startswith("PASS  ") for line in lines[:-1]), done.stdout
    for expected in ("PASS  station CA: st-9-ca, valid until", "PASS  station CRL: signed by the CA, 0 revoked",
                     "PASS  identity broker: role broker", "PASS  identity op1: role operator",
                     "PASS  terminal keys: no terminal private key on the hub",
                     "PASS  roll token key: RSA-3072, sealed, opens with the passphrase and matches public/token.pem",
                     "PASS  roll salt: 32 bytes, mode 0600", "PASS  JPKI trust: 1 issuing CA(s), 1 CRL(s)",
                     "PASS  roll database: schema 1, 3 voters, 0 checked in, polls pending",
                     "PASS  ledger database: not created yet", "PASS  mosquitto: ",
                     f"PASS  broker port: 127.0.0.1:{real.port} is free"):  # fmt: skip
        assert expected in done.stdout, expected


def test_without_the_passphrase_a_sealed_roll_key_is_a_warning_not_a_failure(real: Station) -> None:
    done = self_test(real.directory, passphrase=None)
    assert done.returncode == 0, done.stdout
    token = checks(done)["roll token key"]
    assert token["status"] == "WARN"
    assert "sealed, passphrase not given" in token["detail"] and ROLL_PASSPHRASE_ENV in token["action"]
    document = json.loads(done.stdout)
    assert (document["ok"], document["failed"], document["warnings"]) == (True, 0, 1)


def test_a_wrong_passphrase_fails(real: Station) -> None:
    done = self_test(real.directory, passphrase="not it")
    assert done.returncode == 1
    assert "does not open with the given passphrase" in failures(done)["roll token key"]["detail"]


def test_a_fresh_training_station_passes_and_says_it_is_one(station: Station) -> None:
    """`init_station` by default (the demos' and tests' station) makes the terminals' keys on the
    hub and leaves the roll key unsealed: allowed, and said, on a training station."""
    done = self_test(station.directory, passphrase=None)
    assert done.returncode == 0, done.stdout
    found = checks(done)
    assert found["terminal keys"]["status"] == "WARN"
    assert "training station: hub-made keys for t1, t2" in found["terminal keys"]["detail"]
    assert found["roll token key"]["status"] == "WARN" and "unsealed" in found["roll token key"]["detail"]
    assert {c["status"] for n, c in found.items() if n not in ("terminal keys", "roll token key")} == {"PASS"}


def test_with_the_broker_and_services_running_the_port_answers_with_our_ca(station: Station, hub) -> None:
    report = run_selftest(station.directory)
    assert report.ok, report.text()
    assert "answers TLS with a certificate of this site's CA" in report.result("broker port").detail
    ledger = report.result("ledger database")
    assert ledger.status is Status.PASS and "chain of 0 entries verifies" in ledger.detail


def test_the_self_test_writes_nothing_into_the_station(real: Station) -> None:
    LedgerStore(real.ledger_db).close()  # a ledger that ran once and stopped
    before = _snapshot(real.directory)
    done = self_test(real.directory)
    assert done.returncode == 0, done.stdout
    assert _snapshot(real.directory) == before  # no -wal/-shm, no journal, nothing rewritten


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


# --- each breakage fails its own check ----------------------------------------------------


def _ca(station: Station) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((station.directory / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, load_certificate(station.ca_file)


def forge(station: Station, cn: str, role: Role, public_key, *, days: tuple[int, int] = (-1, 100)) -> None:
    """A certificate signed by the station CA, written over certs/<cn>.pem."""
    key, ca = _ca(station)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, station.station_id),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # fmt: skip
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    station.cert_file(cn).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_crl(station: Station, signer: ec.EllipticCurvePrivateKey | None, last: int, next_: int) -> None:
    key, ca = _ca(station)
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
        .last_update(NOW + dt.timedelta(days=last)).next_update(NOW + dt.timedelta(days=next_))
        .sign(signer or key, hashes.SHA256())
    )  # fmt: skip
    station.crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def ledger_public(station: Station):
    return serialization.load_pem_private_key(station.key_file("ledger").read_bytes(), None).public_key()


def stale_crl(s: Station) -> None:
    write_crl(s, None, -40, -10)


def crl_of_another_ca(s: Station) -> None:
    write_crl(s, ec.generate_private_key(ec.SECP256R1()), -1, 20)


def expired_certificate(s: Station) -> None:
    forge(s, "ledger", Role.LEDGER, ledger_public(s), days=(-30, -1))


def wrong_role_certificate(s: Station) -> None:
    forge(s, "ledger", Role.ROLL, ledger_public(s))


def missing_key(s: Station) -> None:
    s.key_file("ledger").unlink()


def key_of_another_certificate(s: Station) -> None:
    s.key_file("roll").write_bytes(private_pem(ec.generate_private_key(ec.SECP256R1())))


def revoked_certificate(s: Station) -> None:
    StationCA.load(s.directory / "ca").revoke_name("op1")


def broker_certificate_without_the_host(s: Station) -> None:
    key = serialization.load_pem_private_key(s.key_file("broker").read_bytes(), None)
    forge(s, "broker", Role.BROKER, key.public_key())


def terminal_key_left_on_the_hub(s: Station) -> None:
    s.key_file("T01").write_bytes(private_pem(ed25519.Ed25519PrivateKey.generate()))


def corrupt_ledger_db(s: Station) -> None:
    s.ledger_db.write_bytes(b"this is no SQLite database" * 100)


def broken_chain(s: Station) -> None:
    LedgerStore(s.ledger_db).close()
    with sqlite3.connect(s.ledger_db) as db:
        db.execute("INSERT INTO entries VALUES (0, 1, ?, ?, ?, 'cast', ?, 'T01', NULL, x'00')",
                   (bytes(32), bytes(32), bytes(16), bytes(32)))  # fmt: skip
    db.close()


def missing_election_file(s: Station) -> None:
    (s.directory / "election" / "context.json").unlink()


def roll_key_mismatch(s: Station) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    s.token_public_file.write_bytes(
        other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def salt_readable_by_others(s: Station) -> None:
    s.roll_salt_file.chmod(0o644)


def no_jpki_crl(s: Station) -> None:
    for crl in (s.jpki_dir / "crls").iterdir():
        crl.unlink()


def no_voters(s: Station) -> None:
    s.roll_db.unlink()


def no_acl(s: Station) -> None:
    s.acl_file.unlink()


BREAKAGES: list[tuple[Callable[[Station], None], str, str]] = [
    (stale_crl, "station CRL", "stale: its next update was due"),
    (crl_of_another_ca, "station CRL", "not signed by this site's CA"),
    (expired_certificate, "identity ledger", "certificate 'ledger' expired on"),
    (wrong_role_certificate, "identity ledger", "certificate 'ledger' is for role roll, not ledger"),
    (missing_key, "identity ledger", "keys/ledger.key is missing"),
    (key_of_another_certificate, "identity roll", "keys/roll.key does not belong to certs/roll.pem"),
    (revoked_certificate, "identity op1", "certificate 'op1' has been revoked"),
    (broker_certificate_without_the_host, "identity broker", "does not name 127.0.0.1"),
    (terminal_key_left_on_the_hub, "terminal keys", "a terminal's private key is on the hub (keys/T01.key)"),
    (corrupt_ledger_db, "ledger database", "file is not a database"),
    (broken_chain, "ledger database", "the chain is broken at position 0"),
    (missing_election_file, "election package", "context.json"),
    (roll_key_mismatch, "roll token key", "roll/token.key does not match public/token.pem"),
    (salt_readable_by_others, "roll salt", "readable by others (mode 0644)"),
    (no_jpki_crl, "JPKI trust", "no CRL signed by auth-ca.pem"),
    (no_voters, "roll database", "no voter is on the roll"),
    (no_acl, "broker configuration", "broker/acl is missing"),
]


@pytest.mark.parametrize(("breakage", "check", "reason"), BREAKAGES, ids=[b[0].__name__ for b in BREAKAGES])
def test_each_breakage_fails_its_check_with_the_reason(
    real: Station, breakage: Callable[[Station], None], check: str, reason: str
) -> None:
    breakage(real)
    done = self_test(real.directory)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = failures(done)
    assert list(failed) == [check], failed  # that check, and no other
    assert reason in failed[check]["detail"], failed[check]
    assert failed[check]["action"], "a failure says what to do"


def test_a_failure_is_one_line_with_reason_and_action_and_the_verdict_counts(real: Station) -> None:
    stale_crl(real)
    done = self_test(real.directory, as_json=False)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if line.startswith("FAIL"))
    assert line.startswith("FAIL  station CRL: stale: its next update was due ")
    assert " — re-sign it with the station CA" in line
    assert done.stdout.splitlines()[-1] == "station-hub self-test: FAILED 1 of 17 checks"


def test_a_missing_station_json_fails_first_and_alone(tmp_path: Path) -> None:
    done = self_test(tmp_path)
    assert done.returncode == 1
    assert list(checks(done)) == ["station.json"] and "station.json" in failures(done)


def test_no_mosquitto_on_path_fails(real: Station, tmp_path: Path) -> None:
    done = self_test(real.directory, path=str(tmp_path))
    assert done.returncode == 1
    assert failures(done)["mosquitto"]["detail"] == "no `mosquitto` on PATH"


def test_something_else_on_the_port_fails(real: Station) -> None:
    with socket.socket() as listener:
        listener.bind((real.host, real.port))
        listener.listen()
        accepting = threading.Thread(target=_answer_garbage, args=(listener,), daemon=True)
        accepting.start()
        report = run_selftest(real.directory, passphrase=PASSPHRASE.encode())
    result = report.result("broker port")
    assert result.status is Status.FAIL and "that is not this site's broker listens on" in result.detail


def _answer_garbage(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.recv(1024)
        connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")


@pytest.fixture
def foreign_tls_server(real: Station, tmp_path: Path) -> Iterator[None]:
    """Another station's broker on our port: TLS, with a certificate our CA did not issue."""
    other = StationCA.create(tmp_path / "other-ca", "st-other")
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.pem").write_bytes(
        other.issue(key.public_key(), "broker", Role.BROKER, hostnames=("127.0.0.1",)).public_bytes(
            serialization.Encoding.PEM
        )
    )
    (tmp_path / "other.key").write_bytes(private_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "other.pem", tmp_path / "other.key")
    listener = socket.create_server((real.host, real.port))

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with connection, context.wrap_socket(connection, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.close()
        thread.join(5)


def test_another_tls_broker_on_the_port_fails(real: Station, foreign_tls_server: None) -> None:
    result = run_selftest(real.directory, passphrase=PASSPHRASE.encode()).result("broker port")
    assert result.status is Status.FAIL
    assert "answers TLS with a certificate this site's CA did not issue" in result.detail


def test_a_station_broker_on_its_port_passes(real: Station, tmp_path: Path) -> None:
    with Broker(real, tmp_path / "mosquitto.log"):
        result = run_selftest(real.directory, passphrase=PASSPHRASE.encode()).result("broker port")
    assert result.status is Status.PASS, result


# --- the pure judges --------------------------------------------------------------------


def test_port_states_each_have_their_verdict() -> None:
    verdicts = {state: check_port("broker port", PortProbe("10.0.0.1", 8883, state, "x")).status
                for state in PortState}  # fmt: skip
    assert verdicts == {PortState.FREE: Status.PASS, PortState.OURS: Status.PASS, PortState.FOREIGN_TLS: Status.FAIL,
                        PortState.NOT_TLS: Status.FAIL, PortState.UNREACHABLE: Status.FAIL}  # fmt: skip


def test_terminal_keys_judge() -> None:
    assert judge_terminal_keys(["T01"], ["ledger", "roll"], ["ledger", "roll"], training=False).status is Status.PASS
    assert judge_terminal_keys(["T01"], ["T01"], [], training=False).status is Status.FAIL
    assert judge_terminal_keys(["T01"], ["T01"], [], training=True).status is Status.WARN
    stray = judge_terminal_keys(["T01"], ["old-ca"], [], training=False)
    assert stray.status is Status.WARN and "old-ca" in stray.detail


def test_a_crl_close_to_its_next_update_is_a_warning(real: Station) -> None:
    crl, ca = load_crl(real.crl_file), load_certificate(real.ca_file)
    due = crl.next_update_utc
    assert check_crl("CRL", crl, ca, due - dt.timedelta(days=10), "renew").status is Status.PASS
    assert check_crl("CRL", crl, ca, due - dt.timedelta(days=1), "renew").status is Status.WARN
    late = check_crl("CRL", crl, ca, due, "renew")
    assert late.status is Status.FAIL and late.action == "renew"
