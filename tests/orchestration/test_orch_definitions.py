"""The code location loads, and its asset graph has the shape the project promises."""

from __future__ import annotations

import subprocess
import sys

from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus, DynamicPartitionsDefinition

from pipelines.orchestration.paths import REPO_ROOT

DATA = ["raw_documents", "filtered_documents", "deduplicated_documents", "token_shards", "dataset_statistics"]
EDGES = {
    ("raw_documents", "filtered_documents"),
    ("filtered_documents", "deduplicated_documents"),
    ("deduplicated_documents", "token_shards"),
    ("filtered_documents", "dataset_statistics"),
    ("deduplicated_documents", "dataset_statistics"),
    ("token_shards", "dataset_statistics"),
    ("token_shards", "trained_checkpoint"),
    ("trained_checkpoint", "evaluation"),
    ("trained_checkpoint", "samples"),
}


def test_asset_graph_keys_edges_groups():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {*DATA, "trained_checkpoint", "evaluation", "samples"}
    edges = {(p.to_user_string(), k.to_user_string())
             for k in graph.get_all_asset_keys() for p in graph.get(k).parent_keys}
    assert edges == EDGES
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert {groups[k] for k in DATA} == {"data"}
    assert groups["trained_checkpoint"] == "training"
    assert groups["evaluation"] == groups["samples"] == "evaluation"
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        if key.to_user_string() in DATA:
            assert isinstance(node.partitions_def, DynamicPartitionsDefinition)
            assert node.partitions_def.name == "snapshots"
        else:
            assert node.partitions_def is None
    assert graph.get(AssetKey("trained_checkpoint")).pools == {"gpu"}
    assert graph.get(AssetKey("trained_checkpoint")).automation_condition.get_label() == \
        "new shards since the last training"


def test_checks_jobs_schedules_sensors():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    checks = {c.to_user_string() for c in graph.asset_check_keys}
    assert checks == {
        "raw_documents:has_documents",
        "raw_documents:files_have_text",
        "trained_checkpoint:final_loss_finite",
        "trained_checkpoint:checkpoint_verifies",
        "filtered_documents:documents_conserved",
        "deduplicated_documents:documents_conserved",
        "token_shards:shard_headers_match_manifest",
        "evaluation:val_loss_below_unigram_baseline",
        "samples:samples_non_empty",
    }
    for name in ("process_snapshot", "retrain", "retrain_gpt2"):
        defs.resolve_job_def(name)
    schedule = defs.resolve_schedule_def("weekly_retraining")
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("snapshot_inbox_sensor").default_status == DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("fineweb_hub_sensor").default_status == DefaultSensorStatus.STOPPED
    assert defs.resolve_sensor_def("retrain_on_new_shards").default_status == DefaultSensorStatus.STOPPED


def test_presets_resolve_to_training_configs():
    from pipelines.orchestration.configs import TrainingConfig

    tiny = TrainingConfig(preset="tiny", max_steps=3).train_config(["d"], "o")
    assert (tiny.model, tiny.max_steps, tiny.precision) == ("tiny", 3, "fp32")
    gpt2 = TrainingConfig(preset="gpt2").train_config(["d"], "o")
    assert (gpt2.model, gpt2.batch_tokens, gpt2.seq_len) == ("gpt2", 524_288, 1024)
    assert gpt2.log_every == 10  # Dagster's default on top of the preset: one event per 10 steps


def test_instance_config_is_persistent_sqlite_with_gpu_pool(instance):
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    assert isinstance(instance.run_storage, SqliteRunStorage)
    assert not instance.telemetry_enabled
    assert instance.event_log_storage.get_concurrency_info("gpu").limit == 1


def test_dagster_definitions_validate(workspace_root):
    import os

    env = {**os.environ, "DAGSTER_HOME": str(workspace_root / "dagster")}
    (workspace_root / "dagster").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w",
                           str(REPO_ROOT / "workspace.yaml")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
