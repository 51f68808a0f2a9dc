"""What a site self-test is made of (``station-hub self-test``, ``gateway self-test``): one result
per check, PASS, WARN or FAIL, each with what was found and, when it is not a pass, what to do.

The checks of certificates, keys, revocation lists, the broker's port and binary are shared by
the station hub and the central office (both are a :class:`infra.certdir.CertificateDirectory`
with a Mosquitto broker); each is a pure function over what was read, so a test can hand it any
state. The probes that read that state never write anything: a self-test run as root on an
installed hub must not leave a root-owned file in a service's directory (``open_read_only``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from infra.certdir import CertificateDirectory
from infra.pki import CertificateRevoked, PkiError, Role, common_name, load_certificate, load_crl, verify_certificate

CRL_WARN_BEFORE = dt.timedelta(days=3)
"""A revocation list this close to its next update is a warning: renew it before the polls open."""
CERT_WARN_BEFORE = dt.timedelta(days=30)
PORT_TIMEOUT = 3.0


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    """What was found."""
    action: str = ""
    """What to do about it (empty for a plain pass)."""

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL

    def line(self) -> str:
        return f"{self.status.value}  {self.name}: {self.detail}" + (f" — {self.action}" if self.action else "")

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "action": self.action}


def passed(name: str, detail: str, action: str = "") -> CheckResult:
    return CheckResult(name, Status.PASS, detail, action)


def warned(name: str, detail: str, action: str = "") -> CheckResult:
    return CheckResult(name, Status.WARN, detail, action)


def failed(name: str, detail: str, action: str = "") -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, action)


@dataclass(frozen=True)
class SelfTestReport:
    command: str  # "station-hub self-test"
    directory: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.FAIL)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.WARN)

    def result(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def verdict(self) -> str:
        warnings = f" ({len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''})" if self.warnings else ""
        if self.ok:
            return f"{self.command}: all {len(self.results)} checks passed{warnings}"
        return f"{self.command}: FAILED {len(self.failures)} of {len(self.results)} checks{warnings}"

    def text(self) -> str:
        return "\n".join([*(result.line() for result in self.results), self.verdict()])

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "directory": self.directory,
            "ok": self.ok,
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            "checks": [result.to_json() for result in self.results],
        }

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=1, ensure_ascii=False)


def _day(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


# --- certificates, keys, revocation lists (pure) ------------------------------------------


def check_ca(
    name: str, ca: x509.Certificate | str, now: dt.datetime, expected_cn: str, key_matches: bool | str | None = None
) -> CheckResult:
    """The site CA: self-signed, a CA, for this site, in date; ``key_matches``: whether ca.key
    belongs to it (a reason text when the key cannot be read; None: not checked)."""
    if isinstance(ca, str):
        return failed(name, ca, "restore ca/ca.pem from the site's backup (every certificate hangs on it)")
    try:
        cn = common_name(ca)
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        ca.verify_directly_issued_by(ca)
    except Exception as error:  # a check never raises: a broken or odd certificate is a failure
        return failed(name, f"ca/ca.pem is not a valid self-signed CA certificate: {error}", "restore it from backup")
    if not constraints.ca:
        return failed(name, f"{cn!r} is not a CA certificate", "restore ca/ca.pem from backup")
    if cn != expected_cn:
        return failed(name, f"the CA is {cn!r}, this site's is {expected_cn!r}", "this directory mixes two sites")
    if now < ca.not_valid_before_utc:
        return failed(
            name,
            f"not valid before {_day(ca.not_valid_before_utc)}; the clock reads {_day(now)}",
            "set the clock (chrony/RTC)",
        )
    if now > ca.not_valid_after_utc:
        return failed(name, f"expired on {_day(ca.not_valid_after_utc)}", "the site needs a new CA (re-init)")
    if isinstance(key_matches, str):
        return failed(name, f"CA key: {key_matches}", "run as root; restore ca/ca.key (mode 0400) from backup")
    if key_matches is False:
        return failed(name, "ca/ca.key does not belong to ca/ca.pem", "restore the matching pair from backup")
    left = (ca.not_valid_after_utc - now).days
    return passed(
        name,
        f"{cn}, valid until {ca.not_valid_after_utc:%Y-%m-%d} ({left} days)" + (", key matches" if key_matches else ""),
    )


def check_crl(
    name: str, crl: x509.CertificateRevocationList | str, ca: x509.Certificate | None, now: dt.datetime, renew: str
) -> CheckResult:
    """The site CRL: signed by the CA, ``last_update <= now < next_update`` (the broker refuses
    every client once it is stale). ``renew``: the command that re-signs it."""
    if isinstance(crl, str):
        return failed(name, crl, renew)
    if ca is None:
        return failed(name, "cannot be checked without the CA certificate", "fix the CA first")
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        return failed(name, "ca/crl.pem is not signed by this site's CA", renew)
    next_update = crl.next_update_utc
    if next_update is None:
        return failed(name, "has no next update", renew)
    if now < crl.last_update_utc:
        return failed(
            name,
            f"issued in the future ({_day(crl.last_update_utc)}); the clock reads {_day(now)}",
            "set the clock (chrony/RTC)",
        )
    if now >= next_update:
        return failed(
            name,
            f"stale: its next update was due {_day(next_update)}; the broker refuses every client with a stale CRL",
            renew,
        )
    revoked = len(list(crl))
    detail = f"signed by the CA, {revoked} revoked, fresh until {_day(next_update)}"
    if next_update - now < CRL_WARN_BEFORE:
        return warned(name, detail, f"renew it before then: {renew}")
    return passed(name, detail)


def usable_crl(crl: x509.CertificateRevocationList | str, ca: x509.Certificate | None) -> Any:
    """The CRL to check revocations with: None unless the CA signed it (its freshness is the CRL
    check's business, so a stale CRL still names what was revoked)."""
    if isinstance(crl, str) or ca is None or crl.issuer != ca.subject:
        return None
    return crl if crl.is_signature_valid(ca.public_key()) else None  # type: ignore[arg-type]


def public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_identity(
    name: str,
    cn: str,
    role: Role,
    certificate: x509.Certificate | str,
    key: Any,
    ca: x509.Certificate | None,
    crl: x509.CertificateRevocationList | None,
    now: dt.datetime,
    *,
    hostnames: Sequence[str] = (),
    reissue: str = "",
) -> CheckResult:
    """One site identity: a certificate from the CA for ``cn`` in ``role``, in date, not revoked,
    listing ``hostnames`` (a broker), and its private key (``key``: the loaded key, or the
    reason it could not be loaded)."""
    if isinstance(certificate, str):
        return failed(name, certificate, reissue)
    if ca is None:
        return failed(name, "cannot be checked without the CA certificate", "fix the CA first")
    try:
        actual = common_name(certificate)
        if actual != cn:
            return failed(name, f"certs/{cn}.pem is a certificate for {actual!r}", reissue)
        verify_certificate(certificate, ca, crl=crl, role=role, at=now)
    except CertificateRevoked as error:
        return failed(name, str(error), reissue)
    except PkiError as error:
        return failed(name, str(error), reissue)
    if hostnames:
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            listed = {str(v) for v in names.get_values_for_type(x509.IPAddress)} | set(
                names.get_values_for_type(x509.DNSName)
            )
        except x509.ExtensionNotFound:
            listed = set()
        missing = [host for host in hostnames if host not in listed]
        if missing:
            return failed(name, f"the certificate does not name {', '.join(missing)} (clients check it)", reissue)
    if isinstance(key, str):
        return failed(name, f"private key: {key}", reissue)
    if public_der(key.public_key()) != public_der(certificate.public_key()):
        return failed(name, f"keys/{cn}.key does not belong to certs/{cn}.pem", reissue)
    until = certificate.not_valid_after_utc
    revocation = "not revoked" if crl is not None else "revocation not checked (no valid CRL)"
    detail = f"role {role}, valid until {until:%Y-%m-%d}, {revocation}, key matches"
    if until - now < CERT_WARN_BEFORE:
        return warned(name, f"{detail}, but it expires in {(until - now).days} days", reissue)
    return passed(name, detail)


def read_certificate(path: Path) -> x509.Certificate | str:
    try:
        return load_certificate(path)
    except PkiError as error:
        return str(error)


def read_crl(path: Path) -> x509.CertificateRevocationList | str:
    try:
        return load_crl(path)
    except PkiError as error:
        return str(error)


def read_private_key(path: Path) -> Any:
    """The unencrypted private key in ``path``, or the reason it cannot be used (a text)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as error:
        return f"cannot read {path}: {error.strerror} (run the self-test as root)"
    try:
        return serialization.load_pem_private_key(data, None)
    except (TypeError, ValueError) as error:
        return f"{path} is not an unencrypted PEM private key ({error})"


def identity_result(
    site: CertificateDirectory,
    name: str,
    cn: str,
    role: Role,
    ca: x509.Certificate | None,
    crl: x509.CertificateRevocationList | None,
    now: dt.datetime,
    **kw: Any,
) -> CheckResult:
    """`check_identity` over ``certs/<cn>.pem`` and ``keys/<cn>.key`` of ``site``."""
    return check_identity(
        name, cn, role, read_certificate(site.cert_file(cn)), read_private_key(site.key_file(cn)), ca, crl, now, **kw
    )


def ca_key_matches(site: CertificateDirectory, ca: x509.Certificate) -> bool | str:
    key = read_private_key(site.ca_file.with_name("ca.key"))
    if isinstance(key, str):
        return key
    return public_der(key.public_key()) == public_der(ca.public_key())


# --- the broker: configuration, binary, port ----------------------------------------------

BROKER_FILE_SETTINGS = ("cafile", "certfile", "keyfile", "crlfile", "acl_file")


def check_broker_config(
    name: str,
    config: str | None,
    acl: str | None,
    host: str,
    port: int,
    exists: Iterable[tuple[str, bool]] = (),
    regenerate: str = "",
) -> CheckResult:
    """The generated mosquitto.conf and ACL: present, listening where the site says, and every
    file it names present (``exists``: (path, present) for each)."""
    if config is None:
        return failed(name, "broker/mosquitto.conf is missing", regenerate)
    if acl is None:
        return failed(name, "broker/acl is missing", regenerate)
    listeners = [line.split()[1:] for line in config.splitlines() if line.startswith("listener ")]
    if [str(port), host] not in listeners:
        found = ", ".join(" ".join(listener) for listener in listeners) or "none"
        return failed(name, f"listens on {found}, the site says {host}:{port}", regenerate)
    absent = [path for path, present in exists if not present]
    if absent:
        return failed(name, f"names files that are missing: {', '.join(absent)}", regenerate)
    if "require_certificate true" not in config.splitlines():
        return failed(name, "does not require client certificates", regenerate)
    return passed(name, f"listener {host}:{port}, client certificates required, ACL present")


def broker_config_files(config: str) -> list[str]:
    """The files a generated mosquitto.conf names (CA, certificate, key, CRL, ACL)."""
    files = []
    for line in config.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in BROKER_FILE_SETTINGS:
            files.append(parts[1].strip())
    return files


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class MosquittoBinary:
    path: str | None
    version: str | None = None


def find_mosquitto() -> MosquittoBinary:
    path = shutil.which("mosquitto")
    if path is None:
        return MosquittoBinary(None)
    try:
        done = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=5, check=False)
        first = (done.stdout or done.stderr).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        first = None
    return MosquittoBinary(path, first)


def check_mosquitto(name: str, binary: MosquittoBinary) -> CheckResult:
    if binary.path is None:
        return failed(name, "no `mosquitto` on PATH", "apt-get install mosquitto (Debian's 2.0)")
    return passed(name, f"{binary.path}" + (f" ({binary.version})" if binary.version else ""))


class PortState(StrEnum):
    FREE = "free"  # nothing listens: the broker is not running
    OURS = "ours"  # a TLS server whose certificate this site's CA issued
    FOREIGN_TLS = "foreign_tls"  # a TLS server with someone else's certificate
    NOT_TLS = "not_tls"  # something that does not speak TLS
    UNREACHABLE = "unreachable"  # the address does not answer at all (or is not this machine's)


@dataclass(frozen=True)
class PortProbe:
    host: str
    port: int
    state: PortState
    detail: str = ""


def probe_port(host: str, port: int, ca_file: Path, timeout: float = PORT_TIMEOUT) -> PortProbe:
    """Who answers on ``host:port``: nothing, our broker (TLS with a certificate of our CA), or
    something else. No client certificate is sent: the server's certificate is checked on
    arrival, before the broker asks for ours, so its refusal (an alert) still means "ours"."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return PortProbe(host, port, PortState.FREE)
    except OSError as error:
        return PortProbe(host, port, PortState.UNREACHABLE, str(error))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the chain is what tells our broker from another
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raw.close()
        return PortProbe(host, port, PortState.UNREACHABLE, f"cannot load the CA to check it with: {error}")
    try:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            with contextlib.suppress(ssl.SSLError, OSError, TimeoutError):
                tls.recv(1)  # TLS 1.3: the broker's verdict on our (missing) certificate comes now
            return PortProbe(host, port, PortState.OURS, tls.version() or "TLS")
    except ssl.SSLCertVerificationError as error:
        return PortProbe(host, port, PortState.FOREIGN_TLS, error.verify_message or str(error))
    except ssl.SSLError as error:
        if "ALERT" in (error.reason or "").upper():
            return PortProbe(host, port, PortState.OURS, "asks for a client certificate")
        return PortProbe(host, port, PortState.NOT_TLS, error.reason or str(error))
    except (OSError, TimeoutError) as error:
        return PortProbe(host, port, PortState.NOT_TLS, str(error) or type(error).__name__)
    finally:
        raw.close()


def check_port(name: str, probe: PortProbe) -> CheckResult:
    where = f"{probe.host}:{probe.port}"
    if probe.state is PortState.FREE:
        return passed(name, f"{where} is free (the broker is not running; it can start)")
    if probe.state is PortState.OURS:
        return passed(name, f"{where} answers TLS with a certificate of this site's CA (the broker runs)")
    if probe.state is PortState.FOREIGN_TLS:
        return failed(
            name,
            f"{where} answers TLS with a certificate this site's CA did not issue ({probe.detail})",
            "another broker holds the port: stop it, or give this site another port",
        )
    if probe.state is PortState.NOT_TLS:
        return failed(
            name,
            f"something that is not this site's broker listens on {where} ({probe.detail})",
            "find it (ss -ltnp) and stop it, or give this site another port",
        )
    return failed(
        name, f"{where} does not answer ({probe.detail})", "is the host address configured on this machine? (ip addr)"
    )


# --- stores ------------------------------------------------------------------------------


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open an SQLite store without writing anything next to it.

    A read-only connection to a WAL database still creates ``-wal`` and ``-shm`` files when they
    are absent; run as root that would leave files the service's own user cannot open. So a
    WAL database with no ``-wal`` file (no writer is attached) is opened ``immutable``; one with
    a writer attached (its ``-wal`` and ``-shm`` exist) is opened ``mode=ro``; a rollback-journal
    database (the roll) is always opened ``mode=ro``, which writes nothing.
    """
    with path.open("rb") as handle:
        header = handle.read(100)
    wal = len(header) == 100 and header.startswith(b"SQLite format 3\0") and header[18] == 2
    immutable = wal and not path.with_name(path.name + "-wal").exists()
    uri = path.resolve().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])
