"""The election record: a folder of canonical JSON files anyone can re-check.

Layout (``docs/formats.md`` describes each file)::

    manifest.json               the manifest; its hash is the base hash
    context.json                base hash, trustee ids, quorum, joint public key
    trustees/<trustee_id>.json  each trustee's commitments, proofs and exchange key
    devices.json                each terminal's id and Ed25519 public key
    ballots/<ballot_id>.json    every cast sealed ballot
    spoiled/<ballot_id>.json    every challenged ballot with its opening
    tally.json                  the encrypted totals
    decryption/<trustee_id>.json  each present trustee's decryption shares and proofs
    results.json                the totals
    stations/<station_id>/      each station's ledger chain, keys and checkpoint
                                (``election.stations``)

This module holds the layout and the file I/O shell around the pure core; the verifier reads
through :class:`RecordSource` so it can be fed from anything that yields the same files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from election.encoding import canonical_bytes, parse_json

MANIFEST = "manifest.json"
CONTEXT = "context.json"
DEVICES = "devices.json"
TALLY = "tally.json"
RESULTS = "results.json"
TRUSTEES = "trustees"
BALLOTS = "ballots"
SPOILED = "spoiled"
DECRYPTION = "decryption"
MAX_FILE_SIZE = 16 * 1024 * 1024
RECORD_VERSION = 1


class RecordSource(Protocol):
    def read(self, name: str) -> Any:
        """The parsed JSON of one file (raises FormatError or FileNotFoundError)."""

    def names(self, folder: str) -> list[str]:
        """The stems of the ``.json`` files in ``folder``, sorted (empty if absent)."""

    def count(self, folder: str) -> int: ...

    def read_bytes(self, name: str) -> bytes:
        """One file's raw bytes (for line-oriented files such as a chain)."""

    def folders(self, folder: str) -> list[str]:
        """The sub-folders of ``folder``, sorted (empty if absent)."""


class DirectoryRecord:
    """A record on disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def read(self, name: str) -> Any:
        return parse_json(self.read_bytes(name), max_size=MAX_FILE_SIZE)

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

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
        for folder in (TRUSTEES, BALLOTS, SPOILED, DECRYPTION):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    def write(self, name: str, document: Any) -> None:
        self.write_bytes(name, canonical_bytes(document))

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
