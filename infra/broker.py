"""Starting and stopping a site's Mosquitto (station hub or centre) with its generated configuration."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from infra.errors import SiteError
from infra.files import private_pem
from infra.pki import Role, StationCA, certificate_pem

START_TIMEOUT = 10.0


class BrokerProcessSite(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def broker_config(self) -> Path: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SiteError(f"mosquitto exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise SiteError(f"mosquitto did not open {host}:{port} within {timeout} s")


def pid_file(site: BrokerProcessSite) -> Path:
    """Where the running broker's process id is kept (beside its configuration)."""
    return site.broker_config.parent / "mosquitto.pid"


RELOAD_SETTLE = 0.3
"""Seconds for Mosquitto to act on SIGHUP (it re-reads config, ACL and CRL in its main loop)."""


def renew_site_crl(
    site: BrokerProcessSite, ca_dir: Path, *, if_due: bool
) -> tuple[x509.CertificateRevocationList | None, bool]:
    """Re-sign a site's CRL (always, or only ``if_due``) and make its running broker reload it:
    (the new CRL or None when nothing was due, whether a broker was reloaded)."""
    ca = StationCA.load(ca_dir)
    crl = ca.renew_crl_if_due() if if_due else ca.write_crl()
    return crl, crl is not None and reload_broker(site)


def reload_broker(site: BrokerProcessSite) -> bool:
    """SIGHUP the site's broker: it re-reads its ACL file and its CRL (for new connections).

    Checked on Debian mosquitto 2.0.11: after SIGHUP a revoked certificate can no longer
    connect, but a connection made before it stays up; see :func:`drop_client`. Returns False
    when no broker of this site is running (nothing to reload)."""
    try:
        pid = int(pid_file(site).read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    if str(site.broker_config).encode() not in command:
        return False  # a stale pid file naming another process
    os.kill(pid, signal.SIGHUP)
    time.sleep(RELOAD_SETTLE)
    return True


class _Site(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ca_file(self) -> Path: ...


def drop_client(site: _Site, ca: StationCA, name: str, timeout: float = 5.0) -> bool:
    """Disconnect the client ``name`` now, by taking over its MQTT session.

    The broker's client id is the certificate CN (``use_username_as_clientid``), so a connection
    as ``name`` makes Mosquitto close the existing one (MQTT v5 reason 0x8E, session taken
    over). The CA issues a throw-away certificate for ``name`` (key in a private temporary
    directory, removed at once), connects with it, disconnects and revokes it again. Call it
    after the ACL no longer lists ``name``: the taking-over client may publish nothing.
    Returns whether the take-over connection was accepted."""
    key = ed25519.Ed25519PrivateKey.generate()
    certificate = ca.issue(key.public_key(), name, Role.TERMINAL, validity=dt.timedelta(minutes=5))
    connected = threading.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="drop-") as scratch:
            cert_path, key_path = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
            cert_path.write_bytes(certificate_pem(certificate))
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(private_pem(key))
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
            client.tls_set(ca_certs=str(site.ca_file), certfile=str(cert_path), keyfile=str(key_path))
            client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else connected.set()
            try:
                client.connect(site.host, site.port, keepalive=10, clean_start=True)
            except OSError:
                return False
            client.loop_start()
            try:
                connected.wait(timeout)
            finally:
                client.disconnect()
                client.loop_stop()
    finally:
        ca.revoke(certificate.serial_number)
    return connected.is_set()


class Broker:
    """A Mosquitto process owned by the hub (or by a test), stopped on exit; its pid is written
    to :func:`pid_file` so ``station-hub revoke`` can make it reload."""

    def __init__(self, station: BrokerProcessSite, log_file: Path | None = None) -> None:
        self.station = station
        self._log = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(station.broker_config)],
            stdout=self._log,
            stderr=self._log,
        )
        try:
            wait_for_port(station.host, station.port, START_TIMEOUT, self.process)
        except BaseException:
            self.stop()
            raise
        pid_file(station).write_text(f"{self.process.pid}\n")

    def stop(self) -> None:
        try:
            if pid_file(self.station).read_text().strip() == str(self.process.pid):
                pid_file(self.station).unlink()
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
