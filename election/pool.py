"""Chunks of work over every core, results in input order: the verifier and the tally split a
record's ballots this way, so their output is the same for any number of workers."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

CHUNK = 64
"""Items per task: enough that a task's work dwarfs sending it, few enough to share out."""


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory): the work was not all done."""


def ordered_chunks(
    work: Callable[[list[Item]], Result], items: Sequence[Item], workers: int, *, chunk: int = CHUNK
) -> Iterator[tuple[int, Result]]:
    """(number of items, ``work(chunk)``) for consecutive chunks of ``items``, in order.

    ``work`` must be picklable (a module-level function or an object with picklable state);
    with one worker, or a single chunk, everything runs in this process. Workers start from a
    fork server, never by forking a process that may hold threads and locks.
    """
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        for part in chunks:
            yield len(part), work(part)
        return
    context = multiprocessing.get_context("forkserver" if sys.platform == "linux" else "spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            for part, result in zip(chunks, pool.map(work, chunks), strict=True):
                yield len(part), result
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise WorkerLost(f"a worker process died: {exc}") from exc
