"""`gateway self-test`: a fresh central office passes; each breakage fails its own check, with the
reason and what to do, and exit status 1; a PostgreSQL store is connected to, never written."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_fixtures import fresh_database, postgres_server
from hub_fixtures import SoftCard, copy_station

from gateway.central import Central, register_station
from gateway.selftest import StoreProbe, judge_store, run_selftest
from infra.broker import Broker
from infra.files import private_pem
from infra.pki import Role, load_certificate
from infra.selftest import Status
from station_hub.registration import install_link, registration
from station_hub.selftest import run_selftest as hub_selftest

NOW = dt.datetime.now(dt.UTC)


def self_test(directory: Path, *, path: str | None = None, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) if path is None else {**os.environ, "PATH": path}
    command = [sys.executable, "-m", "gateway.cli", "self-test", str(directory), *(["--json"] if as_json else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


def checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in json.loads(done.stdout)["checks"]}


def failures(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {name: check for name, check in checks(done).items() if check["status"] == "FAIL"}


def set_database(central: Central, url: str) -> None:
    config = json.loads((central.directory / "central.json").read_text())
    config["database"] = url
    (central.directory / "central.json").write_text(json.dumps(config))


def test_a_fresh_central_office_passes_every_check(central: Central) -> None:
    done = self_test(central.directory, as_json=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "gateway self-test: all 12 checks passed"
    assert all(line.startswith("PASS  ") for line in lines[:-1]), done.stdout
    for expected in ("PASS  election package: sample: 2 contests, 3 trustees (any 2 decrypt)",
                     "PASS  central CA: central-ca, valid until", "PASS  central CRL: signed by the CA",
                     "PASS  identity broker: role broker", "PASS  identity gateway-1: role operator",
                     "PASS  identity gateway-2: role operator", "PASS  station links: no station registered yet",
                     "opens, 0 stations registered", "PASS  mosquitto: ",
                     f"PASS  broker port: 127.0.0.1:{central.port} is free"):  # fmt: skip
        assert expected in done.stdout, expected


def test_json_for_scripts(central: Central) -> None:
    done = self_test(central.directory)
    document = json.loads(done.stdout)
    assert done.returncode == 0
    assert (document["ok"], document["failed"], document["command"]) == (True, 0, "gateway self-test")
    assert {"name", "status", "detail", "action"} == set(document["checks"][0])


def test_with_the_central_broker_running_the_port_answers_with_our_ca(central: Central) -> None:
    with Broker(central, central.directory / "broker" / "mosquitto.log"):  # type: ignore[arg-type]
        result = run_selftest(central.directory).result("broker port")
    assert result.status is Status.PASS and "answers TLS with a certificate of this site's CA" in result.detail


# --- breakages ----------------------------------------------------------------------------


def _ca(central: Central) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((central.directory / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, load_certificate(central.ca_file)


def forge(central: Central, cn: str, role: Role, public_key) -> None:
    key, ca = _ca(central)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "central"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # fmt: skip
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=100))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    central.cert_file(cn).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def stale_crl(c: Central) -> None:
    key, ca = _ca(c)
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
        .last_update(NOW - dt.timedelta(days=40)).next_update(NOW - dt.timedelta(days=10))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    c.crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def missing_trustee(c: Central) -> None:
    next((c.election_dir / "trustees").iterdir()).unlink()


def missing_worker_key(c: Central) -> None:
    c.key_file("gateway-1").unlink()


def broker_certificate_of_a_worker_role(c: Central) -> None:
    key = serialization.load_pem_private_key(c.key_file("broker").read_bytes(), None)
    forge(c, "broker", Role.OPERATOR, key.public_key())


def worker_key_of_another_certificate(c: Central) -> None:
    c.key_file("gateway-2").write_bytes(private_pem(ec.generate_private_key(ec.SECP256R1())))


def corrupt_store(c: Central) -> None:
    (c.directory / "gateway.db").write_bytes(b"not a database" * 200)


def missing_store(c: Central) -> None:
    (c.directory / "gateway.db").unlink()


def unreachable_postgres(c: Central) -> None:
    set_database(c, "postgresql://gw:s3cret@127.0.0.1:1/central")


def no_election(c: Central) -> None:
    (c.election_dir / "manifest.json").unlink()


BREAKAGES: list[tuple[Callable[[Central], None], str, str]] = [
    (stale_crl, "central CRL", "stale: its next update was due"),
    (missing_trustee, "election package", "cannot read trustee"),
    (no_election, "election package", "manifest.json"),
    (missing_worker_key, "identity gateway-1", "keys/gateway-1.key is missing"),
    (worker_key_of_another_certificate, "identity gateway-2", "keys/gateway-2.key does not belong"),
    (broker_certificate_of_a_worker_role, "identity broker", "is for role operator, not broker"),
    (corrupt_store, "store", "file is not a database"),
    (missing_store, "store", "gateway.db does not exist"),
    (unreachable_postgres, "store", "postgresql postgresql://gw:***@127.0.0.1:1/central"),
]


@pytest.mark.parametrize(("breakage", "check", "reason"), BREAKAGES, ids=[b[0].__name__ for b in BREAKAGES])
def test_each_breakage_fails_its_check_with_the_reason(
    central: Central, breakage: Callable[[Central], None], check: str, reason: str
) -> None:
    breakage(central)
    done = self_test(central.directory)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = failures(done)
    assert list(failed) == [check], failed
    assert reason in failed[check]["detail"], failed[check]
    assert failed[check]["action"], "a failure says what to do"
    assert "s3cret" not in done.stdout, "a database password is never shown"


def test_no_mosquitto_on_path_fails(central: Central, tmp_path: Path) -> None:
    done = self_test(central.directory, path=str(tmp_path))
    assert done.returncode == 1
    assert list(failures(done)) == ["mosquitto"]


def test_a_missing_central_json_fails_alone(tmp_path: Path) -> None:
    done = self_test(tmp_path)
    assert done.returncode == 1 and list(checks(done)) == ["central.json"]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of this module's own (the session's ``postgres_admin`` lives in a
    fixed /tmp folder, which a second pytest session on the machine collides with)."""
    with postgres_server(Path("/tmp") / f"gw-pg-selftest-{secrets.token_hex(4)}") as url:
        yield url


