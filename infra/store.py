"""Durable SQLite stores, opened one way: ``synchronous=FULL`` (a commit survives a power cut),
the journal mode each store needs, and a schema version in ``PRAGMA user_version`` so that a
store written by another version of the software is refused instead of misread."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from infra.errors import SiteError

Journal = Literal["wal", "delete"]
Synchronous = Literal["full", "extra"]


def open_store(
    path: Path,
    schema: str,
    version: int,
    *,
    journal: Journal = "wal",
    secure_delete: bool = False,
    synchronous: Synchronous = "full",
    read_only: bool = False,
) -> sqlite3.Connection:
    """Open (creating if new) the store at ``path`` with ``schema`` at schema ``version``.

    ``journal="delete"`` with ``secure_delete`` is for stores whose deleted rows must leave no
    copy on the medium: a rollback journal is removed after each commit, and freed pages are
    zeroed, whereas WAL frames keep old page images until a checkpoint overwrites them. A
    ``secure_delete`` store also keeps SQLite's temporary files (sorts, indexes being built) in
    memory (``temp_store=MEMORY``), never in ``/tmp`` on the medium.

    ``synchronous="extra"``: in ``delete`` journal mode the commit point is the unlinking of the
    journal, and only EXTRA makes SQLite fsync the directory after it; with FULL a power cut
    right after a commit can bring the journal back and roll the commit — a deletion — back.
    """
    if read_only:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        _check_version(db, path, version)
        return db
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute(f"PRAGMA journal_mode={'WAL' if journal == 'wal' else 'DELETE'}")
    db.execute(f"PRAGMA synchronous={'EXTRA' if synchronous == 'extra' else 'FULL'}")
    if secure_delete:
        db.execute("PRAGMA secure_delete=ON")
        db.execute("PRAGMA temp_store=MEMORY")
    current = db.execute("PRAGMA user_version").fetchone()[0]
    if current == 0:
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, schema.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {int(version)}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
    else:
        _check_version(db, path, version)
    return db


def _check_version(db: sqlite3.Connection, path: Path, version: int) -> None:
    current = db.execute("PRAGMA user_version").fetchone()[0]
    if current != version:
        db.close()
        raise SiteError(f"{path}: store schema version {current}, this software reads version {version}")
