"""How far the central office has confirmed this station's chain, read without writing.

The forwarder alone writes ``forward/forward.db``; the ledger reads the confirmed position
from it to publish the forward lag in its status, without depending on the forwarder.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

FORWARD_DB = Path("forward") / "forward.db"


def confirmed_position(station_dir: Path) -> int | None:
    """The last chain position the centre confirmed; None if the hub never forwarded."""
    path = Path(station_dir) / FORWARD_DB
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT position FROM confirmed").fetchone()
    except sqlite3.OperationalError:  # the forwarder has not created its tables yet
        return None
    finally:
        db.close()
    return None if row is None else int(row[0])
