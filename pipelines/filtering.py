"""Stage 1: run FineWeb's filters over a snapshot; every document ends up in exactly one of
`kept.parquet` or `rejected.parquet` (with the filter, rule and detail that rejected it).

The work is a list of tasks over slices of the input files (task i of n: a whole file, or a range
of rows of a big parquet file, cut where a read batch starts). Each task writes its own kept and
rejected parts and then its completion record, in a work directory beside the output, so a rerun
after a crash redoes only the tasks that did not finish; the tasks run in this process, a local
process pool or on Ray (`pipelines.executors`). The parts are merged in task order, row group by
row group, and a batch of documents is the same whatever the cut (batches are counted from the
start of each file), so the outputs are byte-identical whatever the number of tasks and workers.
Conservation (read = kept + rejected) is checked per task and for the snapshot.

    hgpt data filter --input ../shared/data/docs-sample/snapshot-2026-11-a --out /tmp/hgpt/filtered
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import atomic
from pipelines.filters import FilterConfig, apply_filters
from pipelines.executors import check_executor, open_executor, recorded
from pipelines.sources import (SCHEMA, ReadConfig, SkippedFile, Snapshot, SourceError, _by_bytes,
                               _check_row, _row, iter_file_batches, open_parquet)

# filter-1 still: the tasks write the bytes the one-loop stage wrote (tests/pipelines/test_data_filter_tasks.py
# compares with a plain read filtered batch by batch), so its finished outputs stay valid.
STAGE_VERSION = "filter-1"
KEPT_SCHEMA = pa.schema([f for f in SCHEMA if f.name != "input_error"])
REJECTED_SCHEMA = pa.schema(
    [*KEPT_SCHEMA, pa.field("filter", pa.string()), pa.field("rule", pa.string()), pa.field("detail", pa.string())]
)
_PARQUET_OPTS = dict(compression="zstd")


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class FilterStageConfig:
    """Filters plus how to read, and how the work is cut and run (which never changes the output):
    a task reads about `task_rows` documents (fewer, so that `workers` processes all have work),
    on the `executor` ("local" or "ray", at `ray_address`)."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    workers: int = field(default_factory=default_workers)
    task_rows: int = 50_000
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.task_rows < 1:
            raise ValueError(f"task_rows must be >= 1, got {self.task_rows}")
        check_executor(self.executor, self.ray_address)


@dataclass
class FilterResult:
    snapshot: str
    docs_in: int
    kept: int
    rejected: int
    rejected_by_filter: dict[str, int]
    rejected_by_rule: dict[str, int]
    skipped_files: list[dict]
    kept_path: str
    rejected_path: str
    kept_sha256: str
    rejected_sha256: str
    fingerprint: str
    tasks: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def conserved(self) -> bool:
        return self.docs_in == self.kept + self.rejected



def _filter_batch(args: tuple[list[dict], dict]) -> list[tuple]:
    docs, cfg_dict = args
    cfg = FilterConfig.from_dict(cfg_dict)
    return [tuple(apply_filters(d, cfg)) for d in docs]


# --- reading a slice ----------------------------------------------------------------------------

def _parquet_slice(path: Path, rows: tuple[int, int] | None, cfg: ReadConfig):
    """Rows [r0, r1) of a parquet file (None: all) in the batches a read of the whole file gives:
    `cfg.batch_rows` documents counted from the file's first row (r0 is the start of one), read one
    row group at a time (given several, pyarrow buffers them all). Errors as sources' reader."""
    pf, columns = open_parquet(path)
    meta, name = pf.metadata, path.name
    r0, r1 = rows if rows is not None else (0, meta.num_rows)
    row, at, pending, held = r0, 0, [], 0  # next row to hand out; first row of the current group

    def take(n: int) -> list[dict]:
        nonlocal row, pending, held
        table = pa.Table.from_batches(pending)
        docs = []
        for values in table.slice(0, n).to_pylist():
            docs.append(_check_row(_row(values, name, row), f"{path} row {row}", cfg, check_unicode=False))
            row += 1
        rest = table.slice(n)
        pending, held = rest.to_batches(), rest.num_rows
        return docs

    try:
        for g in range(meta.num_row_groups):
            size = meta.row_group(g).num_rows
            if at + size > r0 and at < r1:
                pos = at
                for batch in pf.iter_batches(batch_size=cfg.batch_rows, row_groups=[g], columns=columns):
                    lo, hi = max(r0, pos) - pos, min(r1, pos + batch.num_rows) - pos
                    if hi > lo:
                        pending.append(batch.slice(lo, hi - lo))
                        held += hi - lo
                    pos += batch.num_rows
                    while held >= cfg.batch_rows:
                        yield take(cfg.batch_rows)
                    if pos >= r1:
                        break
            at += size
        if held:
            yield take(held)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"{path}: unreadable at row {row} ({exc.__class__.__name__}: {exc})") from exc


