"""The election record: a folder of canonical JSON files anyone can re-check.

Layout (``docs/formats.md`` describes each file)::

    manifest.json               the manifest; its hash is the base hash
    context.json                base hash, trustee ids, quorum, joint public key
    trustees/<trustee_id>.json  each trustee's commitments, proofs and exchange key
    devices.json                each terminal's id and Ed25519 public key
    device_statements/<device_id>.json  each terminal's final signed device statement:
                                how many ballots it sealed and a commitment to their set
    ballots/<ballot_id>.json    every cast sealed ballot
    spoiled/<ballot_id>.json    every challenged ballot with its opening
    tally.json                  the encrypted totals
    decryption/<trustee_id>.json  each present trustee's decryption shares and proofs
    results.json                the totals
    stations/<station_id>/      each station's ledger chain, keys and checkpoint
                                (``election.stations``)
    reconciliation.json         per station its kind, municipality, check-ins and ballots; per
                                municipality its token key, marks and sums
                                (``election.reconciliation``)
    results-nist.json           optional: the results as a NIST SP 1500-100 report (not verified)

Nothing else belongs in it: the verifier refuses stray files and folders (a file left beside
the ballots is either an accident or an attempt to show an observer something the checks
never saw), and every ``.json`` file must be canonical JSON, so that the bytes published are
the bytes every hash and signature covers.

This module holds the layout and the file I/O shell around the pure core; the verifier reads
through :class:`RecordSource` so it can be fed from anything that yields the same files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from election.encoding import canonical_bytes, parse_canonical
from election.errors import FormatError
from election.reconciliation import RECONCILIATION
from election.stations import STATIONS

MANIFEST = "manifest.json"
CONTEXT = "context.json"
DEVICES = "devices.json"
TALLY = "tally.json"
RESULTS = "results.json"
TRUSTEES = "trustees"
BALLOTS = "ballots"
SPOILED = "spoiled"
DECRYPTION = "decryption"
DEVICE_STATEMENTS = "device_statements"
"""Each terminal's final signed device statement, ``<device_id>.json`` (election.devices)."""
NIST_RESULTS = "results-nist.json"
MAX_FILE_SIZE = 16 * 1024 * 1024
"""Most bytes of one ``.json`` file of the record (``chain.jsonl`` has its own bound)."""
RECORD_VERSION = 2
ROOT_FILES = (MANIFEST, CONTEXT, DEVICES, TALLY, RESULTS, RECONCILIATION)
"""The mandatory files at the top of the record."""
OPTIONAL_ROOT_FILES = (NIST_RESULTS,)
FOLDERS = (TRUSTEES, BALLOTS, SPOILED, DECRYPTION, DEVICE_STATEMENTS, STATIONS)
"""The mandatory folders (each may be empty, none may be missing)."""
FILE, FOLDER, OTHER = "file", "folder", "other"
"""Kinds of directory entry in :meth:`RecordSource.listing` (``other``: symlinks, devices…)."""


class RecordSource(Protocol):
    def read(self, name: str) -> Any:
        """The parsed JSON of one file (raises FormatError or FileNotFoundError)."""

    def read_document(self, name: str) -> tuple[Any, bytes]:
        """:meth:`read`, with the file's bytes, which are its value's canonical encoding (a parsed
        ballot keeps them instead of encoding itself again)."""

    def listing(self, folder: str) -> dict[str, str] | None:
        """Every entry of ``folder`` ("" is the root) → FILE, FOLDER or OTHER; None if absent."""

    def names(self, folder: str) -> list[str]:
        """The stems of the ``.json`` files in ``folder``, sorted (empty if absent)."""

    def count(self, folder: str) -> int: ...

    def read_bytes(self, name: str, *, max_size: int | None = None) -> bytes:
        """One file's raw bytes (for line-oriented files such as a chain), FormatError if larger."""

    def folders(self, folder: str) -> list[str]:
        """The sub-folders of ``folder``, sorted (empty if absent)."""


class DirectoryRecord:
    """A record on disk. It refuses a ``.json`` file that is not byte for byte the canonical JSON
    of its content: an outside verifier hashing the file must get our hash."""

    shareable = True
    """Another process can reopen it from its path (the verifier's workers do)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def read(self, name: str) -> Any:
        return self.read_document(name)[0]

    def read_document(self, name: str) -> tuple[Any, bytes]:
        data = self.read_bytes(name, max_size=MAX_FILE_SIZE)
        return parse_canonical(data), data

    def read_bytes(self, name: str, *, max_size: int | None = None) -> bytes:
        """Read at most ``max_size`` bytes: memory stays bounded whatever size the file has."""
        path = self.root / name
        if path.is_symlink():
            raise FormatError(f"{name} is a symbolic link, not a file of the record")
        with path.open("rb") as handle:
            data = handle.read() if max_size is None else handle.read(max_size + 1)
        if max_size is not None and len(data) > max_size:
            raise FormatError(f"{name} is more than {max_size} bytes")
        return data

    def listing(self, folder: str) -> dict[str, str] | None:
        directory = self.root / folder if folder else self.root
        if directory.is_symlink() or not directory.is_dir():
            return None
        found: dict[str, str] = {}
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    found[entry.name] = OTHER
                elif entry.is_dir(follow_symlinks=False):
                    found[entry.name] = FOLDER
                elif entry.is_file(follow_symlinks=False):
                    found[entry.name] = FILE
                else:
                    found[entry.name] = OTHER
        return found

    def folders(self, folder: str) -> list[str]:
        directory = self.root / folder
        return sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []

    def names(self, folder: str) -> list[str]:
        return sorted(self.iter_names(folder))

    def iter_names(self, folder: str) -> Iterator[str]:
        directory = self.root / folder
        if not directory.is_dir():
            return
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".json"):
                    yield entry.name[: -len(".json")]

    def count(self, folder: str) -> int:
        return sum(1 for _ in self.iter_names(folder))


class RecordWriter:
    """Writes record files as canonical JSON, each atomically (temporary file, then rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for folder in (TRUSTEES, BALLOTS, SPOILED, DECRYPTION, DEVICE_STATEMENTS):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    def write(self, name: str, document: Any) -> None:
        self.write_bytes(name, canonical_bytes(document))

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
