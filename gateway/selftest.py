"""``gateway self-test CENTRAL_DIR``: is the central office ready to receive the stations' chains?

One line per check, ``PASS``, ``WARN`` or ``FAIL``, with what was found and what to do; exit
status 1 when any check fails; ``--json`` for scripts. It reads the central directory and
writes nothing (the SQLite store is opened read-only, a PostgreSQL store is only connected to),
so it may run while the broker and the workers run.

The checks, in order: ``central.json`` opens; the election package is valid and holds every
trustee's public keys; the central CA is valid, in date and ``ca/ca.key`` belongs to it; the CRL
is signed by the CA and fresh; the broker's certificate (naming the central host) and each
worker's (``gateway-N``, every one the broker ACL lists) are from the CA, in date, not revoked,
for their role, with matching keys; the registered stations' link certificates are valid; the
store opens (SQLite: read-only, its tables present; PostgreSQL: a connection); the broker
configuration and ACL exist; ``mosquitto`` is on PATH; the central port is free or answers TLS
with a certificate of the central CA. The shared checks live in :mod:`infra.selftest`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.central import CENTRAL_CA_NAME, WORKER_PREFIX, Central, load_election_package
from gateway.errors import GatewayError
from infra.certdir import BROKER_NAME
from infra.pki import PkiError, Role, common_name, role_of, verify_certificate
from infra.selftest import (
    CheckResult,
    MosquittoBinary,
    PortProbe,
    SelfTestReport,
    broker_config_files,
    ca_key_matches,
    check_broker_config,
    check_ca,
    check_crl,
    check_mosquitto,
    check_port,
    failed,
    find_mosquitto,
    identity_result,
    open_read_only,
    passed,
    probe_port,
    read_certificate,
    read_crl,
    read_text,
    usable_crl,
    warned,
)

COMMAND = "gateway self-test"
STORE_TABLES = ("stations", "devices", "entries", "statements", "incidents")
PG_CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class StoreProbe:
    kind: str  # "sqlite" or "postgresql"
    target: str  # a path, or the URL without its password
    error: str | None = None
    missing_tables: tuple[str, ...] = ()
    stations: int | None = None


def _redact(url: str) -> str:
    """A PostgreSQL URL without its password (the report may be pasted anywhere)."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}{':***' if ':' in credentials else ''}@{host}"


def probe_store(central: Central) -> StoreProbe:
    target = central.database_target
    if target.startswith(("postgresql://", "postgres://")):
        return _probe_postgres(target)
    path = Path(target.removeprefix("sqlite:///") if target.startswith("sqlite:") else target)
    if not path.exists():
        return StoreProbe("sqlite", str(path), f"{path} does not exist")
    try:
        db = open_read_only(path)
    except (OSError, sqlite3.Error) as error:
        return StoreProbe("sqlite", str(path), str(error))
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = tuple(t for t in STORE_TABLES if t not in tables)
        stations = None if missing else db.execute("SELECT count(*) FROM stations").fetchone()[0]
        return StoreProbe("sqlite", str(path), None, missing, stations)
    except sqlite3.Error as error:
        return StoreProbe("sqlite", str(path), str(error))
    finally:
        db.close()


def _probe_postgres(url: str) -> StoreProbe:
    shown = _redact(url)
    try:
        import psycopg
    except ImportError:
        return StoreProbe("postgresql", shown, "psycopg is not installed (pip install psycopg)")
    try:
        with psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT, autocommit=True) as connection:
            found = connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
            tables = {str(row[0]) for row in found}
            missing = tuple(t for t in STORE_TABLES if t not in tables)
            stations = None if missing else connection.execute("SELECT count(*) FROM stations").fetchone()[0]  # type: ignore[index]
    except psycopg.Error as error:
        return StoreProbe(
            "postgresql", shown, str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        )
    return StoreProbe("postgresql", shown, None, missing, stations)


def judge_store(probe: StoreProbe, directory: Path) -> CheckResult:
    name = "store"
    if probe.error:
        action = (
            "check the URL in central.json, that PostgreSQL runs and accepts this user"
            if probe.kind == "postgresql"
            else f"restore gateway.db from backup (`gateway init {directory}` created it)"
        )
        return failed(name, f"{probe.kind} {probe.target}: {probe.error}", action)
    if probe.missing_tables:
        detail = f"{probe.kind} {probe.target} opens, but has no {', '.join(probe.missing_tables)} table"
        if probe.kind == "postgresql":
            return warned(name, detail, "the first worker to start creates them (`gateway run`)")
        return failed(name, detail, "this is not the central store: restore gateway.db from backup")
    return passed(name, f"{probe.kind} {probe.target} opens, {probe.stations} stations registered")


def judge_workers(workers: Sequence[str], in_acl: Sequence[str]) -> CheckResult | None:
    """None when there is at least one worker and the ACL lists only certified ones."""
    if not workers:
        return failed(
            "workers", "no worker identity (certs/gateway-N.pem)", "gateway broker --workers N certifies them"
        )
    uncertified = sorted(set(in_acl) - set(workers))
    if uncertified:
        return failed(
            "workers",
            f"the broker ACL lists {', '.join(uncertified)} without a certificate",
            "gateway broker --workers N regenerates both",
        )
    return None


