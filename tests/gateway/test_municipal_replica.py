"""The municipal roll on a PostgreSQL primary with a real streaming replica (``pg_basebackup -R``,
both servers started here on free loopback ports): a mark committed on the primary reaches the
replica; with synchronous replication (``remote_apply``) it is there the moment the commit
returns; the replica refuses writes; and after the primary is lost and the replica promoted,
every committed mark is still there, so a voter checked in before the failover stays refused."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.municipal_roll import MunicipalStore
from infra.pgserver import PG_BIN, PostgresServer

MUNICIPALITY = "kaga"
LENGTH = 256  # a 2048-bit token key's blinded values


@pytest.fixture
def servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    root = Path(tempfile.mkdtemp(prefix="mr-repl-", dir="/tmp"))  # short: the socket path is limited
    primary = PostgresServer(root / "primary", durable=False).start()
    try:
        with primary.replica(root / "replica", name="replica_1") as replica:
            primary.wait_streaming("replica_1")
            yield primary, replica
    finally:
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


def on_replica(replica: PostgresServer, voter_key: bytes) -> bytes | None:
    """The voter's mark as the replica holds it (None: not marked, or not replicated yet)."""
    with psycopg.connect(replica.url, autocommit=True) as connection:
        try:
            row = connection.execute("SELECT blinded FROM mr_voters WHERE municipality = %s AND voter_key = %s",
                                     (MUNICIPALITY, voter_key)).fetchone()  # fmt: skip
        except psycopg.errors.UndefinedTable:  # the schema itself has not arrived yet
            return None
    return None if row is None or row[0] is None else bytes(row[0])


def test_marks_reach_the_replica_synchronously_and_survive_a_failover(servers):
    primary, replica = servers
    voters = sorted(secrets.token_bytes(32) for _ in range(40))
    store = MunicipalStore(primary.url)
    try:
        store.add_municipality(MUNICIPALITY, LENGTH)
        store.import_voters(MUNICIPALITY, voters)
        store.set_polls(MUNICIPALITY, "open")

        # Asynchronous streaming (PostgreSQL's default): the mark arrives shortly after the commit.
        blinded = secrets.token_bytes(LENGTH)
        assert store.mark(MUNICIPALITY, voters[0], blinded)
        deadline = time.monotonic() + 10
        while on_replica(replica, voters[0]) != blinded:
            assert time.monotonic() < deadline, "the mark never reached the replica"
            time.sleep(0.01)

        # Synchronous, remote_apply: the commit returns only once the replica has applied it.
        primary.configure(synchronous_standby_names="replica_1", synchronous_commit="remote_apply")
        assert [r["sync_state"] for r in primary.replication()] == ["sync"]
        for voter in voters[1:21]:
            blinded = secrets.token_bytes(LENGTH)
            assert store.mark(MUNICIPALITY, voter, blinded)
            assert on_replica(replica, voter) == blinded  # no waiting: already applied there

        # The replica is read-only: a station cannot be checked in against it by mistake.
        read_only = pytest.raises(psycopg.errors.ReadOnlySqlTransaction)
        with psycopg.connect(replica.url, autocommit=True) as connection, read_only:
            connection.execute("UPDATE mr_voters SET blinded = NULL WHERE municipality = %s", (MUNICIPALITY,))
    finally:
        store.close()

    # The primary is lost; the replica is promoted and every committed mark is there.
    primary.stop()
    replica._run(str(PG_BIN / "pg_ctl"), "-D", str(replica.data), "-w", "promote", what="promote")
    promoted = MunicipalStore(replica.url)
    try:
        assert promoted.checked_in(MUNICIPALITY) == 21
        assert not promoted.mark(MUNICIPALITY, voters[5], secrets.token_bytes(LENGTH))  # still marked: refused
        assert promoted.mark(MUNICIPALITY, voters[30], secrets.token_bytes(LENGTH))  # the roll goes on
    finally:
        promoted.close()
