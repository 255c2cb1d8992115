"""Where a stage's tasks run. A task is a plain function of one job (a dict of JSON-able values:
paths, slice bounds, settings) that returns a small dict; it is idempotent (it writes its files
under temporary names, renames them, then its completion record), so running it again, after a
crash or on a retry, gives the same files. An executor runs a list of such jobs and gives the
results back in job order, so a stage that merges in that order writes the same bytes whatever
the executor, the number of workers and the order in which tasks finished.

- `local` (the default): in this process with one worker, else over a spawn process pool.
- `ray`: as Ray tasks, on the cluster at `ray_address` (None: the Ray this process has already
  initialised, else one found through RAY_ADDRESS, else a new local one). A task whose worker dies
  (kill -9, a lost node) is retried up to `max_retries` times; a task that raises is not (its
  error is the stage's). Ray is imported only here, when asked for: the default install lacks it.
  Every path in a job must be readable and writable from every node (shared storage).

    with open_executor("ray", workers=2) as ex:
        results = list(ex.map(task, jobs))
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterator

from pipelines import atomic
from pipelines.parallel import ordered_map, process_pool

EXECUTORS = ("local", "ray")
RAY_MAX_RETRIES = 3


def check_executor(kind: str, ray_address: str | None = None) -> None:
    """A user's choice of executor, checked where it is configured (one line naming the value)."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if ray_address is not None and kind != "ray":
        raise ValueError(f"ray_address {ray_address!r} is set but the executor is {kind!r}, not 'ray'")


# --- completion records -------------------------------------------------------------------------

def read_record(path: Path) -> dict | None:
    """A task's completion record, or None when it has not finished (no file, or a torn one)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def recorded(where: Callable[[dict], str]):
    """A task that writes its completion record (its result) last, under `job["work"]/where(job)`,
    and is skipped on a rerun once that record exists: a crash redoes only the tasks that did not
    finish. The record is written atomically, so a task killed while writing it simply reruns."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(job: dict) -> dict:
            done = Path(job["work"]) / where(job)
            if (rec := read_record(done)) is not None:
                return rec
            rec = fn(job)
            atomic.write_json_atomic(done, rec)
            return rec
        return run
    return wrap


def row_group_slices(parquet: str | os.PathLike, tasks: int = 0, workers: int = 1,
                     task_rows: int = 50_000) -> list[tuple[int, int, int, int]]:
    """A parquet file cut into contiguous task slices of whole row groups: (first row group, end
    row group, first row, end row) of each. `tasks` of them (0: one per ~`task_rows` rows, at
    least `workers`), never more than there are row groups, and at least one (empty) slice."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(parquet).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    n = tasks or max(workers, math.ceil(sum(sizes) / task_rows))
    n = max(1, min(n, len(sizes)))
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    bounds = [round(i * len(sizes) / n) for i in range(n + 1)]
    return [(g0, g1, starts[g0], starts[g1]) for g0, g1 in zip(bounds, bounds[1:])]


# --- executors ----------------------------------------------------------------------------------

class LocalExecutor:
    """Today's way: inline with one worker (so a kill of the process kills the work), else a spawn
    process pool, started on the first list of more than one job and reused by the later ones."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._pool = None

    def map(self, fn: Callable[[dict], dict], jobs: list[dict]) -> Iterator[dict]:
        jobs = list(jobs)
        n = max(1, min(self.workers, len(jobs)))
        if self._pool is None and n > 1:
            self._pool = process_pool(self.workers)
        return ordered_map(fn, jobs, n, pool=self._pool)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _call(fn: Callable[[dict], dict], job: dict) -> dict:
    return fn(job)


class ExecutorUnavailable(ValueError):
    """The executor asked for cannot run here (a setting the user can change, hence a ValueError)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorUnavailable("executor 'ray' needs Ray, which is not installed: "
                                  "pip install 'homebrew-gpt2[ray]' (or use executor 'local')") from None
    return ray


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address` unless this process already has; True when this call
    connected (its caller may then `ray.shutdown()`, which stops a cluster started here and only
    disconnects from another). No dashboard; a cluster started here (no address given or in
    RAY_ADDRESS) listens on 127.0.0.1 only and has `num_cpus` (None: all)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    local = address is None and not os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False,
             **({"_node_ip_address": "127.0.0.1", "num_cpus": num_cpus} if local else {}))
    return True


class RayExecutor:
    """Jobs as Ray tasks, one CPU each. All jobs of a list are submitted at once (a result is a
    small dict); results are taken in job order. Leaving early (an error) cancels what is left."""

    def __init__(self, address: str | None = None, max_retries: int = RAY_MAX_RETRIES):
        ray = self._ray = _import_ray()
        connect_ray(address)
        self._task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_call)

    def map(self, fn: Callable[[dict], dict], jobs: list[dict]) -> Iterator[dict]:
        refs = [self._task.remote(fn, job) for job in jobs]
        return self._results(refs)

    def _results(self, refs: list) -> Iterator[dict]:
        ray = self._ray
        got = 0
        try:
            for ref in refs:
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # The task's own exception (a SourceError, a full disk), not Ray's wrapper, so
                    # the stage reports it as it would under the local executor.
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else exc) from None
                got += 1
        finally:
            for ref in refs[got + 1:]:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def close(self) -> None:
        # The cluster outlives the stage: the next stage (or a caller's later work) reuses it.
        pass


# The executor of a caller that schedules a stage's tasks itself (Dagster, one step per task).
_taken_over: contextvars.ContextVar = contextvars.ContextVar("tasks_taken_over", default=None)


@contextlib.contextmanager
def tasks_taken_over(executor):
    """Within this block every stage's `open_executor` gives `executor` (anything with `map`)
    instead of its own, and leaves closing it to the caller."""
    token = _taken_over.set(executor)
    try:
        yield executor
    finally:
        _taken_over.reset(token)


@contextlib.contextmanager
def open_executor(kind: str = "local", workers: int = 1, ray_address: str | None = None,
                  max_retries: int = RAY_MAX_RETRIES):
    """The executor `kind`; `workers` sizes the local pool (Ray uses its cluster's CPUs)."""
    check_executor(kind, ray_address)
    if (outer := _taken_over.get()) is not None:
        yield outer
        return
    ex = LocalExecutor(workers) if kind == "local" else RayExecutor(ray_address, max_retries)
    try:
        yield ex
    finally:
        ex.close()
