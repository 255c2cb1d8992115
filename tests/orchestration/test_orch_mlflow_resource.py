"""Our MLflow resource on its own: where it tracks, how a materialization's run is tagged, and
that a retried step continues its run instead of adding one."""


from dagster import AssetExecutionContext, DynamicPartitionsDefinition, asset, materialize

from pipelines.orchestration.mlflow_resource import MLflowTracking, default_tracking_uri


def test_tracking_uri_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HGPT_WORKSPACE", str(tmp_path))
    assert default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert MLflowTracking().resolved_ui_url() == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert MLflowTracking().resolved_uri() == "http://mlflow.example:5000"
    assert MLflowTracking().resolved_ui_url() == "http://mlflow.example:5000"
    assert MLflowTracking().artifact_root() is None  # a server decides where artifacts go
    assert MLflowTracking(tracking_uri="sqlite:////x/y.db").resolved_uri() == "sqlite:////x/y.db"


parts = DynamicPartitionsDefinition(name="parts")


@asset(partitions_def=parts)
def tracked(context: AssetExecutionContext, mlflow: MLflowTracking) -> None:
    with mlflow.asset_run(context) as first:
        first.log_metrics({"documents": 3})
        first.log_params({"cfg": {"a": 1, "b": [1, 2]}})
    # A retried step (same run, asset and partition) continues the same MLflow run.
    with mlflow.asset_run(context) as again:
        assert again.run_id == first.run_id
        again.log_metrics({"documents": 4}, step=1)
    context.add_output_metadata(first.dagster_metadata())


def test_asset_run_is_tagged_and_continued(tmp_path):
    from dagster import DagsterInstance
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("parts", ["p1"])
        result = materialize([tracked], partition_key="p1", instance=instance,
                             resources={"mlflow": MLflowTracking(tracking_uri=uri)})
    assert result.success
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("homebrew-gpt2")
    assert exp.artifact_location == (tmp_path / "artifacts").as_uri()  # beside the DB, not the cwd
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.asset_key"] == "tracked"
    assert run.data.tags["dagster.partition_key"] == "p1"
    assert run.data.tags["dagster.run_url"].endswith(f"/runs/{result.run_id}")
    assert run.data.params == {"cfg.a": "1", "cfg.b": "[1, 2]"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "documents")] == [3, 4]
    assert run.info.status == "FINISHED"
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta["mlflow_run_id"].value == run.info.run_id
    assert meta["mlflow_run_url"].value == f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"


def test_disabled_tracking_yields_none(tmp_path):
    from dagster import DagsterInstance

    @asset
    def untracked(context: AssetExecutionContext, mlflow: MLflowTracking) -> None:
        with mlflow.asset_run(context) as run:
            assert run is None

    with DagsterInstance.ephemeral() as instance:
        assert materialize([untracked], instance=instance,
                           resources={"mlflow": MLflowTracking(enabled=False)}).success


@asset
def nested_data(context: AssetExecutionContext, mlflow: MLflowTracking) -> None:
    from pipelines.orchestration.mlflow_resource import snapshot_dataset

    with mlflow.asset_run(context, experiment="training", description="the parent") as parent:
        pass
    with mlflow.asset_run(context, experiment="data", parent_run_id=parent.run_id,
                          description="a child") as child:
        dataset = snapshot_dataset("snap-1", "ab" * 32, "/data/snap-1/shards", {"train_tokens": 7})
        child.log_inputs([dataset], "training")
        child.log_metrics({"val_loss": 1.5, "flag": True}, dataset=dataset)
    context.add_output_metadata({"parent": parent.run_id, "child": child.run_id})


def test_experiments_descriptions_nesting_and_dataset_inputs(tmp_path):
    import json

    from dagster import DagsterInstance
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with DagsterInstance.ephemeral() as instance:
        result = materialize([nested_data], instance=instance,
                             resources={"mlflow": MLflowTracking(tracking_uri=uri)})
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    client = MlflowClient(uri)
    train_exp = client.get_experiment_by_name("homebrew-gpt2")
    data_exp = client.get_experiment_by_name("homebrew-gpt2-data")
    assert "training" in train_exp.tags["mlflow.note.content"]
    assert "data-stage" in data_exp.tags["mlflow.note.content"]
    parent, child = client.get_run(meta["parent"].value), client.get_run(meta["child"].value)
    assert parent.info.experiment_id == train_exp.experiment_id
    assert child.info.experiment_id == data_exp.experiment_id
    assert parent.data.tags["mlflow.note.content"] == "the parent"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    (used,) = child.inputs.dataset_inputs
    assert (used.dataset.name, used.dataset.digest) == ("snap-1", ("ab" * 32)[:36])
    assert json.loads(used.dataset.source) == {"snapshot_key": "snap-1", "content_hash": "ab" * 32,
                                               "shards": "/data/snap-1/shards"}
    assert json.loads(used.dataset.profile) == {"train_tokens": 7}
    assert [(t.key, t.value) for t in used.tags] == [("mlflow.data.context", "training")]
    assert child.data.metrics == {"val_loss": 1.5}  # a bool is not a metric
