"""Data assets, one partition per snapshot: raw -> filtered -> deduplicated -> token shards -> statistics.

Each asset is a thin call of a plain stage function of `pipelines` (which writes its output
atomically under workspace/data/<snapshot>/<stage> and skips work it already did with the same
inputs), plus metadata for the Dagster UI and an MLflow run. The stages (filter, dedup,
tokenize, statistics), run as tasks, are split into `prepare_*` and `report_*`, so the same code serves their one-step assets
(tasks on the configured executor, local or Ray) and their fanned-out graphs (assets/fanout.py:
the tasks as Dagster steps).
"""


import functools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from pipelines import atomic
from pipelines.orchestration import snapshots as registry
from pipelines.orchestration.configs import (FilterAssetConfig, StageConfig, StatsAssetConfig,
                                             TaskStageConfig, TokenizeAssetConfig)
from pipelines.orchestration.metadata import counts_table, json_md, md_table, png_markdown
from pipelines.orchestration.mlflow_resource import MLflowTracking, log_table_artifact
from pipelines.orchestration.resources import RayCluster, WorkspaceResource

GROUP = "data"


def stage_dir(workspace: WorkspaceResource, key: str, stage: str) -> Path:
    return workspace.ws().snapshot_dir(key) / stage


def _upstream_kept(workspace: WorkspaceResource, key: str, stage: str, asset_name: str) -> Path:
    """The documents an upstream stage kept; a clear error when it has not run for `key`."""
    kept = stage_dir(workspace, key, stage) / "kept.parquet"
    if not kept.exists():
        raise FileNotFoundError(f"{kept}: materialize {asset_name}[{key}] first")
    return kept


def _fresh(out: Path, force: bool) -> None:
    if force and out.exists():
        shutil.rmtree(out)


def _executor_settings(config: TaskStageConfig, ray: RayCluster | None) -> dict:
    """The stage config's executor fields: Ray's address comes from the resource, which joins
    the cluster only when the stage runs there (None: the stage's tasks are Dagster steps)."""
    executor = config.executor_name()
    if executor == "ray" and ray is None:
        raise ValueError("executor: ray does not apply where the stage's tasks run as Dagster steps "
                         "(fan-out); use executor: local")
    return {"executor": executor, "ray_address": ray.connect() if executor == "ray" else None}


