"""Chunks of work over every core, or over a Dask cluster, results in input order: the verifier
and the tally split a record's ballots this way, so their output is the same for any number of
workers and any engine.

The cluster engine is Dask ``distributed`` rather than Ray: its scheduler and workers are plain
processes started with ``dask scheduler`` / ``dask worker`` on any machine that sees the record
on shared storage, it retries the tasks of a worker that dies on the others, it is pure Python
on PyPI (Ray brings a large binary runtime of its own), and a task here is just a picklable
call on a chunk of file names, which is what ``Client.map`` does.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

CHUNK = 64
"""Items per task: enough that a task's work dwarfs sending it, few enough to share out."""


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory): the work was not all done."""


CLUSTER_IDLE_LIMIT = 30.0
"""Seconds a cluster may have no worker at all before the run fails (instead of waiting forever)."""


def ordered_chunks(
    work: Callable[[list[Item]], Result],
    items: Sequence[Item],
    workers: int,
    *,
    chunk: int = CHUNK,
    cluster: str | None = None,
) -> Iterator[tuple[int, Result]]:
    """(number of items, ``work(chunk)``) for consecutive chunks of ``items``, in order.

    ``work`` must be picklable (a module-level function or an object with picklable state);
    with one worker, or a single chunk, everything runs in this process. Workers start from a
    fork server, never by forking a process that may hold threads and locks. With ``cluster``
    (a Dask scheduler address such as ``tcp://10.0.0.5:8786``) the chunks run on its workers.
    """
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    if cluster is not None:
        yield from _on_cluster(work, chunks, cluster)
        return
    if workers <= 1 or len(chunks) <= 1:
        for part in chunks:
            yield len(part), work(part)
        return
    with process_pool(workers) as pool:
        try:
            for part, result in zip(chunks, pool.map(work, chunks), strict=True):
                yield len(part), result
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise WorkerLost(f"a worker process died: {exc}") from exc


def process_pool(
    workers: int, initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()
) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` processes started from a fork server (never by forking a process that may hold
    threads and locks), each of which ends as soon as the process that made the pool ends,
    however it ends.

    Without that, a ``kill -9`` of the maker leaves its workers waiting forever: a worker holds
    both ends of its own task queue (multiprocessing hands a queue over whole), so it never reads
    the end of it, and the fork server lives as long as a child holds its pipe. Under systemd the
    unit's cgroup is killed whole; started any other way (by hand, by tests, by
    ``station-hub run``), every crash would leave the workers and the fork server running."""
    context = multiprocessing.get_context("forkserver" if sys.platform == "linux" else "spawn")
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(), initializer, initargs)
    )


def _start_worker(maker: int, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    _end_with(maker)
    if initializer is not None:
        initializer(*initargs)


def _end_with(maker: int) -> None:
    """End this process once process ``maker`` has ended. A pidfd says so without polling and
    cannot name a later process that reuses the number (Linux 5.3; elsewhere, nothing watches)."""
    if not hasattr(os, "pidfd_open"):
        return
    try:
        handle = os.pidfd_open(maker)
    except ProcessLookupError:  # it ended while this worker was starting
        os._exit(1)

    def watch() -> None:
        select.select([handle], [], [])  # readable once the process has ended
        os._exit(1)

    threading.Thread(target=watch, name="pool-maker-watch", daemon=True).start()


def _on_cluster(
    work: Callable[[list[Item]], Result], chunks: list[list[Item]], address: str
) -> Iterator[tuple[int, Result]]:
    """The chunks as Dask tasks. A worker that dies has its tasks retried on the others (Dask
    does that); a task that keeps killing workers, or a cluster left with no worker for
    :data:`CLUSTER_IDLE_LIMIT` seconds, raises :class:`WorkerLost`."""
    try:
        from distributed import Client, TimeoutError
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise WorkerLost("the cluster mode needs Dask: pip install 'polling-station[cluster]'") from None

    try:
        client = Client(address, timeout=10, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise WorkerLost(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    with client:
        futures = client.map(work, chunks, pure=False)
        try:
            for part, future in zip(chunks, futures, strict=True):
                idle_since = None
                while True:
                    try:
                        result = future.result(timeout=1.0)
                        break
                    except TimeoutError:
                        pass
                    if client.scheduler_info(n_workers=-1)["workers"]:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since > CLUSTER_IDLE_LIMIT:
                        raise WorkerLost(f"the Dask cluster at {address} has had no worker for "
                                         f"{CLUSTER_IDLE_LIMIT:.0f} s")  # fmt: skip
                yield len(part), result
        except KilledWorker as exc:
            raise WorkerLost(f"Dask workers died running a chunk: {exc}") from exc
        finally:
            client.cancel(futures)
