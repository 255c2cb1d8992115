"""Stage 1: run FineWeb's filters over a snapshot; every document ends up in exactly one of
`kept.parquet` or `rejected.parquet` (with the filter, rule and detail that rejected it).

    hgpt data filter --input ../shared/data/docs-sample/snapshot-2026-11-a --out /tmp/hgpt/filtered
"""

from __future__ import annotations

import collections
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import atomic
from pipelines.filters import FilterConfig, apply_filters
from pipelines.parallel import ordered_map
from pipelines.sources import SCHEMA, ReadConfig, SkippedFile, Snapshot, iter_documents

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
    """Filters plus how to read and how many processes run them."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    workers: int = field(default_factory=default_workers)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


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

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def conserved(self) -> bool:
        return self.docs_in == self.kept + self.rejected


def _filter_batch(args: tuple[list[dict], dict]) -> list[tuple]:
    docs, cfg_dict = args
    cfg = FilterConfig.from_dict(cfg_dict)
    return [tuple(apply_filters(d, cfg)) for d in docs]


def filter_snapshot(snapshot: Snapshot, out_dir: str | os.PathLike, cfg: FilterStageConfig = FilterStageConfig(), progress=None) -> FilterResult:
    """Filter every document of `snapshot` into `out_dir/{kept,rejected}.parquet`. Skips the
    work when `out_dir` already holds a finished run of the same snapshot and config."""
    out_dir = Path(out_dir)
    # workers do not change the output, so they are not part of the fingerprint
    fp = atomic.fingerprint(stage=STAGE_VERSION, snapshot=snapshot.key, files=[f.name for f in snapshot.files],
                            filters=cfg.filters.to_dict(), read=asdict(cfg.read))
    done = atomic.completed(out_dir, fp)
    if done is not None:
        return FilterResult(**done["result"])

    skipped: list[SkippedFile] = []
    counts = collections.Counter()
    by_filter: collections.Counter = collections.Counter()
    by_rule: collections.Counter = collections.Counter()
    cfg_dict = cfg.filters.to_dict()
    with atomic.staged_dir(out_dir) as stage:
        kept_w = atomic.parquet_writer(stage / "kept.parquet", KEPT_SCHEMA, **_PARQUET_OPTS)
        rej_w = atomic.parquet_writer(stage / "rejected.parquet", REJECTED_SCHEMA, **_PARQUET_OPTS)
        batches = iter_documents(snapshot, cfg.read, skipped)
        # The generator keeps each batch beside its pending task: decisions come back in order.
        window: collections.deque = collections.deque()

        def tasks():
            for docs in batches:
                window.append(docs)
                yield docs, cfg_dict

        for decisions in ordered_map(_filter_batch, tasks(), cfg.workers):
            docs = window.popleft()
            kept_rows, rej_rows = [], []
            for doc, (keep, text, filt, rule, detail) in zip(docs, decisions):
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
            if kept_rows:
                kept_w.write_table(pa.Table.from_pylist(kept_rows, schema=KEPT_SCHEMA))
            if rej_rows:
                rej_w.write_table(pa.Table.from_pylist(rej_rows, schema=REJECTED_SCHEMA))
            if progress is not None:
                progress.update(len(docs))
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
        )
        if not result.conserved:
            raise AssertionError(f"filter stage lost documents: {result.to_dict()}")
        atomic.write_json_atomic(stage / atomic.SUCCESS, {"fingerprint": fp, "result": result.to_dict()})
    return result
