"""Files that must never be seen half-written, and private keys that must never be readable
by anyone but their owner, not even for the instant between writing and a ``chmod``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization


def private_pem(key: Any) -> bytes:
    """PKCS#8 PEM, unencrypted: the disk's permissions and the device's encryption protect it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int, *, exclusive: bool) -> None:
    """Write a temporary file created with ``mode``, fsync it, rename it over ``path``, fsync the
    folder: a reader sees the old file or the new one, and a power cut leaves one of the two."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise FileExistsError(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(temp, path)  # fails if another process created it meanwhile
            temp.unlink()
        else:
            temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """A file only its owner can read (0600 from creation on), written atomically; with
    ``exclusive`` an existing file is never replaced (``FileExistsError``)."""
    _write(Path(path), data, 0o600, exclusive=exclusive)


def write_atomically(path: Path, data: bytes) -> None:
    """A public file (0644) that a reader never sees half-written."""
    _write(Path(path), data, 0o644, exclusive=False)