def _count_rows(path: str | Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


@asset(
    partitions_def=registry.SNAPSHOTS,
    group_name=GROUP,
    kinds={"parquet"},
    code_version="raw-1",
    description="The documents of one snapshot as they arrived (local FineWeb-schema files or a "
    "FineWeb dump from the hub): files, document and token counts.",
    check_specs=[
        AssetCheckSpec("has_documents", asset="raw_documents",
                       description="the snapshot holds at least one document"),
        AssetCheckSpec("files_have_text", asset="raw_documents",
                       description="every parquet file has a string `text` column (FineWeb's "
                       "schema; JSON lines files are checked row by row when read)"),
    ],
)
def raw_documents(context: AssetExecutionContext, workspace: WorkspaceResource,
                  mlflow: MLflowTracking) -> MaterializeResult:
    key = context.partition_key
    snapshot = registry.resolve(workspace.ws(), key, workspace.inbox_dir())
    with mlflow.asset_run(context, experiment="data") as run:
        files, docs, tokens, size = [], 0, 0, 0
        schema_problems: list[str] = []
        for path in snapshot.files:
            path = Path(path)
            if path.name.endswith(".parquet"):
                pf = pq.ParquetFile(path)
                text = pf.schema_arrow.field("text") if "text" in pf.schema_arrow.names else None
                if text is None or not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
                    schema_problems.append(f"{path.name}: no string `text` column "
                                           f"(columns: {', '.join(pf.schema_arrow.names)})")
                n = pf.metadata.num_rows
                t = 0
                if "token_count" in pf.schema_arrow.names:
                    col = pq.read_table(path, columns=["token_count"])["token_count"]
                    t = int(sum(v for v in col.to_pylist() if v is not None))
            else:
                from pipelines.sources import ReadConfig, iter_file_batches

                n = t = 0
                for batch in iter_file_batches(path, ReadConfig()):
                    n += len(batch)
                    t += sum(d.get("token_count") or 0 for d in batch)
            files.append({"file": path.name, "documents": n, "token_count": t, "bytes": path.stat().st_size})
            docs, tokens, size = docs + n, tokens + t, size + path.stat().st_size
        out = stage_dir(workspace, key, "raw")
        out.mkdir(parents=True, exist_ok=True)
        summary = {"snapshot": snapshot.to_dict(), "documents": docs, "token_count": tokens,
                   "bytes": size, "files": files}
        (out / "snapshot.json").write_text(json.dumps(summary, indent=2) + "\n")
        metadata = {
            "snapshot_key": key,
            "kind": snapshot.kind,
            # A hub snapshot's commit sha; a local one has none (its key holds its files' hash).
            **({"revision": snapshot.revision} if snapshot.revision else {}),
            "documents": docs,
            "token_count (as recorded in the files)": tokens,
            "bytes": size,
            "files": MetadataValue.md(md_table(files)),
            "path": MetadataValue.path(str(snapshot.root or out)),
        }
        if run is not None:
            # A hub snapshot's revision is the commit sha its files were downloaded at.
            run.log_params({"snapshot_key": key, "kind": snapshot.kind, "root": str(snapshot.root),
                            **({"revision": snapshot.revision} if snapshot.revision else {})})
            run.log_metrics({"documents": docs, "token_count": tokens, "bytes": size})
            log_table_artifact(run, files, "files.json")
            metadata.update(run.dagster_metadata())
    checks = [
        AssetCheckResult(check_name="has_documents", passed=docs > 0, severity=AssetCheckSeverity.ERROR,
                         metadata={"documents": docs, "files": len(files)}),
        AssetCheckResult(check_name="files_have_text", passed=not schema_problems,
                         severity=AssetCheckSeverity.ERROR,
                         metadata={"problems": MetadataValue.md(
                             "\n".join(f"- {p}" for p in schema_problems) or "none"),
                             "files": len(files)}),
    ]
    return MaterializeResult(metadata=metadata, check_results=checks)


@dataclass(frozen=True)
class PreparedStage:
    """A task stage of one partition, configured and ready: `run()` runs it (or returns the
    result of an identical earlier run); `input` is the upstream file it reads, if one."""

    cfg: Any
    out: Path
    run: Callable[[], Any]
    input: Path | None = None


def _in_one_step(prepare, report, context, config, workspace, mlflow, ray) -> MaterializeResult:
    """A task stage as one asset step: its tasks run on the configured executor, from this step."""
    stage = prepare(context.partition_key, config, workspace, ray)
    metadata, checks = report(context, config, mlflow, stage, stage.run)
    return MaterializeResult(metadata=metadata, check_results=checks)


FILTER_ASSET = dict(
    partitions_def=registry.SNAPSHOTS,
    group_name=GROUP,
    kinds={"parquet"},
    code_version="filter-1",
    description="FineWeb's quality filters (Gopher repetition and quality, C4, FineWeb's own) over "
    "one snapshot: kept.parquet and rejected.parquet with the rule that rejected each document.",
    check_specs=[AssetCheckSpec("documents_conserved", asset="filtered_documents",
                                description="kept + rejected = documents read")],
)


def prepare_filter(key: str, config: FilterAssetConfig, workspace: WorkspaceResource,
                   ray: RayCluster | None) -> PreparedStage:
    from pipelines.filtering import FilterStageConfig, filter_snapshot
    from pipelines.filters import FilterConfig
    from pipelines.sources import ReadConfig

    snapshot = registry.resolve(workspace.ws(), key, workspace.inbox_dir())
    filters = FilterConfig()
    overrides = json.loads(config.filter_overrides_json or "{}")
    if overrides:
        merged = filters.to_dict()
        for name, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **value}
            else:
                merged[name] = value
        filters = FilterConfig.from_dict(merged)
    cfg = FilterStageConfig(filters=filters, read=ReadConfig(limit_docs=config.limit_docs),
                            **_executor_settings(config, ray))
    out = stage_dir(workspace, key, "filtered")
    _fresh(out, config.force)
    return PreparedStage(cfg, out, functools.partial(filter_snapshot, snapshot, out, cfg))


