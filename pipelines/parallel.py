"""An ordered, bounded process pool: results come back in input order (so outputs are
deterministic) and at most `window` tasks are in flight (so memory stays bounded however large
the input; `multiprocessing.Pool.imap` would read the whole input ahead)."""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def process_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: the caller may have threads (torch, dagster) that fork would copy mid-lock.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None,
                pool: ProcessPoolExecutor | None = None) -> Iterator[R]:
    """`map(fn, items)` over `workers` processes (inline when workers <= 1), or over an
    existing `pool` (which the caller shuts down)."""
    if workers <= 1 and pool is None:
        yield from map(fn, items)
        return
    window = window or 2 * workers
    with contextlib.nullcontext(pool) if pool is not None else process_pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
