"""Dagster fans a snapshot's filter, dedup, tokenize and statistics stages out over their tasks: a
real instance (SQLite, in the module's workspace) runs raw -> filtered -> deduplicated ->
token_shards -> dataset_statistics with the multiprocess executor, with steps over the stages' tasks. A task step that fails (its part cannot be renamed into place)
fails the run with the other tasks' completion records written and its own not; re-executed from
failure, only that step and the ones after it run, and every output is byte-identical to the
in-process stages'."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STAGES = {"filtered": ("kept.parquet", "rejected.parquet"), "dedup": ("kept.parquet", "duplicates.parquet")}
DEDUP_CONFIG = {"workers": 2}
SHARD_TOKENS = 4096
# One filter task a step (so a failed task is redone alone); dedup's task lists (2 signature
# tasks, 15 buckets, 2 removal tasks) in at most 2 steps each.
RUN_CONFIG = {"ops": {"filtered_documents": {"config": {"max_task_steps": 3}},
                      "deduplicated_documents": {"config": {**DEDUP_CONFIG, "max_task_steps": 2}},
                      "token_shards": {"config": {"shard_tokens": SHARD_TOKENS}}}}


def fanout_job():
    """The job the run's step processes load (reconstructable: a module-level function); the
    workspace is the test's, through HGPT_WORKSPACE."""
    from dagster import Definitions, define_asset_job

    from pipelines.definitions import build_definitions
    from pipelines.orchestration.mlflow_resource import MLflowTracking

    stages = define_asset_job("stages", selection=["raw_documents", "filtered_documents", "deduplicated_documents",
                                                   "token_shards", "dataset_statistics"])
    defs = build_definitions({"mlflow": MLflowTracking(enabled=False)}, fanout=True)
    return Definitions.merge(defs, Definitions(jobs=[stages])).resolve_job_def("stages")


def _records(work_root: Path) -> list[str]:
    return sorted(p.relative_to(work_root).as_posix() for p in work_root.rglob("*.done.json"))


def test_stage_tasks_run_as_steps_and_a_failed_one_is_redone_alone(workspace_root, instance, tmp_path):
    from dagster import DagsterEventType, ReexecutionOptions, execute_job
    from dagster._core.definitions.reconstruct import ReconstructableJob

    from pipelines.dedup import DedupConfig, dedup_snapshot
    from pipelines.filtering import FilterStageConfig, filter_snapshot
    from pipelines.orchestration.assets.data import FilterAssetConfig, prepare_filter
    from pipelines.orchestration.assets.fanout import planned_tasks
    from pipelines.orchestration.paths import Workspace
    from pipelines.orchestration.resources import WorkspaceResource
    from pipelines.sources import local_snapshot
    from pipelines.stats import StatsConfig, compute_statistics
    from pipelines.tokenize import TokenizeConfig, tokenize_documents
    from stage_snapshot import register_snapshot, write_snapshot

    snapshot_dir = write_snapshot(tmp_path / "inbox" / "snap")
    key = register_snapshot(workspace_root, instance, snapshot_dir)
    data = Workspace(workspace_root).snapshot_dir(key)

    # The work directory the filter's tasks will use (the plan step computes the same), with the
    # final name of task 1's kept part taken by a directory: that task's rename fails.
    plan = planned_tasks(prepare_filter(key, FilterAssetConfig(), WorkspaceResource(), None).run, 0)
    assert [t["task"] for t in plan] == ["pipelines.filtering:_filter_task"] * 3
    blocker = Path(plan[1]["job"]["work"]) / "parts" / "00001.kept.parquet"
    blocker.mkdir(parents=True)

    # The step processes rebuild the job from this file (pytest's module name is not importable there).
    job = ReconstructableJob.for_file(__file__, "fanout_job")
    with execute_job(job, instance=instance, run_config=RUN_CONFIG,
                     tags={"dagster/partition": key}, raise_on_error=False) as first:
        assert not first.success
        failed = {e.step_key for e in first.all_events if e.event_type == DagsterEventType.STEP_FAILURE}
        assert failed == {"filtered_documents.filter_filter_task[t00001]"}
        first_id = first.run_id
    work_root = blocker.parents[2]
    run_dir = blocker.parents[1].name
    assert _records(work_root) == [f"{run_dir}/parts/00000.done.json", f"{run_dir}/parts/00002.done.json"]

    blocker.rmdir()
    options = ReexecutionOptions.from_failure(first_id, instance)
    with execute_job(job, instance=instance, reexecution_options=options, run_config=RUN_CONFIG,
                     tags={"dagster/partition": key}, raise_on_error=False) as second:
        assert second.success
        ran = {e.step_key for e in second.all_events if e.event_type == DagsterEventType.STEP_SUCCESS}
        materialized = {m.asset_key.to_user_string(): m.metadata
                        for m in (e.materialization for e in second.get_asset_materialization_events())}
        checks = {c.asset_key.to_user_string(): c.passed for c in second.get_asset_check_evaluations()}
    # Only the failed task's step and the steps after it ran again.
    assert "raw_documents" not in ran
    assert {s for s in ran if s.startswith("filtered_documents.")} == {
        "filtered_documents.filter_filter_task[t00001]", "filtered_documents.filter_finish"}
    dedup_steps = sorted(s.split(".", 1)[1] for s in ran if s.startswith("deduplicated_documents.") and "[" in s)
    assert [s.split("[")[0] for s in dedup_steps] == ["dedup_matching_task"] * 2 + ["dedup_removal_task"] * 2 + \
        ["dedup_signatures_task"] * 2
    assert any(s.startswith("token_shards.tokenize_tokens_task[") for s in ran)
    assert any(s.startswith("dataset_statistics.stats_kept_task[") for s in ran)
    assert set(materialized) == {"filtered_documents", "deduplicated_documents", "token_shards", "dataset_statistics"}
    assert checks == {"filtered_documents": True, "deduplicated_documents": True, "token_shards": True}
    assert materialized["filtered_documents"]["tasks"].value == 3
    assert materialized["deduplicated_documents"]["exact_duplicates"].value > 0

    # Byte-identical to the stages run in one process with the same settings.
    snapshot = local_snapshot(snapshot_dir)
    ref = tmp_path / "in-process"
    filtered = filter_snapshot(snapshot, ref / "filtered", FilterStageConfig(workers=1))
    dedup = dedup_snapshot(filtered.kept_path, ref / "dedup", ref / "dedup-index", DedupConfig(**DEDUP_CONFIG),
                           snapshot_key=key)
    tokenize_documents(dedup.kept_path, ref / "shards", TokenizeConfig(shard_tokens=SHARD_TOKENS))
    # Statistics of the same input files (the ones the run wrote, identical to the above).
    compute_statistics(data / "dedup" / "kept.parquet", data / "filtered" / "rejected.parquet",
                       data / "dedup" / "duplicates.parquet", data / "shards" / "manifest.parquet", ref / "stats",
                       key, StatsConfig())
    statistics = sorted(p.name for p in (ref / "stats").iterdir() if p.name != "_SUCCESS.json")
    shards = sorted(p.name for p in (ref / "shards").iterdir() if p.suffix in (".bin", ".parquet"))
    assert "manifest.parquet" in shards and len(shards) > 2
    for stage, names in {**STAGES, "shards": shards, "stats": statistics}.items():
        for name in names:
            assert (data / stage / name).read_bytes() == (ref / stage / name).read_bytes(), f"{stage}/{name}"
    assert materialized["filtered_documents"]["kept_sha256"].value == filtered.kept_sha256
    assert not work_root.exists()  # the stage removed its work directory once complete