def report_filter(context, config: FilterAssetConfig, mlflow: MLflowTracking, stage: PreparedStage,
                  run_stage: Callable[[], Any]) -> tuple[dict, list[AssetCheckResult]]:
    filters, out = stage.cfg.filters, stage.out
    with mlflow.asset_run(context, experiment="data") as run:
        result = run_stage()
        kept_rows, rejected_rows = _count_rows(result.kept_path), _count_rows(result.rejected_path)
        conserved = result.docs_in == kept_rows + rejected_rows
        metadata = {
            "documents_in": result.docs_in,
            "kept": result.kept,
            "rejected": result.rejected,
            "kept_fraction": round(result.kept / max(1, result.docs_in), 4),
            "rejected_by_filter": MetadataValue.md(counts_table(result.rejected_by_filter, "filter")),
            "rejected_by_rule": MetadataValue.md(counts_table(result.rejected_by_rule, "rule")),
            "kept_sha256": result.kept_sha256,
            "rejected_sha256": result.rejected_sha256,
            "filter_config": json_md(filters.to_dict()),
            "filter_config_sha256": _sha(filters.to_dict()),
            "tasks": result.tasks,
            "executor": stage.cfg.executor,
            "skipped_files": len(result.skipped_files),
            "path": MetadataValue.path(str(out)),
        }
        if run is not None:
            run.log_params({"filters": filters.to_dict(), "limit_docs": config.limit_docs})
            run.log_metrics({"documents_in": result.docs_in, "kept": result.kept,
                             "rejected": result.rejected, **{f"rejected.{k}": v for k, v in
                                                             result.rejected_by_filter.items()}})
            log_table_artifact(run, [{"rule": k, "documents": v} for k, v in
                                     result.rejected_by_rule.items()], "rejections_by_rule.json")
            run.log_dict(result.to_dict(), "filter_result.json")
            metadata.update(run.dagster_metadata())
    check = AssetCheckResult(
        check_name="documents_conserved",
        passed=bool(conserved),
        severity=AssetCheckSeverity.ERROR,
        metadata={"documents_in": result.docs_in, "kept_rows": kept_rows, "rejected_rows": rejected_rows},
    )
    return metadata, [check]


@asset(deps=[raw_documents], **FILTER_ASSET)
def filtered_documents(context: AssetExecutionContext, config: FilterAssetConfig,
                       workspace: WorkspaceResource, mlflow: MLflowTracking, ray: RayCluster) -> MaterializeResult:
    return _in_one_step(prepare_filter, report_filter, context, config, workspace, mlflow, ray)


class DedupAssetConfig(StageConfig, TaskStageConfig):
    """The dedup stage of one snapshot."""

    cross_snapshot: bool = Field(default=False, description="Also remove documents duplicating a snapshot "
                                 "deduplicated before this one (default: this snapshot alone, as FineWeb).")
    workers: int = Field(default=1, description="Processes for the dedup tasks (the output does not depend on it).")


DEDUP_ASSET = dict(
    partitions_def=registry.SNAPSHOTS,
    group_name=GROUP,
    kinds={"parquet"},
    code_version="dedup-2",
    description="Exact and MinHash near-duplicate removal within the snapshot (FineWeb's choice); with "
    "cross_snapshot, also against every snapshot deduplicated before it (the index under "
    "workspace/data/dedup-index, where every snapshot registers its signatures).",
    check_specs=[AssetCheckSpec("documents_conserved", asset="deduplicated_documents",
                                description="kept + exact + near duplicates = documents in")],
)


def prepare_dedup(key: str, config: DedupAssetConfig, workspace: WorkspaceResource,
                  ray: RayCluster | None) -> PreparedStage:
    from pipelines.dedup import DedupConfig, dedup_snapshot

    kept = _upstream_kept(workspace, key, "filtered", "filtered_documents")
    out = stage_dir(workspace, key, "dedup")
    _fresh(out, config.force)
    cfg = DedupConfig(cross_snapshot=config.cross_snapshot, workers=config.workers,
                      **_executor_settings(config, ray))
    run = functools.partial(dedup_snapshot, kept, out, workspace.ws().dedup_index, cfg, snapshot_key=key)
    return PreparedStage(cfg, out, run, input=kept)


