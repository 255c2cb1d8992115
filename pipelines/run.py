"""All stages of one snapshot, chained: filter -> dedup -> tokenize -> statistics, into
`data_root/<snapshot.key>/{filtered,dedup,shards,stats}` with the dedup index shared by every
snapshot in `data_root/_dedup_index`. Conservation (documents in = kept + rejected + duplicates,
and kept = tokenized) is checked on every run and written to `report.json`.

One run per snapshot and data root at a time: a second `run_pipeline` of the same snapshot into
the same data root stops at once with LockHeld naming the holder (the CLI's exit code 2). Runs
of different snapshots go side by side; they meet only at the dedup index, where each registers its
signatures (and which cross-snapshot dedup holds from reading it to registering, so they take turns).

    hgpt data run --input ../shared/data/docs-sample/snapshot-2026-11-a --data-root /tmp/hgpt
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipelines import atomic
from pipelines.dedup import DedupConfig, DedupResult, dedup_snapshot
from pipelines.filtering import FilterResult, FilterStageConfig, filter_snapshot
from pipelines.locking import exclusive_lock
from pipelines.sources import Snapshot
from pipelines.stats import StatsConfig, StatsResult, compute_statistics
from pipelines.tokenize import TokenizeConfig, TokenizeResult, tokenize_documents

INDEX_DIR = "_dedup_index"


class ConservationError(AssertionError):
    """Documents were lost or invented between stages."""


@dataclass(frozen=True)
class PipelineConfig:
    filter: FilterStageConfig = field(default_factory=FilterStageConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)

    def on_executor(self, executor: str, ray_address: str | None = None) -> "PipelineConfig":
        """The same pipeline with every stage's tasks on `executor` ("local" or "ray", at
        `ray_address`); the outputs do not change."""
        on = {"executor": executor, "ray_address": ray_address}
        return replace(self, filter=replace(self.filter, **on), dedup=replace(self.dedup, **on),
                       tokenize=replace(self.tokenize, **on), stats=replace(self.stats, **on))


@dataclass
class PipelineResult:
    snapshot: dict
    filter: FilterResult
    dedup: DedupResult
    tokenize: TokenizeResult
    stats: StatsResult
    conservation: dict
    report_path: str

    def to_dict(self) -> dict:
        return {
            "snapshot": self.snapshot,
            "filter": self.filter.to_dict(),
            "dedup": self.dedup.to_dict(),
            "tokenize": self.tokenize.to_dict(),
            "stats": self.stats.to_dict(),
            "conservation": self.conservation,
            "report_path": self.report_path,
        }


def conservation_report(f: FilterResult, d: DedupResult, t: TokenizeResult) -> dict:
    """The document balance across stages; `ok` is False if anything does not add up."""
    duplicates = d.exact_duplicates + d.near_duplicates
    checks = {
        "filter: in == kept + rejected": f.docs_in == f.kept + f.rejected,
        "dedup: in == filter kept": d.docs_in == f.kept,
        "dedup: in == kept + duplicates": d.docs_in == d.kept + duplicates,
        "tokenize: documents == dedup kept": t.docs == d.kept,
        "total: in == kept + rejected + duplicates": f.docs_in == d.kept + f.rejected + duplicates,
    }
    return {
        "documents_in": f.docs_in,
        "kept": d.kept,
        "rejected": f.rejected,
        "duplicates": duplicates,
        "tokens": t.tokens,
        "skipped_files": f.skipped_files,
        "checks": checks,
        "ok": all(checks.values()),
    }


def run_pipeline(snapshot: Snapshot, data_root: str | os.PathLike, cfg: PipelineConfig = PipelineConfig(),
                 progress_factory=None) -> PipelineResult:
    """Run (or finish, or skip when done) every stage for `snapshot`. Raises ConservationError
    when the balance does not hold; the report is written either way."""
    root = Path(data_root) / snapshot.key
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(snapshot_lock(data_root, snapshot.key),
                        what=f"data run of snapshot {snapshot.key} in {data_root}"):
        return _run_locked(snapshot, Path(data_root), root, cfg, progress_factory)


def snapshot_lock(data_root: str | os.PathLike, key: str) -> Path:
    """The lock a run of snapshot `key` into `data_root` holds from its first stage to its report."""
    return Path(data_root) / key / ".lock"


def _run_locked(snapshot: Snapshot, data_root: Path, root: Path, cfg: PipelineConfig,
                progress_factory) -> PipelineResult:
    @contextlib.contextmanager
    def bar(name, total=None):
        b = progress_factory(name, total) if progress_factory else None
        try:
            yield b
        finally:  # also on an error, so the bar does not run into the error's line
            if b is not None:
                b.close()

    with bar("filter") as b:
        f = filter_snapshot(snapshot, root / "filtered", cfg.filter, progress=b)
    with bar("dedup", f.kept) as b:
        d = dedup_snapshot(f.kept_path, root / "dedup", data_root / INDEX_DIR, cfg.dedup,
                           snapshot_key=snapshot.key, progress=b)
    with bar("tokenize", d.kept) as b:
        t = tokenize_documents(d.kept_path, root / "shards", cfg.tokenize, progress=b)
    s = compute_statistics(d.kept_path, f.rejected_path, d.duplicates_path, t.manifest_path, root / "stats",
                           snapshot_key=snapshot.key, cfg=cfg.stats)
    conservation = conservation_report(f, d, t)
    report = root / "report.json"
    result = PipelineResult(snapshot.to_dict(), f, d, t, s, conservation, str(report))
    atomic.write_json_atomic(report, {**result.to_dict(), "config": asdict(cfg)})
    if not conservation["ok"]:
        raise ConservationError(f"conservation failed for {snapshot.key}: {conservation}")
    return result
