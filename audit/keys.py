"""The per-device audit signing key (Ed25519) and its public half.

The private key is PKCS#8 PEM, mode 0600, beside the log on the device; it is created on the
device the first time the service starts and never leaves it. The public key (SubjectPublicKeyInfo
PEM) is what a technician records at provisioning and what `audit-log verify --key` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.errors import AuditKeyError


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key file (refusing to overwrite one) and its ``.pub`` beside it."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditKeyError(f"{path} already exists; refusing to replace an audit key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    public_key_path(path).write_bytes(public_pem(key.public_key()))
    return key


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise AuditKeyError(f"cannot read audit key {path}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise AuditKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key")
    return key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    return load_signing_key(path) if Path(path).exists() else create_signing_key(Path(path))


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a public key: SubjectPublicKeyInfo PEM, or 64 hex digits (the raw key)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise AuditKeyError(f"cannot read public key {path}: {error.strerror}") from None
    text = data.strip()
    try:
        if len(text) == 64:
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnicodeDecodeError):
        raise AuditKeyError(f"{path} is neither a PEM public key nor 64 hex digits") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{path} is not an Ed25519 public key")
    return key