def _read_slice(path: Path, rows: tuple[int, int] | None, cfg: ReadConfig, cap: int | None = None):
    """A task's documents, in batches; at most `cap` of them (the snapshot's limit)."""
    if path.name.endswith(".parquet"):
        batches = _by_bytes(_parquet_slice(path, rows, cfg), cfg.batch_bytes)
    else:
        batches = iter_file_batches(path, cfg)
    seen = 0
    for batch in batches:
        if cap is not None:
            batch = batch[: cap - seen]
        if batch:
            seen += len(batch)
            yield batch
        if cap is not None and seen >= cap:
            return


# --- planning -----------------------------------------------------------------------------------

def _row_groups(path: Path) -> list[int] | None:
    """The sizes of a parquet file's row groups, or None when its metadata cannot be read."""
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # the task reading it says why, in the reader's words
        return None
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def _limit(snapshot: Snapshot, cfg: ReadConfig) -> int | None:
    limits = [x for x in (cfg.limit_docs, snapshot.limit_docs) if x is not None]
    return min(limits) if limits else None


def _read_counts(snapshot: Snapshot, cfg: ReadConfig, limit: int) -> list[tuple[Path, int | None]]:
    """Under a limit: the files that are read, each with the number of documents to take from it
    (None: all it gives). Counted by reading, as the tasks will, since a file that fails part way
    (skipped) gives fewer documents than it holds and the limit then reaches further."""
    out, seen = [], 0
    for path in snapshot.files:
        if seen >= limit:
            break
        n, failed = 0, False
        try:
            for batch in _read_slice(path, None, cfg, cap=limit - seen):
                n += len(batch)
        except SourceError:
            if cfg.on_error == "raise":  # its task raises it; nothing after it is read
                out.append((path, None))
                break
            failed = True  # its task reads to the failure too, and the limit reaches further
        out.append((path, None if failed or seen + n < limit else n))
        seen += n
    return out


