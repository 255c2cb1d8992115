"""The whole asset graph, in process, on a small local snapshot: data -> training (Pipes +
torchrun) -> evaluation and samples. One materialization of everything is shared by the tests
of this module; MLflow tracks into the module's own SQLite store.

The snapshot is the embedded default (docstrings of the installed packages) capped at 1.5M
characters; training is the tiny preset shrunk to a 2-layer, 128-wide model for 60 steps, which
is enough to beat the unigram baseline.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from dagster import AssetKey

pytestmark = pytest.mark.slow

DATA = ["raw_documents", "filtered_documents", "deduplicated_documents", "token_shards", "dataset_statistics"]
TRAIN_OVERRIDES = dict(max_steps=60, warmup_steps=5, max_lr=3e-3, min_lr=3e-4, seq_len=128,
                       batch_tokens=1024, micro_batch=8, eval_every=30, checkpoint_every=20,
                       eval_tokens=4096, log_every=5, n_layer=2, n_embd=128, n_head=2)


@pytest.fixture(scope="module")
def materialized(workspace_root, instance):
    from pipelines.definitions import build_definitions
    from pipelines.orchestration import snapshots as registry
    from pipelines.orchestration.configs import preset_run_config
    from pipelines.orchestration.default_snapshot import build_default_snapshot
    from pipelines.orchestration.mlflow_resource import MLflowTracking
    from pipelines.orchestration.paths import Workspace
    from pipelines.orchestration.resources import WorkspaceResource
    from pipelines.sources import local_snapshot

    ws = Workspace(workspace_root)
    snapshot = local_snapshot(build_default_snapshot(ws.inbox / "docs", max_chars=1_500_000))
    registry.register(ws, snapshot)
    instance.add_dynamic_partitions("snapshots", [snapshot.key])
    tracking = f"sqlite:///{workspace_root}/mlflow/mlflow.db"
    defs = build_definitions({"workspace": WorkspaceResource(root=str(workspace_root)),
                              "mlflow": MLflowTracking(tracking_uri=tracking)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = defs.resolve_job_def("process_snapshot").execute_in_process(
            instance=instance, partition_key=snapshot.key,
            run_config={"ops": {"token_shards": {"config": {"val_fraction": 0.05}}}})
        run_config = preset_run_config("tiny", **TRAIN_OVERRIDES)
        run_config["ops"]["evaluation"] = {"config": {"max_tokens": 4096}}
        train = defs.resolve_job_def("retrain").execute_in_process(instance=instance, run_config=run_config)
    return {"snapshot": snapshot, "data": data, "train": train, "defs": defs, "tracking": tracking,
            "ws": ws, "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}


def _materializations(result) -> dict:
    return {e.materialization.asset_key.to_user_string(): e.materialization
            for e in result.get_asset_materialization_events()}


def test_every_asset_and_check_succeeds(materialized):
    data, train = materialized["data"], materialized["train"]
    assert data.success and train.success
    mats = {**_materializations(data), **_materializations(train)}
    assert set(mats) == {*DATA, "trained_checkpoint", "evaluation", "samples"}
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
              for r in (data, train) for e in r.get_asset_check_evaluations()}
    assert checks == {
        "raw_documents:has_documents": True,
        "raw_documents:files_have_text": True,
        "trained_checkpoint:final_loss_finite": True,
        "trained_checkpoint:checkpoint_verifies": True,
        "filtered_documents:documents_conserved": True,
        "deduplicated_documents:documents_conserved": True,
        "token_shards:shard_headers_match_manifest": True,
        "evaluation:val_loss_below_unigram_baseline": True,
        "samples:samples_non_empty": True,
    }
    for key in DATA:
        assert mats[key].partition == materialized["snapshot"].key
    shards = mats["token_shards"].metadata
    assert len(shards["content_hash"].value) == 64 and shards["train_tokens"].value > 50_000
    assert "data:image/png;base64," in mats["dataset_statistics"].metadata["plots"].value


def test_checkpoint_records_the_snapshots_it_trained_on(materialized):
    from model.checkpoint import resolve_checkpoint, verify_checkpoint

    key = materialized["snapshot"].key
    meta = _materializations(materialized["train"])["trained_checkpoint"].metadata
    assert meta["snapshot_keys"].value == [key]
    model_dir = Path(meta["model_dir"].value)
    index = verify_checkpoint(model_dir)
    assert index["metadata"]["snapshot_keys"] == [key]
    content_hash = _materializations(materialized["data"])["token_shards"].metadata["content_hash"].value
    assert index["metadata"]["shard_content_hashes"] == {key: content_hash}
    run_dir = Path(meta["run_dir"].value)
    verify_checkpoint(resolve_checkpoint(run_dir))
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert lineage["snapshot_keys"] == [key]
    train_cfg = json.loads((run_dir / "train_config.json").read_text())
    assert train_cfg["data"] == [str(materialized["ws"].snapshot_dir(key) / "shards")]


def test_training_streams_steps_into_the_dagster_run(materialized, instance):
    logs = [e.user_message for e in instance.all_logs(materialized["train"].run_id)]
    assert any(m.startswith("starting: ") and "training.launch" in m for m in logs)
    steps = [m for m in logs if m.startswith("step ") and "| loss " in m]
    assert len(steps) == 12  # log_every=5 over 60 steps, each once
    assert steps[-1].startswith("step 60/60 | loss ") and " | eta " in steps[-1]
    assert any(m.startswith("train: mfu = model FLOP/s / ") for m in logs)
    assert any(m.startswith("step 60/60 | val loss ") and "bits/byte on 4,096 val tokens" in m
               for m in logs)
    assert any(m.startswith("eval val: 4096/4096 tok (100%)") for m in logs)  # the evaluation asset


def test_one_mlflow_run_per_materialization_with_tags(materialized):
    from mlflow import MlflowClient

    client = MlflowClient(materialized["tracking"])
    # data-pipeline runs and training runs in experiments of their own
    data_exp = client.get_experiment_by_name("homebrew-gpt2-data")
    train_exp = client.get_experiment_by_name("homebrew-gpt2")
    data_runs = client.search_runs([data_exp.experiment_id], max_results=100)
    train_runs = client.search_runs([train_exp.experiment_id], max_results=100)
    assert {r.data.tags["dagster.asset_key"] for r in data_runs} == set(DATA)
    assert {r.data.tags["dagster.asset_key"] for r in train_runs} == {"trained_checkpoint", "evaluation", "samples"}
    runs = data_runs + train_runs
    mats = {**_materializations(materialized["data"]), **_materializations(materialized["train"])}
    assert len(runs) == len(mats) == 8
    by_asset = {r.data.tags["dagster.asset_key"]: r for r in runs}
    assert set(by_asset) == set(mats)
    for asset, run in by_asset.items():
        tags = run.data.tags
        dagster_run = materialized["data"].run_id if asset in DATA else materialized["train"].run_id
        assert tags["dagster.run_id"] == dagster_run
        expected_partition = materialized["snapshot"].key if asset in DATA else "__none__"
        assert tags["dagster.partition_key"] == expected_partition
        assert run.info.status == "FINISHED"
        assert mats[asset].metadata["mlflow_run_id"].value == run.info.run_id
        assert run.info.run_id in mats[asset].metadata["mlflow_run_url"].value
    filtered = by_asset["filtered_documents"]
    assert filtered.data.metrics["documents_in"] == filtered.data.metrics["kept"] + filtered.data.metrics["rejected"]
    assert "rejections_by_rule.json" in {a.path for a in client.list_artifacts(filtered.info.run_id)}
    stats_files = {a.path for a in client.list_artifacts(by_asset["dataset_statistics"].info.run_id, "statistics")}
    assert any(p.endswith(".png") for p in stats_files)


def test_training_run_has_curves_system_metrics_checkpoints_and_registered_model(materialized):
    from mlflow import MlflowClient

    client = MlflowClient(materialized["tracking"])
    meta = _materializations(materialized["train"])["trained_checkpoint"].metadata
    run = client.get_run(meta["mlflow_run_id"].value)
    for name in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "val_loss", "val_bpb", "val_tokens"):
        assert name in run.data.metrics, name
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 60
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    assert run.data.params["max_steps"] == "60"
    ckpts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert "checkpoints/step_00000060" in ckpts
    files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "checkpoints/step_00000060")}
    assert "model.safetensors" in files
    version = client.get_model_version("homebrew-gpt2", meta["registered_model_version"].value)
    key = materialized["snapshot"].key
    assert version.tags["hgpt.snapshot_keys"] == key
    assert version.tags["hgpt.shard_manifest_hash"] == meta["shard_manifest_hash"].value
    assert version.tags["hgpt.git_commit"] and version.tags["hgpt.filter_config_sha256"]
    assert version.tags["dagster.run_id"] == materialized["train"].run_id
    assert client.get_model_version_by_alias("homebrew-gpt2", "champion").version == version.version


def test_mlflow_model_loads_from_code_without_pickles(materialized):
    import mlflow

    meta = _materializations(materialized["train"])["trained_checkpoint"].metadata
    mlflow.set_tracking_uri(materialized["tracking"])
    local = Path(mlflow.artifacts.download_artifacts(meta["mlflow_model_uri"].value))
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pt"))
    model = mlflow.pyfunc.load_model(str(local))
    out = model.predict(["The module"], params={"max_new_tokens": 8, "seed": 0})
    assert len(out) == 1 and isinstance(out[0], str)


def test_rematerializing_a_partition_gives_the_same_shards_and_asks_for_retraining(materialized, instance):
    from dagster import AssetSelection, evaluate_automation_conditions

    defs = materialized["defs"]
    train_key = AssetKey("trained_checkpoint")
    selection = AssetSelection.assets(train_key)
    # "New shards since the last training": nothing new right after training ...
    first = evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert first.get_num_requested(train_key) == 0
    before = _materializations(materialized["data"])["token_shards"].metadata["content_hash"].value
    # force: delete the stage outputs and recompute them from the same inputs
    again = defs.resolve_job_def("process_snapshot").execute_in_process(
        instance=instance, partition_key=materialized["snapshot"].key,
        asset_selection=[AssetKey("deduplicated_documents"), AssetKey("token_shards")],
        run_config={"ops": {"token_shards": {"config": {"val_fraction": 0.05, "force": True}},
                            "deduplicated_documents": {"config": {"force": True}}}})
    assert again.success
    after = _materializations(again)["token_shards"].metadata["content_hash"].value
    assert after == before
    # ... and a training request once a snapshot's shards were materialized again.
    second = evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                            cursor=first.cursor)
    assert second.get_num_requested(train_key) == 1


def test_bits_per_byte_beside_every_loss(materialized):
    from mlflow import MlflowClient

    mats = _materializations(materialized["train"])
    train_meta, eval_meta = mats["trained_checkpoint"].metadata, mats["evaluation"].metadata
    assert train_meta["val_tokens"].value == 4096 and train_meta["val_bpb"].value > 0
    assert "first 4,096 tokens of the val shards" in train_meta["val_loss_measured_on"].value
    assert eval_meta["val_tokens"].value == 4096 and 0 < eval_meta["val_bpb"].value < 20
    assert eval_meta["val_bytes"].value > eval_meta["val_tokens"].value  # tokens hold bytes
    assert "first 4,096 tokens of the val shards" in eval_meta["val_loss_measured_on"].value
    client = MlflowClient(materialized["tracking"])
    run = client.get_run(eval_meta["mlflow_run_id"].value)
    assert run.data.metrics["val_bpb"] == eval_meta["val_bpb"].value
    version = client.get_model_version("homebrew-gpt2", train_meta["registered_model_version"].value)
    assert float(version.tags["hgpt.val_bpb"]) == eval_meta["val_bpb"].value


def test_snapshot_is_the_dataset_input_of_training_and_evaluation(materialized):
    from mlflow import MlflowClient

    client = MlflowClient(materialized["tracking"])
    mats = _materializations(materialized["train"])
    key = materialized["snapshot"].key
    content_hash = _materializations(materialized["data"])["token_shards"].metadata["content_hash"].value
    for asset, context in (("trained_checkpoint", "training"), ("evaluation", "evaluation")):
        run = client.get_run(mats[asset].metadata["mlflow_run_id"].value)
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == key
        assert used.dataset.digest == content_hash[:36]
        assert json.loads(used.dataset.source)["snapshot_key"] == key
        assert json.loads(used.dataset.source)["content_hash"] == content_hash
        assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == context
    evaluated = client.get_run(mats["evaluation"].metadata["mlflow_run_id"].value)
    assert [m.model_id for m in evaluated.inputs.model_inputs] == [
        mats["trained_checkpoint"].metadata["mlflow_model_id"].value]


def test_logged_model_has_metrics_signature_and_description(materialized):
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    client = MlflowClient(materialized["tracking"])
    mats = _materializations(materialized["train"])
    train_meta, eval_meta = mats["trained_checkpoint"].metadata, mats["evaluation"].metadata
    logged = client.get_logged_model(train_meta["mlflow_model_id"].value)
    by_run = {}
    for m in logged.metrics:
        by_run.setdefault(m.run_id, {})[m.key] = m
    train_run, eval_run = train_meta["mlflow_run_id"].value, eval_meta["mlflow_run_id"].value
    assert {"val_loss", "val_bpb", "train_loss"} <= set(by_run[train_run])
    assert by_run[eval_run]["val_loss"].value == eval_meta["val_loss"].value
    assert by_run[eval_run]["val_bpb"].value == eval_meta["val_bpb"].value
    assert by_run[eval_run]["val_loss"].dataset_name == materialized["snapshot"].key
    info = get_model_info(train_meta["mlflow_model_uri"].value)
    sig = info.signature
    assert [t.name for t in sig.inputs.input_types()] == ["string"]  # a list of prompts ...
    assert [t.name for t in sig.outputs.input_types()] == ["string"]  # ... their continuations
    assert {p.name: p.default for p in sig.params.params} == {
        "max_new_tokens": 48, "temperature": 0.8, "top_k": 50, "seed": 0}
    assert info.saved_input_example_info is not None
    model = client.get_registered_model("homebrew-gpt2")
    assert "GPT-2" in model.description and "champion" in model.description
    version = client.get_model_version("homebrew-gpt2", train_meta["registered_model_version"].value)
    assert materialized["snapshot"].key in version.description and "steps" in version.description
    assert logged.tags["mlflow.note.content"] == version.description  # the LoggedModel's description
    assert version.run_id == train_run
    assert version.tags["hgpt.evaluation_run_id"] == eval_run
    for name in ("homebrew-gpt2", "homebrew-gpt2-data"):
        assert client.get_experiment_by_name(name).tags["mlflow.note.content"]


def test_evaluation_and_samples_runs_nest_under_the_training_run(materialized):
    from mlflow import MlflowClient

    client = MlflowClient(materialized["tracking"])
    mats = _materializations(materialized["train"])
    train_meta = mats["trained_checkpoint"].metadata
    assert client.get_run(train_meta["mlflow_run_id"].value).data.tags["mlflow.note.content"]
    for asset in ("evaluation", "samples"):
        tags = client.get_run(mats[asset].metadata["mlflow_run_id"].value).data.tags
        assert tags["mlflow.parentRunId"] == train_meta["mlflow_run_id"].value
        assert tags["hgpt.model_version"] == train_meta["registered_model"].value
        assert tags["hgpt.model_id"] == train_meta["mlflow_model_id"].value
        assert tags["mlflow.note.content"]


def test_trained_checkpoint_metadata_has_a_loss_curve(materialized):
    meta = _materializations(materialized["train"])["trained_checkpoint"].metadata
    assert "data:image/png;base64," in meta["loss_curve"].value
    rows = [r.data for r in meta["loss_table"].value.records]
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert all(isinstance(r["loss"], float) for r in rows)
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [30, 60]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_raw_documents_revision_is_left_out_for_a_local_snapshot(materialized):
    meta = _materializations(materialized["data"])["raw_documents"].metadata
    assert "revision" not in meta and meta["kind"].value == "local"


def test_no_third_party_warnings_a_user_cannot_act_on(materialized):
    noise = [w for w in materialized["warnings"] if "expected_writer_count" in w
             or "Add type hints to the `predict` method" in w
             or ("run_id" in w and "DeprecationWarning" in w)]
    assert not noise, noise
