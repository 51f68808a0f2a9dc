"""A real PostgreSQL server in a folder of its own, and a streaming replica of it, for the demo,
the tests and the benchmarks (Debian ``postgresql``; nothing here is used by a deployed site,
where the election office runs its servers as docs/municipal-roll.md describes).

Why a class of the site layer: the municipal roll must be shown on the real server — a
primary, and a standby kept by PostgreSQL's own streaming replication (``pg_basebackup -R``),
which is what the scale plan stands on — and the demo, the tests and the benchmark each need
one started the same way: on a free loopback port, in a temporary folder, stopped and removed
afterwards, run as ``nobody`` when we are root (PostgreSQL refuses to run as root).

    with PostgresServer(root / "primary") as primary, primary.replica(root / "replica") as replica:
        primary.configure(synchronous_standby_names=replica.name, synchronous_commit="remote_apply")
        …  # a commit on primary.url returns once replica.url shows it
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from infra.broker import free_port
from infra.errors import SiteError

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/lib/postgresql/bin"))


def _as_user() -> tuple[list[str], str]:
    """(command prefix, database user): ``nobody`` when we are root, else ourselves."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "nobody", "--"], "nobody"
    return [], os.environ.get("USER") or "postgres"


class PostgresServer:
    """One PostgreSQL cluster in ``root`` (its data, its socket, its log), started by
    :meth:`start` (or ``with``), stopped and removed by :meth:`stop`.

    ``durable=False`` turns fsync off (tests: many short-lived clusters); the default keeps
    PostgreSQL's defaults, fsync and synchronous_commit on, as a benchmark must."""

    def __init__(self, root: Path, *, name: str = "primary", durable: bool = True,
                 settings: dict[str, str] | None = None, keep: bool = False) -> None:  # fmt: skip
        self.root = Path(root)
        self.name = name
        """The standby's application name (what ``synchronous_standby_names`` lists)."""
        self.durable = durable
        self.settings = dict(settings or {})
        self.keep = keep
        self.port = free_port()
        self.prefix, self.user = _as_user()
        self.data = self.root / "data"
        self._started = False

    @property
    def url(self) -> str:
        """The superuser's URL of the ``postgres`` database (trust authentication on loopback only)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(mode=0o700)
        if self.prefix:
            for path in (self.root, self.data):
                shutil.chown(path, "nobody")
            os.chmod(self.root, 0o755)
            parent = self.root.parent  # a private temporary folder (0700): let nobody pass through it
            os.chmod(parent, parent.stat().st_mode | stat.S_IXOTH)

    def _run(self, *argv: str, what: str) -> None:
        done = subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SiteError(f"PostgreSQL {self.name}: {what} failed: {(done.stderr or done.stdout).strip()[-800:]}")

    def _options(self) -> str:
        settings = {"listen_addresses": "127.0.0.1", **({} if self.durable else {"fsync": "off"}), **self.settings}
        return " ".join([f"-p {self.port}", f"-k {self.root}", *(f"-c {k}={v}" for k, v in settings.items())])

    def start(self) -> PostgresServer:
        """initdb (trust on loopback, which also allows replication connections), then start."""
        self._prepare()
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  *([] if self.durable else ["--no-sync"]), what="initdb")  # fmt: skip
        return self._start()

    def _start(self) -> PostgresServer:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", self._options(), "-l", str(self.root / "pg.log"),
                  "-w", "-t", "60", "start", what="start")  # fmt: skip
        self._started = True
        return self

    def replica(self, root: Path, *, name: str = "replica_1") -> PostgresServer:
        """A hot standby of this server, streaming its WAL: ``pg_basebackup -R`` copies the data
        and writes ``primary_conninfo`` (with ``application_name`` = ``name``) and
        ``standby.signal``; the standby then starts on its own port, read-only."""
        standby = PostgresServer(root, name=name, durable=self.durable, keep=self.keep)
        standby._prepare()
        connection = f"host=127.0.0.1 port={self.port} user={self.user} application_name={name}"
        standby._run(str(PG_BIN / "pg_basebackup"), "-D", str(standby.data), "-d", connection, "-X", "stream", "-R",
                     "-c", "fast", *([] if self.durable else ["--no-sync"]), what="pg_basebackup")  # fmt: skip
        try:
            return standby._start()
        except BaseException:
            standby.stop()
            raise

    def configure(self, **settings: str) -> None:
        """``ALTER SYSTEM SET`` each setting and reload (synchronous_standby_names, synchronous_commit…)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            for name, value in settings.items():
                connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # names are ours, not input
            connection.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 10
            while any(connection.execute("SELECT current_setting(%s)", (n,)).fetchone()[0] != v  # type: ignore[index]
                      for n, v in settings.items()):  # fmt: skip
                if time.monotonic() > deadline:
                    raise SiteError(f"PostgreSQL {self.name} did not take the settings {settings}")
                time.sleep(0.02)

    def replication(self) -> list[dict[str, Any]]:
        """``pg_stat_replication`` of this primary: one row per connected standby."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as connection:
            query = ("SELECT application_name, state, sync_state, write_lag, flush_lag, replay_lag "
                     "FROM pg_stat_replication ORDER BY application_name")  # fmt: skip
            return list(connection.execute(query).fetchall())

    def wait_streaming(self, name: str, timeout: float = 30.0) -> None:
        """Until the standby ``name`` streams from this primary."""
        deadline = time.monotonic() + timeout
        while not any(r["application_name"] == name and r["state"] == "streaming" for r in self.replication()):
            if time.monotonic() > deadline:
                raise SiteError(f"standby {name} is not streaming from {self.name} after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._started:
            subprocess.run([*self.prefix, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)  # fmt: skip
            self._started = False
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