def plan_tasks(snapshot: Snapshot, cfg: FilterStageConfig) -> list[tuple[str, list[int] | None, int | None]]:
    """(file, [first row, end row] or None for the whole file, at most this many documents or None)
    of each task, in reading order. A parquet file of more than about `task_rows` rows (fewer, so
    that every worker gets a share) is cut into ranges, each starting where a read batch does, at
    the batch that holds the start of a row group: a task then reads one row group beyond its own."""
    limit = _limit(snapshot, cfg.read)
    files = _read_counts(snapshot, cfg.read, limit) if limit is not None else [(p, None) for p in snapshot.files]
    groups = {p: _row_groups(p) if p.name.endswith(".parquet") else None for p, _ in files}
    total = sum(sum(g) for g in groups.values() if g)
    batch = cfg.read.batch_rows
    per_task = max(batch, min(cfg.task_rows, math.ceil(total / cfg.workers) if total else cfg.task_rows))
    plan = []
    for path, take in files:
        sizes = groups[path]
        end = None if sizes is None else sum(sizes) if take is None else min(sum(sizes), take)
        if end is None or end <= per_task:
            plan.append((str(path), None, take))
            continue
        starts = np.cumsum([0, *sizes[:-1]])
        cuts = np.unique(starts[starts < end] // batch * batch)  # starts with 0
        n = math.ceil(end / per_task)
        targets = np.arange(n) * end / n
        right = np.clip(np.searchsorted(cuts, targets), 0, len(cuts) - 1)
        left = np.clip(right - 1, 0, len(cuts) - 1)
        nearest = np.where(np.abs(cuts[left] - targets) <= np.abs(cuts[right] - targets), cuts[left], cuts[right])
        bounds = sorted({*nearest.tolist(), end})
        for r0, r1 in zip(bounds, bounds[1:]):
            plan.append((str(path), [int(r0), int(r1)], None if take is None else int(r1 - r0)))
    return plan


# --- the task -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _part_writers(paths: list[Path], schemas: list[pa.Schema]):
    """Writers of a task's parts; on an error they are closed quietly (a close on a full disk
    would fail again from ParquetWriter.__del__ and print after the error was reported)."""
    writers = []
    try:
        for path, schema in zip(paths, schemas):
            with atomic.naming_the_file(path):
                writers.append(pq.ParquetWriter(path, schema, **_PARQUET_OPTS))
        yield writers
    except BaseException:
        for w in writers:
            with contextlib.suppress(Exception):
                w.close()
            w.is_open = False
        raise
    for path, w in zip(paths, writers):
        with atomic.naming_the_file(path):
            w.close()


@recorded(lambda job: f"parts/{job['task']:05d}.done.json")
def _filter_task(job: dict) -> dict:
    """Filter one slice into parts/<task>.{kept,rejected}.parquet (one row group per read batch
    with such rows). A file that cannot be read (or a bad row under on_error="raise") ends the
    task with `error` set after the batches read before it; the merge decides what that means."""
    i, parts = job["task"], Path(job["work"]) / "parts"
    read, filters = ReadConfig(**job["read"]), FilterConfig.from_dict(job["filters"])
    names = ("kept", "rejected")
    tmp = [parts / f".{i:05d}.{name}.tmp-{os.getpid()}" for name in names]
    counts: collections.Counter = collections.Counter()
    by_filter: collections.Counter = collections.Counter()
    by_rule: collections.Counter = collections.Counter()
    error = None
    rows = tuple(job["rows"]) if job["rows"] is not None else None
    try:
        with _part_writers(tmp, [KEPT_SCHEMA, REJECTED_SCHEMA]) as (kept_w, rej_w):
            try:
                for docs in _read_slice(Path(job["file"]), rows, read, job["cap"]):
                    kept_rows, rej_rows = [], []
                    for doc in docs:
                        keep, text, filt, rule, detail = apply_filters(doc, filters)
                        doc.pop("input_error", None)
                        if keep:
                            doc["text"] = text
                            kept_rows.append(doc)
                        else:
                            if not isinstance(doc.get("text"), (str, type(None))):
                                doc["text"] = None
                            doc.update(filter=filt, rule=rule, detail=detail)
                            rej_rows.append(doc)
                            by_filter[filt] += 1
                            by_rule[f"{filt}/{rule}"] += 1
                    counts["in"] += len(docs)
                    counts["kept"] += len(kept_rows)
                    counts["rejected"] += len(rej_rows)
                    for rows_out, w, schema, path in ((kept_rows, kept_w, KEPT_SCHEMA, tmp[0]),
                                                      (rej_rows, rej_w, REJECTED_SCHEMA, tmp[1])):
                        if rows_out:
                            with atomic.naming_the_file(path):
                                w.write_table(pa.Table.from_pylist(rows_out, schema=schema))
            except SourceError as exc:
                error = str(exc)
        if counts["in"] != counts["kept"] + counts["rejected"] or (
                error is None and rows is not None and counts["in"] != rows[1] - rows[0]):
            raise AssertionError(f"filter task {i} ({job['file']} rows {rows}) lost documents: {dict(counts)}")
        for t, name in zip(tmp, names):
            os.replace(t, parts / f"{i:05d}.{name}.parquet")
    finally:
        for t in tmp:
            t.unlink(missing_ok=True)
    return {"task": i, "file": job["file"], "in": counts["in"], "kept": counts["kept"],
            "rejected": counts["rejected"], "by_filter": dict(by_filter), "by_rule": dict(by_rule), "error": error}


# --- the stage ----------------------------------------------------------------------------------

def filter_snapshot(snapshot: Snapshot, out_dir: str | os.PathLike, cfg: FilterStageConfig = FilterStageConfig(), progress=None) -> FilterResult:
    """Filter every document of `snapshot` into `out_dir/{kept,rejected}.parquet`. Skips the
    work when `out_dir` already holds a finished run of the same snapshot and config."""
    out_dir = Path(out_dir)
    # workers, tasks and executor do not change the output, so they are not part of the fingerprint
    fp = atomic.fingerprint(stage=STAGE_VERSION, snapshot=snapshot.key, files=[f.name for f in snapshot.files],
                            filters=cfg.filters.to_dict(), read=asdict(cfg.read))
    done = atomic.completed(out_dir, fp)
    if done is not None:
        return FilterResult(**done["result"])

    skipped = [SkippedFile(**entry) for entry in snapshot.skipped]
    for entry in snapshot.skipped:
        print(f"warning: skipping {entry['error']}", file=sys.stderr)
    counts = collections.Counter()
    by_filter: collections.Counter = collections.Counter()
    by_rule: collections.Counter = collections.Counter()
    plan = plan_tasks(snapshot, cfg)
    run_id = atomic.fingerprint(fp=fp, plan=plan, batch_bytes=cfg.read.batch_bytes)[:16]
    with atomic.staged_dir(out_dir) as stage, atomic.work_dir(out_dir, run_id) as work:
        (work / "parts").mkdir(exist_ok=True)
        # The limit is in the plan (each task's cap); a task reads its own slice only.
        read = {**asdict(cfg.read), "limit_docs": None}
        # A Ray worker need not share this process's working directory; locally, paths stay as
        # given, so errors name files as the user did.
        where = (lambda p: p) if cfg.executor == "local" else (lambda p: str(Path(p).absolute()))
        jobs = [{"work": str(work.absolute()), "task": i, "file": where(f), "rows": rows, "cap": cap,
                 "read": read, "filters": cfg.filters.to_dict()} for i, (f, rows, cap) in enumerate(plan)]
        kept_w = atomic.parquet_writer(stage / "kept.parquet", KEPT_SCHEMA, **_PARQUET_OPTS)
        rej_w = atomic.parquet_writer(stage / "rejected.parquet", REJECTED_SCHEMA, **_PARQUET_OPTS)
        failed: set[str] = set()
        with open_executor(cfg.executor, min(cfg.workers, len(jobs)), cfg.ray_address) as ex:
            for job, rec in zip(jobs, ex.map(_filter_task, jobs)):
                if job["file"] in failed:  # a file is read up to its first failure, as when read whole
                    continue
                for name, w in (("kept", kept_w), ("rejected", rej_w)):
                    part = pq.ParquetFile(work / "parts" / f"{job['task']:05d}.{name}.parquet")
                    for g in range(part.metadata.num_row_groups):  # a row group per read batch
                        w.write_table(part.read_row_group(g))
                counts.update({k: rec[k] for k in ("in", "kept", "rejected")})
                by_filter.update(rec["by_filter"])
                by_rule.update(rec["by_rule"])
                if progress is not None:
                    progress.update(rec["in"])
                if rec["error"] is not None:
                    if cfg.read.on_error == "raise":
                        raise SourceError(rec["error"])
                    failed.add(job["file"])
                    skipped.append(SkippedFile(str(plan[job["task"]][0]), rec["error"]))
                    print(f"warning: skipping {rec['error']}", file=sys.stderr)
        kept_w.close()
        rej_w.close()
        result = FilterResult(
            snapshot=snapshot.key,
            docs_in=counts["in"],
            kept=counts["kept"],
            rejected=counts["rejected"],
            rejected_by_filter=dict(sorted(by_filter.items())),
            rejected_by_rule=dict(sorted(by_rule.items())),
            skipped_files=[s.to_dict() for s in skipped],
            kept_path=str(out_dir / "kept.parquet"),
            rejected_path=str(out_dir / "rejected.parquet"),
            kept_sha256=atomic.sha256_file(stage / "kept.parquet"),
            rejected_sha256=atomic.sha256_file(stage / "rejected.parquet"),
            fingerprint=fp,
            tasks=len(jobs),
        )
        written = [pq.ParquetFile(stage / n).metadata.num_rows for n in ("kept.parquet", "rejected.parquet")]
        if not result.conserved or written != [result.kept, result.rejected]:
            raise AssertionError(f"filter stage lost documents: {result.to_dict()}")
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    return result