def report_dedup(context, config: DedupAssetConfig, mlflow: MLflowTracking, stage: PreparedStage,
                 run_stage: Callable[[], Any]) -> tuple[dict, list[AssetCheckResult]]:
    cfg, kept = stage.cfg, stage.input
    with mlflow.asset_run(context, experiment="data") as run:
        result = run_stage()
        kept_rows, dup_rows = _count_rows(result.kept_path), _count_rows(result.duplicates_path)
        metadata = {
            "documents_in": result.docs_in,
            "kept": result.kept,
            "exact_duplicates": result.exact_duplicates,
            "near_duplicates": result.near_duplicates,
            "kept_sha256": result.kept_sha256,
            "duplicates_sha256": atomic.sha256_file(result.duplicates_path),
            "tasks": result.tasks,
            "executor": cfg.executor,
            "dedup_config": json_md(cfg.output_fields()),
            "path": MetadataValue.path(str(stage.out)),
        }
        if run is not None:
            run.log_params(asdict(cfg))
            run.log_metrics({"documents_in": result.docs_in, "kept": result.kept,
                             "exact_duplicates": result.exact_duplicates,
                             "near_duplicates": result.near_duplicates})
            run.log_dict(result.to_dict(), "dedup_result.json")
            metadata.update(run.dagster_metadata())
    check = AssetCheckResult(
        check_name="documents_conserved",
        passed=result.docs_in == kept_rows + dup_rows and result.docs_in == _count_rows(kept),
        severity=AssetCheckSeverity.ERROR,
        metadata={"documents_in": result.docs_in, "kept_rows": kept_rows, "duplicate_rows": dup_rows,
                  "filtered_kept_rows": _count_rows(kept)},
    )
    return metadata, [check]


@asset(deps=[filtered_documents], **DEDUP_ASSET)
def deduplicated_documents(context: AssetExecutionContext, config: DedupAssetConfig,
                           workspace: WorkspaceResource, mlflow: MLflowTracking, ray: RayCluster) -> MaterializeResult:
    return _in_one_step(prepare_dedup, report_dedup, context, config, workspace, mlflow, ray)