def check_stations(central: Central, ca: Any, crl: Any, now: dt.datetime, skip: Sequence[str]) -> CheckResult:
    """The link certificates issued to the registered stations (role ledger, CN = station id)."""
    name = "station links"
    folder = central.directory / "certs"
    files = sorted(p for p in folder.glob("*.pem") if p.stem not in skip) if folder.is_dir() else []
    if not files:
        return passed(name, "no station registered yet (gateway register-station)")
    problems, good = [], 0
    for path in files:
        certificate = read_certificate(path)
        try:
            if isinstance(certificate, str):
                raise PkiError(certificate)
            if common_name(certificate) != path.stem or role_of(certificate) is not Role.LEDGER:
                raise PkiError(f"{path.name} is not the link certificate of station {path.stem}")
            verify_certificate(certificate, ca, crl=crl, role=Role.LEDGER, at=now)
            good += 1
        except PkiError as error:
            problems.append(str(error))
    if problems:
        return warned(
            name,
            f"{good} valid, {len(problems)} not: {'; '.join(problems)}",
            "those stations cannot forward: register them again (gateway register-station)",
        )
    return passed(name, f"{good} station link certificate(s), all valid")


def _crl_renew(directory: Path) -> str:
    ca = Path(directory).resolve() / "ca"
    return (
        f"re-sign it with the central CA: {sys.executable} -c 'from infra.pki import StationCA; "
        f'StationCA.load("{ca}").write_crl()\', then reload the central broker'
    )


def central_checks(
    central: Central,
    now: dt.datetime,
    mosquitto: Callable[[], MosquittoBinary],
    port_probe: Callable[[str, int, Path], PortProbe],
    store_probe: Callable[[Central], StoreProbe],
) -> list[CheckResult]:
    directory = central.directory
    results = []
    try:
        election = load_election_package(central.election_dir)
        context = election.context
        results.append(
            passed(
                "election package",
                f"{election.manifest.election_id}: {len(election.manifest.contests)} contests, "
                f"{len(election.trustees)} trustees (any {context.quorum} decrypt)",
            )
        )
    except GatewayError as error:
        results.append(
            failed("election package", str(error), "copy the election package (with trustees/) again from the ceremony")
        )

    ca = read_certificate(central.ca_file)
    ca_ok = None if isinstance(ca, str) else ca
    results.append(
        check_ca("central CA", ca, now, f"{CENTRAL_CA_NAME}-ca", ca_key_matches(central, ca_ok) if ca_ok else None)
    )
    crl = read_crl(central.crl_file)
    results.append(check_crl("central CRL", crl, ca_ok, now, _crl_renew(directory)))
    crl_ok = usable_crl(crl, ca_ok)

    results.append(
        identity_result(
            central, f"identity {BROKER_NAME}", BROKER_NAME, Role.BROKER, ca_ok, crl_ok, now,
            hostnames=(central.host,), reissue="restore certs/broker.pem and keys/broker.key from backup",
        )
    )  # fmt: skip
    certs = central.directory / "certs"
    workers = sorted(p.stem for p in certs.glob(f"{WORKER_PREFIX}*.pem")) if certs.is_dir() else []
    acl = read_text(central.broker_dir / "acl")
    in_acl = [line.split()[1] for line in (acl or "").splitlines() if line.startswith("user ")]
    problem = judge_workers(workers, in_acl)
    if problem:
        results.append(problem)
    for worker in workers:
        results.append(
            identity_result(
                central, f"identity {worker}", worker, Role.OPERATOR, ca_ok, crl_ok, now,
                reissue=f"delete certs/{worker}.pem and run `gateway broker --workers N` to certify it again",
            )
        )  # fmt: skip
    if ca_ok is not None:
        results.append(check_stations(central, ca_ok, crl_ok, now, [BROKER_NAME, *workers]))
    results.append(judge_store(store_probe(central), directory))

    config = read_text(central.broker_config)
    files = broker_config_files(config) if config else []
    results.append(
        check_broker_config(
            "broker configuration", config, acl, central.host, central.port, [(f, Path(f).exists()) for f in files],
            f"regenerate them: gateway broker {directory} --workers N",
        )
    )  # fmt: skip
    results.append(check_mosquitto("mosquitto", mosquitto()))
    results.append(check_port("broker port", port_probe(central.host, central.port, central.ca_file)))
    return results


def run_selftest(
    directory: Path,
    *,
    now: dt.datetime | None = None,
    mosquitto: Callable[[], MosquittoBinary] = find_mosquitto,
    port_probe: Callable[[str, int, Path], PortProbe] = probe_port,
    store_probe: Callable[[Central], StoreProbe] = probe_store,
) -> SelfTestReport:
    directory = Path(directory)
    try:
        central = Central.open(directory)
    except GatewayError as error:
        result = failed("central.json", str(error), "give the central directory (`gateway init` made it)")
        return SelfTestReport(COMMAND, str(directory), (result,))
    database = "SQLite gateway.db" if not central.database else _redact(central.database)
    opened = passed("central.json", f"central broker {central.host}:{central.port}, store {database}")
    checks = central_checks(central, now or dt.datetime.now(dt.UTC), mosquitto, port_probe, store_probe)
    return SelfTestReport(COMMAND, str(directory), (opened, *checks))
