"""The audit log file: one writer, append-only, every entry fsynced before `append` returns.

Power-cut rule (docs/audit-log.md, "Torn last line"): an append is one ``write`` of a whole
line followed by ``fsync``, and `append` returns only after both. A crash can therefore leave
at most one incomplete line, at the very end, and that line was never reported as logged. On
open such a torn tail is cut off, a warning is logged and a ``log_recovered`` entry records
its length and hash, so the cut is itself in the signed chain. Refusing to open instead would
let anyone who pulls the plug disable the booth. A *complete* line that does not verify is
something else — corruption or tampering — and is never repaired: `AuditLogCorrupt`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import AuditChain, AuditEntry, verify_lines
from audit.errors import AuditError, AuditLogBusy, AuditLogCorrupt
from election.encoding import sha256

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def split_log(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of a log file's bytes, and whatever follows the last newline."""
    complete, _, tail = data.rpartition(b"\n")
    lines = complete.split(b"\n") if complete or data.startswith(b"\n") else []
    return lines, tail


def read_log(path: Path) -> tuple[list[bytes], bytes]:
    """Read a log without taking the writer's lock (safe while the service appends)."""
    try:
        return split_log(Path(path).read_bytes())
    except OSError as error:
        raise AuditError(f"cannot read audit log {path}: {error.strerror}") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """An open audit log. Use `AuditLog.open` and close it (or use it as a context manager)."""

    def __init__(self, path: Path, fd: int, chain: AuditChain, clock: Clock) -> None:
        self.path = path
        self._fd = fd
        self._chain = chain
        self._clock = clock
        self._broken: str | None = None

    @classmethod
    def open(cls, path: Path, key: Ed25519PrivateKey, log_id: str, clock: Clock = _utc_now) -> AuditLog:
        """Open (or create) the log, recover a torn tail, and verify everything already in it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditLogBusy(f"{path} is already open for writing by another process") from None
            if created:
                _fsync_directory(path.parent)
            audit_log = cls._recover(path, fd, key, log_id, clock)
        except BaseException:
            os.close(fd)
            raise
        return audit_log

    @classmethod
    def _recover(cls, path: Path, fd: int, key: Ed25519PrivateKey, log_id: str, clock: Clock) -> AuditLog:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        lines, torn = split_log(data)
        if torn:
            os.ftruncate(fd, size - len(torn))
            os.fsync(fd)
            log.warning(
                "audit log %s: cut off a torn last line of %d bytes (a power cut during an append); "
                "a log_recovered entry records it",
                path, len(torn),
            )  # fmt: skip
        chain = AuditChain(log_id, key)
        if lines:
            verification = verify_lines(lines, key.public_key())
            if not verification.ok:
                details = "; ".join(str(problem) for problem in verification.problems[:5])
                raise AuditLogCorrupt(
                    f"{path} does not verify ({details}). It is kept untouched as evidence: export it, "
                    "move it aside and start a new log."
                )
            if verification.log_id != log_id:
                raise AuditLogCorrupt(f"{path} is the log of {verification.log_id!r}, not {log_id!r}")
            chain.head = verification.head
        audit_log = cls(path, fd, chain, clock)
        if not lines:
            audit_log._write(chain.genesis(clock()))
        if torn:
            audit_log.append("log_recovered", discarded_bytes=len(torn), discarded_sha256=sha256(torn).hex())
        return audit_log

    @property
    def head(self) -> bytes:
        """Hash of the last entry: write it down (e.g. in the closing report) to detect a cut tail."""
        return self._chain.head.last_hash

    def append(self, kind: str, **data: Any) -> AuditEntry:
        """Sign and durably store one event; raises `ForbiddenEvent` for anything off the allow-list."""
        return self._write(self._chain.build(kind, data, self._clock()))

    def _write(self, entry: AuditEntry) -> AuditEntry:
        if self._broken is not None:
            raise AuditError(f"{self.path}: no more appends after a failed write ({self._broken}); reopen the log")
        line = memoryview(entry.line())
        try:
            while line:
                written = os.write(self._fd, line)
                line = line[written:]
            os.fsync(self._fd)
        except OSError as error:
            self._broken = error.strerror or str(error)
            raise AuditError(f"{self.path}: cannot append: {self._broken}") from error
        self._chain.accept(entry)
        return entry

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
