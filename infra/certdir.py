"""Where a site that runs a broker keeps its CA, certificates and keys (a station hub or the
central office), and the one hardened Mosquitto configuration both of them run."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from election.encoding import parse_json
from election.errors import FormatError
from infra.errors import SiteError
from infra.pki import CA_CERT_FILE, CRL_FILE

BROKER_NAME = "broker"
"""The broker's certificate CN at every site."""

MAX_CONFIG_BYTES = 10_000_000


def read_json(path: Path, what: str) -> Any:
    """A site's JSON file, strictly parsed, or a :class:`SiteError` that names it."""
    try:
        return parse_json(path.read_bytes(), max_size=MAX_CONFIG_BYTES)
    except OSError as error:
        raise SiteError(f"cannot read {what} {path}: {error.strerror}") from error
    except FormatError as error:
        raise SiteError(f"{what} {path}: {error}") from error


class CertificateDirectory:
    """``ca/`` (the site CA: ca.pem, ca.key, crl.pem), ``certs/<cn>.pem``, ``keys/<cn>.key``."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca" / CA_CERT_FILE

    @property
    def crl_file(self) -> Path:
        return self.directory / "ca" / CRL_FILE

    def cert_file(self, name: str) -> Path:
        return self.directory / "certs" / f"{name}.pem"

    def key_file(self, name: str) -> Path:
        return self.directory / "keys" / f"{name}.key"

    @property
    def broker_dir(self) -> Path:
        return self.directory / "broker"


def mosquitto_config(
    site: CertificateDirectory, host: str, port: int, *, message_size_limit: int, run_as: str | None = None
) -> str:
    """Mosquitto 2.0: TLS only, client certificates required, CN as user name and client id;
    a PUBLISH larger than ``message_size_limit`` (the site's largest message) is dropped by the
    broker before any service sees it.

    Persistence is off: the broker keeps no disk log of when anything passed through it
    (the ledger's and terminals' own stores make delivery durable).
    """
    user = run_as or pwd.getpwuid(os.geteuid()).pw_name
    return "\n".join(
        [
            "# Generated: do not edit.",
            "per_listener_settings true",
            f"user {user}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
            f"message_size_limit {message_size_limit}",
            f"listener {port} {host}",
            f"cafile {site.ca_file}",
            f"certfile {site.cert_file(BROKER_NAME)}",
            f"keyfile {site.key_file(BROKER_NAME)}",
            f"crlfile {site.crl_file}",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "tls_version tlsv1.2",
            "allow_anonymous false",
            f"acl_file {site.broker_dir / 'acl'}",
            "",
        ]
    )
