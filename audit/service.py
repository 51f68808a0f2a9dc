"""The audit log as a running service uses it: opened at start, shared by threads, never fatal.

A booth records from its worker thread and from the MQTT thread (acknowledgements), so
appends are serialised here. A failed append (disk full, an event refused by the allow-list)
is logged as an error and the service goes on: the audit log records what happened, it must
not be the reason a voter cannot vote or a ballot is not acknowledged. Opening is different:
a log that does not verify (`AuditLogCorrupt`) or a key that cannot be read stops the start,
so the technician sees it before the polls open (docs/audit-log.md §5).
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from audit.errors import AuditError
from audit.keys import load_or_create_signing_key
from audit.store import AuditLog

log = logging.getLogger(__name__)


def software_version() -> str:
    try:
        return version("polling-station")
    except PackageNotFoundError:
        return "0+unknown"


class ServiceAudit:
    def __init__(self, audit_log: AuditLog, role: str) -> None:
        self._log = audit_log
        self._role = role
        self._lock = threading.Lock()

    @classmethod
    def start(cls, log_path: Path, key_path: Path, log_id: str, role: str) -> ServiceAudit:
        """Open (or create) the log and its key (mode 0600), and record ``software_started``."""
        key = load_or_create_signing_key(key_path)
        audit = cls(AuditLog.open(log_path, key, log_id), role)
        audit.record("software_started", role=role, version=software_version())
        return audit

    def record(self, kind: str, **data: Any) -> None:
        with self._lock:
            try:
                self._log.append(kind, **data)
            except AuditError as error:
                log.error("audit log %s: %s could not be recorded: %s", self._log.path, kind, error)

    def stop(self) -> None:
        """Record ``software_stopped`` (a clean stop) and close the log."""
        self.record("software_stopped", role=self._role, clean=True)
        with self._lock:
            self._log.close()