def test_a_postgresql_store_is_connected_to(central: Central, postgres: str) -> None:
    url = fresh_database(postgres)
    set_database(central, url)
    report = run_selftest(central.directory)
    store = report.result("store")
    assert store.status is Status.WARN and "has no stations" in store.detail  # nothing was created
    central.store(url).close()  # the schema, as the first worker makes it
    store = run_selftest(central.directory).result("store")
    assert store.status is Status.PASS and store.detail.startswith("postgresql postgresql://nobody@127.0.0.1:")


def test_store_judge_on_missing_tables() -> None:
    probe = StoreProbe("sqlite", "/x/gateway.db", None, ("stations",))
    assert judge_store(probe, Path("/x")).status is Status.FAIL


def test_a_registered_and_linked_station_is_seen_by_both_self_tests(
    central: Central, station_templates: dict[str, tuple[Path, list[SoftCard]]], tmp_path: Path
) -> None:
    station = copy_station(station_templates["st-a"][0], tmp_path / "st-a")
    _station_id, _added, _problems, grant = register_station(central, registration(station).encode())
    install_link(station, grant.encode())
    links = run_selftest(central.directory).result("station links")
    assert links.status is Status.PASS and "1 station link certificate(s), all valid" in links.detail
    hub = hub_selftest(station.directory)
    assert hub.result("identity forwarder").status is Status.PASS
    link = hub.result("central link")
    assert link.status is Status.PASS and link.detail.startswith(f"{central.host}:{central.port}, role ledger")