def _sha(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def verify_shards(out_dir: Path, manifest_path: Path) -> tuple[bool, list[str]]:
    """Every shard's llm.c header must agree with its size and with the manifest's token count."""
    from pipelines.shard_format import ShardError, read_header

    problems: list[str] = []
    manifest = pq.read_table(manifest_path).to_pylist()
    shard_rows = _manifest_shard_counts(manifest)
    on_disk = sorted(p.name for p in out_dir.glob("*.bin"))
    if sorted(shard_rows) != on_disk:
        problems.append(f"manifest lists {sorted(shard_rows)}, directory has {on_disk}")
    for name, expected in sorted(shard_rows.items()):
        try:
            n = read_header(out_dir / name)
        except (ShardError, OSError) as exc:
            problems.append(str(exc))
            continue
        if expected is not None and n != expected:
            problems.append(f"{name}: header says {n} tokens, manifest {expected}")
    return not problems, problems


def _manifest_shard_counts(manifest: list[dict]) -> dict[str, int | None]:
    """{shard file: tokens} from the manifest, whether it has one row per shard or per document."""
    if not manifest:
        return {}
    cols = manifest[0].keys()
    shard_col = next((c for c in ("shard", "file", "shard_file", "path", "name") if c in cols), None)
    tok_col = next((c for c in ("n_tokens", "tokens", "token_count", "num_tokens") if c in cols), None)
    if shard_col is None:
        raise ValueError(f"manifest has no shard column (columns: {sorted(cols)})")
    counts: dict[str, int | None] = {}
    for row in manifest:
        name = Path(str(row[shard_col])).name
        if tok_col is None:
            counts[name] = None
        else:
            counts[name] = (counts.get(name) or 0) + int(row[tok_col])
    return counts


TOKENIZE_ASSET = dict(
    partitions_def=registry.SNAPSHOTS,
    group_name=GROUP,
    kinds={"numpy"},
    code_version="tokenize-1",
    description="GPT-2 BPE token shards in llm.c's .bin format (val_000000.bin first, then "
    "train_*.bin) with manifest.parquet; the content hash identifies the exact tokens.",
    check_specs=[AssetCheckSpec("shard_headers_match_manifest", asset="token_shards",
                                description="every shard header is valid and agrees with manifest.parquet")],
)


def prepare_tokenize(key: str, config: TokenizeAssetConfig, workspace: WorkspaceResource,
                     ray: RayCluster | None) -> PreparedStage:
    from dataclasses import replace

    from pipelines.tokenize import TokenizeConfig, tokenize_documents

    docs = _upstream_kept(workspace, key, "dedup", "deduplicated_documents")
    out = stage_dir(workspace, key, "shards")
    _fresh(out, config.force)
    cfg = replace(TokenizeConfig(**_executor_settings(config, ray)), **config.tokenize_overrides())
    return PreparedStage(cfg, out, functools.partial(tokenize_documents, docs, out, cfg), input=docs)


def report_tokenize(context, config: TokenizeAssetConfig, mlflow: MLflowTracking, stage: PreparedStage,
                    run_stage: Callable[[], Any]) -> tuple[dict, list[AssetCheckResult]]:
    cfg, docs, out = stage.cfg, stage.input, stage.out
    with mlflow.asset_run(context, experiment="data") as run:
        result = run_stage()
        manifest = Path(result.manifest_path)
        ok, problems = verify_shards(out, manifest)
        docs_in = _count_rows(docs)
        if result.docs != docs_in:
            ok = False
            problems.append(f"{result.docs} documents tokenized, {docs_in} in the deduplicated input")
        shards = [Path(p).name for p in result.shards]
        metadata = {
            "content_hash": result.content_hash,
            "documents": result.docs,
            "val_documents": result.val_docs,
            "train_documents": result.train_docs,
            "val_tokens": result.val_tokens,
            "train_tokens": result.train_tokens,
            "shards": len(shards),
            "shard_files": MetadataValue.md(md_table(
                [{"shard": s, "tokens": _header_tokens(out / s)} for s in shards])),
            "tokenize_config": json_md(cfg.output_fields()),
            "val_note": result.val_note or "none",  # why validation holds fewer than val_min_tokens
            "tasks": result.tasks,
            "executor": cfg.executor,
            "manifest": MetadataValue.path(str(manifest)),
            "path": MetadataValue.path(str(out)),
        }
        if run is not None:
            run.log_params({"val_fraction": cfg.val_fraction, "val_min_tokens": cfg.val_min_tokens,
                            "val_max_share": cfg.val_max_share, "shard_tokens": cfg.shard_tokens})
            run.log_metrics({"documents": result.docs, "val_tokens": result.val_tokens,
                             "train_tokens": result.train_tokens, "shards": len(shards)})
            run.set_tags({"content_hash": result.content_hash})
            run.log_dict(result.to_dict(), "tokenize_result.json")
            run.log_artifact(manifest)
            metadata.update(run.dagster_metadata())
    check = AssetCheckResult(
        check_name="shard_headers_match_manifest",
        passed=ok,
        severity=AssetCheckSeverity.ERROR,
        metadata={"problems": MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
                  "shards": len(shards)},
    )
    return metadata, [check]


@asset(deps=[deduplicated_documents], **TOKENIZE_ASSET)
def token_shards(context: AssetExecutionContext, config: TokenizeAssetConfig,
                 workspace: WorkspaceResource, mlflow: MLflowTracking, ray: RayCluster) -> MaterializeResult:
    return _in_one_step(prepare_tokenize, report_tokenize, context, config, workspace, mlflow, ray)


def _header_tokens(path: Path) -> int:
    from pipelines.shard_format import read_header

    return read_header(path)


STATS_ASSET = dict(
    partitions_def=registry.SNAPSHOTS,
    group_name=GROUP,
    kinds={"duckdb"},
    code_version="stats-1",
    description="Dataset statistics computed with DuckDB over the stage outputs: counts, length and "
    "token distributions, rejection reasons, as parquet/JSON tables and PNG plots.",
)


def prepare_stats(key: str, config: StatsAssetConfig, workspace: WorkspaceResource,
                  ray: RayCluster | None) -> PreparedStage:
    from pipelines.stats import StatsConfig, compute_statistics

    base = workspace.ws().snapshot_dir(key)
    out = base / "stats"
    _fresh(out, config.force)
    cfg = StatsConfig(**_executor_settings(config, ray))
    run = functools.partial(
        compute_statistics, base / "dedup" / "kept.parquet", base / "filtered" / "rejected.parquet",
        base / "dedup" / "duplicates.parquet", base / "shards" / "manifest.parquet", out,
        snapshot_key=key, cfg=cfg)
    return PreparedStage(cfg, out, run)


def report_stats(context, config: StatsAssetConfig, mlflow: MLflowTracking, stage: PreparedStage,
                 run_stage: Callable[[], Any]) -> tuple[dict, list]:
    out = stage.out
    with mlflow.asset_run(context, experiment="data") as run:
        result = run_stage()
        summary = {k: v for k, v in result.summary.items() if k != "quantile_levels"}
        tables = json.loads(Path(result.stats_json).read_text())
        metadata = {
            **{k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            "rejections": MetadataValue.md(md_table(tables.get("rejections", []))),
            "per_split": MetadataValue.md(md_table(tables.get("per_split", []))),
            "top_domains": MetadataValue.md(md_table(tables.get("top_domains", []))),
            "stats_json": MetadataValue.path(result.stats_json),
            "tasks": result.tasks,
            "executor": stage.cfg.executor,
            "path": MetadataValue.path(str(out)),
        }
        if result.plots:
            metadata["plots"] = png_markdown(result.plots, f"Snapshot {context.partition_key}")
        if run is not None:
            run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            run.log_artifacts(out, "statistics")
            metadata.update(run.dagster_metadata())
    return metadata, []


@asset(deps=[filtered_documents, deduplicated_documents, token_shards], **STATS_ASSET)
def dataset_statistics(context: AssetExecutionContext, config: StatsAssetConfig,
                       workspace: WorkspaceResource, mlflow: MLflowTracking, ray: RayCluster) -> MaterializeResult:
    return _in_one_step(prepare_stats, report_stats, context, config, workspace, mlflow, ray)


DATA_ASSETS = [raw_documents, filtered_documents, deduplicated_documents, token_shards, dataset_statistics]


def fanned_out_data_assets() -> list:
    """DATA_ASSETS with filter, dedup, tokenize and statistics each a graph of Dagster steps over its tasks (same keys,
    config, checks and metadata); their tasks then run where Dagster's executor runs steps, so
    their config's `executor` must stay local."""
    from pipelines.orchestration.assets.fanout import TaskStage, fanned_out

    filtered = fanned_out(TaskStage(
        name="filtered_documents", short="filter", task_lists=("filter",), config=FilterAssetConfig,
        prepare=functools.partial(prepare_filter, ray=None), report=report_filter,
        upstream=("raw_documents",), asset=FILTER_ASSET))
    deduplicated = fanned_out(TaskStage(
        name="deduplicated_documents", short="dedup", task_lists=("signatures", "matching", "removal"),
        config=DedupAssetConfig, prepare=functools.partial(prepare_dedup, ray=None), report=report_dedup,
        upstream=("filtered_documents",), asset=DEDUP_ASSET))
    shards = fanned_out(TaskStage(
        name="token_shards", short="tokenize", task_lists=("tokens",), config=TokenizeAssetConfig,
        prepare=functools.partial(prepare_tokenize, ray=None), report=report_tokenize,
        upstream=("deduplicated_documents",), asset=TOKENIZE_ASSET))
    statistics = fanned_out(TaskStage(
        name="dataset_statistics", short="stats", task_lists=("manifest", "rows", "kept"), config=StatsAssetConfig,
        prepare=functools.partial(prepare_stats, ray=None), report=report_stats,
        upstream=("filtered_documents", "deduplicated_documents", "token_shards"), asset=STATS_ASSET))
    return [raw_documents, filtered, deduplicated, shards, statistics]
