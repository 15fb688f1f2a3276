"""A batch of deletions spread over several threads, each thread on its own directories.

unlink releases the GIL, so on a slow or network filesystem several threads delete in
parallel; on tmpfs the Python around each unlink dominates and threads mostly take turns.
The deleter itself is unchanged: it holds no state between calls, and each thread runs its
own `delete_many`, with its own fds on base_dir and on the directory it works in, and so
its own checks before every unlink. Giving each thread whole directories keeps each one
entering a directory once, as a single thread does, and no two threads in one directory.

Results come back to the calling thread, which logs and records them: listeners, the
registry's discards and the log keep a single writer. The workers hand them over in chunks,
so the hand-over costs a lock per chunk, not per file.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from tempwatch.deleter import DeleteItem, Deleter, DeleteResult, PathArg
from tempwatch.pacing import until

__all__ = ["delete_spread", "shards"]

Item = DeleteItem

_CHUNK = 256  # results handed over at a time
_JOIN_SECONDS = 30.0  # a worker finishes its current unlink, then sees the abort


def shards(paths: Sequence[PathArg], threads: int) -> list[list[int]]:
    """Indexes of `paths` dealt to at most `threads` workers, whole directories each.

    Directories are dealt largest first to the least loaded worker; each worker keeps its
    directories in first-seen order, so items sorted by directory stay sorted.
    """
    groups: dict[str, list[int]] = {}
    for index, path in enumerate(paths):
        text = path if isinstance(path, str) else os.fsdecode(path)  # TypeError if no path
        groups.setdefault(text.rpartition("/")[0], []).append(index)
    workers = min(threads, len(groups))
    if workers <= 1:
        return [list(range(len(paths)))] if paths else []
    loads = [0] * workers
    dealt: list[list[list[int]]] = [[] for _ in range(workers)]
    for group in sorted(groups.values(), key=len, reverse=True):
        lightest = loads.index(min(loads))
        dealt[lightest].append(group)
        loads[lightest] += len(group)
    return [sorted(i for group in mine for i in group) for mine in dealt]


def delete_spread(
    deleter: Deleter,
    items: Sequence[Item],
    *,
    threads: int = 1,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[int, DeleteResult]]:
    """Delete `items` over up to `threads` threads; yield (index in items, result).

    `should_stop` is asked before each file: once it says so, no further file is started.
    With one thread (or one directory) everything runs on the calling thread, in order.
    Closing the iterator early stops the workers and joins them.
    """
    parts = shards([item[0] for item in items], threads) if threads > 1 else []
    if len(parts) <= 1:
        yield from enumerate(deleter.delete_many(until(should_stop, items)))
        return
    yield from _in_threads(deleter, items, parts, should_stop)


_Handed = queue.SimpleQueue[list[tuple[int, DeleteResult]] | BaseException | None]


def _in_threads(
    deleter: Deleter,
    items: Sequence[Item],
    parts: list[list[int]],
    should_stop: Callable[[], bool],
) -> Iterator[tuple[int, DeleteResult]]:
    handed: _Handed = queue.SimpleQueue()
    abort = threading.Event()

    def stop_now() -> bool:
        return abort.is_set() or should_stop()

    workers = [
        threading.Thread(
            target=_work,
            args=(deleter, items, part, stop_now, handed),
            name=f"tempwatch-delete-{n}",
            daemon=True,
        )
        for n, part in enumerate(parts)
    ]
    for worker in workers:
        worker.start()
    running = len(workers)
    try:
        while running:
            got = handed.get()
            if got is None:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield from got
    finally:
        abort.set()
        for worker in workers:
            worker.join(_JOIN_SECONDS)


def _work(
    deleter: Deleter,
    items: Sequence[Item],
    indexes: list[int],
    stop_now: Callable[[], bool],
    handed: _Handed,
) -> None:
    """One worker: its items through its own delete_many, results handed over in chunks."""
    taken: deque[int] = deque()

    def feed() -> Iterator[Item]:
        for index in until(stop_now, indexes):
            taken.append(index)
            yield items[index]

    try:
        chunk: list[tuple[int, DeleteResult]] = []
        # delete_many yields one result per item it took, in order.
        for result in deleter.delete_many(feed()):
            chunk.append((taken.popleft(), result))
            if len(chunk) >= _CHUNK:
                handed.put(chunk)
                chunk = []
        if chunk:
            handed.put(chunk)
    except BaseException as e:  # handed to the caller, never lost on a worker thread
        handed.put(e)
    finally:
        handed.put(None)
