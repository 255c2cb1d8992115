"""MLflow as a Dagster resource: every asset materialization is one MLflow run.

Our own small `ConfigurableResource` around `MlflowClient` (not dagster-mlflow: see GUIDE.md).
The run is addressed by id everywhere, never through mlflow's global "active run", so steps of a
multiprocess run and the training subprocess can log to their own runs side by side.

Tracking store, first match wins: the resource's `tracking_uri`, $MLFLOW_TRACKING_URI (a team's
server), then SQLite in the workspace (workspace/mlflow/mlflow.db, artifacts in
workspace/mlflow/artifacts). Browse the local store with
    mlflow ui --backend-store-uri sqlite:///$PWD/workspace/mlflow/mlflow.db -h 127.0.0.1 -p 5000
"""


import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from dagster import ConfigurableResource, MetadataValue
from pydantic import Field

from pipelines.orchestration.paths import Workspace

# Tag names shared with the training subprocess and the tests.
TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSET_KEY = "dagster.asset_key"
TAG_PARTITION = "dagster.partition_key"
TAG_JOB = "dagster.job"
TAG_RUN_URL = "dagster.run_url"
NO_PARTITION = "__none__"
# Tags MLflow's UI reads: a run's description (its "Description" box, also on experiments,
# models and versions) and its parent (evaluation and samples runs nest under their training run).
TAG_NOTE = "mlflow.note.content"
TAG_PARENT = "mlflow.parentRunId"
TAG_MODEL_VERSION = "hgpt.model_version"
TAG_MODEL_ID = "hgpt.model_id"

# Data-pipeline runs and training runs log different metrics (documents and rejections vs. loss
# curves); in one experiment MLflow's chart view would mix both, so each kind has its own.
EXPERIMENT_DESCRIPTIONS = {
    "data": "One run per data-stage materialization of a snapshot (raw documents, filters, dedup, "
    "token shards, statistics): document counts, rejections by rule, shard token counts. Tagged "
    "with the Dagster run, asset and snapshot partition.",
    "training": "One run per training of GPT-2 from scratch (loss, lr, grad norm, MFU, validation "
    "loss and bits per byte, system metrics, checkpoints), with its evaluation and samples runs "
    "nested under it. The snapshots trained on are the runs' dataset inputs.",
}
REGISTERED_MODEL_DESCRIPTION = (
    "GPT-2 (decoder-only transformer, GPT-2 BPE tokenizer) trained from scratch on FineWeb-style "
    "snapshots by the Dagster asset trained_checkpoint. Each version is one training run's final "
    "weights as a safetensors checkpoint behind a pyfunc that continues text prompts; the "
    "`champion` alias marks the version with the best held-out loss.")


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or Workspace.default().mlflow_tracking_uri


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)) and len(value) > 8:
        out[prefix] = json.dumps(value)[:6000]
    else:
        out[prefix] = str(value)[:6000]


def flatten_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested config as MLflow params (`model.n_layer` = "4"), values cut to MLflow's limit."""
    out: dict[str, str] = {}
    _flatten("", params, out)
    return out


@dataclass
class TrackedRun:
    """One MLflow run, addressed by id. Thin helpers so assets don't repeat client plumbing."""

    client: Any  # mlflow.MlflowClient; typed loosely so importing this module stays cheap
    run_id: str
    experiment_id: str
    url: str
    tracking_uri: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        existing = self.client.get_run(self.run_id).data.params
        items = [p for p in items if p.key not in existing]  # params are write-once
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None,
                    model_id: str | None = None, dataset: Any = None) -> None:
        """Metrics of this run; with `model_id` they are also the LoggedModel's metrics (its page
        lists them), with `dataset` (an mlflow.entities.Dataset) marked as measured on it."""
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        on = {"dataset_name": dataset.name, "dataset_digest": dataset.digest} if dataset else {}
        items = [
            Metric(k, float(v), ts, step or 0, model_id=model_id, **on)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v == v  # NaN is not loggable as a number
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_inputs(self, datasets: list, context: str, model_id: str | None = None) -> None:
        """Datasets (see `snapshot_dataset`) as this run's inputs, used as `context` ("training",
        "evaluation"), and a LoggedModel as an input (the model an evaluation scored)."""
        from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

        tags = [InputTag("mlflow.data.context", context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(d, tags) for d in datasets],
                               models=[LoggedModelInput(model_id)] if model_id else None)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def dagster_metadata(self) -> dict[str, Any]:
        return {"mlflow_run_url": MetadataValue.url(self.url), "mlflow_run_id": self.run_id}


class MLflowTracking(ConfigurableResource):
    """Where and how materializations are tracked in MLflow."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else SQLite in the workspace.",
    )
    experiment_name: str = Field(
        default="homebrew-gpt2",
        description="Experiment of training runs (with their evaluation and samples runs nested).")
    data_experiment_name: str = Field(
        default="homebrew-gpt2-data", description="Experiment of the data-pipeline runs.")
    registered_model_name: str = Field(
        default="homebrew-gpt2", description="Registry name for trained models."
    )
    ui_url: str | None = Field(
        default=None,
        description="Base URL of the MLflow UI for links; default the tracking URI if it is "
        "http(s), else http://127.0.0.1:5000 (where `mlflow ui` listens).",
    )
    dagster_ui_url: str = Field(
        default="http://127.0.0.1:3000", description="Base URL of the Dagster UI for back links."
    )
    enabled: bool = Field(default=True, description="Set false to run without MLflow.")

    # -- store -------------------------------------------------------------------------------
    def resolved_uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def resolved_ui_url(self) -> str:
        if self.ui_url:
            return self.ui_url.rstrip("/")
        uri = self.resolved_uri()
        return uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"

    def client(self):
        from mlflow import MlflowClient

        uri = self.resolved_uri()
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def artifact_root(self) -> str | None:
        """For a local store, artifacts go next to the database (never into the cwd)."""
        uri = self.resolved_uri()
        if not _is_local(uri):
            return None  # the server decides
        if uri.startswith("sqlite:///"):
            root = Path(uri[len("sqlite:///") :]).parent / "artifacts"
        else:
            root = Workspace.default().mlflow_artifacts
        root.mkdir(parents=True, exist_ok=True)
        return root.as_uri()

    def experiment_names(self) -> dict[str, str]:
        return {"training": self.experiment_name, "data": self.data_experiment_name}

    def experiment_id(self, client=None, kind: str = "training") -> str:
        """The experiment of `kind` ("training" or "data"), created with its description."""
        client = client or self.client()
        name = self.experiment_names()[kind]
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.artifact_root(),
                                            tags={TAG_NOTE: EXPERIMENT_DESCRIPTIONS[kind]})
        except Exception:  # created by a concurrent step in the meantime
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def experiment_ids(self, client=None) -> list[str]:
        """Every experiment this resource writes to (e.g. to find a Dagster run's MLflow runs)."""
        client = client or self.client()
        return [self.experiment_id(client, kind) for kind in self.experiment_names()]

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.resolved_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"

    # -- runs --------------------------------------------------------------------------------
    def find_run(self, dagster_run_id: str, asset_key: str, partition_key: str | None,
                 experiment: str = "training"):
        client = self.client()
        exp_id = self.experiment_id(client, experiment)
        filt = (
            f"tags.`{TAG_DAGSTER_RUN}` = '{dagster_run_id}' AND tags.`{TAG_ASSET_KEY}` = '{asset_key}'"
            f" AND tags.`{TAG_PARTITION}` = '{partition_key or NO_PARTITION}'"
        )
        runs = client.search_runs([exp_id], filter_string=filt, max_results=1)
        return runs[0] if runs else None

    @contextlib.contextmanager
    def asset_run(
        self,
        context,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        experiment: str = "training",
        parent_run_id: str | None = None,
        description: str | None = None,
    ) -> Iterator[TrackedRun | None]:
        """Create (or, for a retried step, continue) the MLflow run of this materialization.

        Tagged with the Dagster run id, asset key and partition key; ends FINISHED, or FAILED when
        the body raises. `experiment` is "training" or "data"; `parent_run_id` nests the run under
        another (the UI shows it below its parent); `description` is the run's description.
        Yields None when tracking is disabled."""
        if not self.enabled:
            yield None
            return
        client = self.client()
        exp_id = self.experiment_id(client, experiment)
        asset_key = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
        run_tags = {
            TAG_DAGSTER_RUN: context.run.run_id,
            TAG_ASSET_KEY: asset_key,
            TAG_PARTITION: partition or NO_PARTITION,
            TAG_JOB: context.job_name,
            TAG_RUN_URL: f"{self.dagster_ui_url.rstrip('/')}/runs/{context.run.run_id}",
            **({TAG_PARENT: parent_run_id} if parent_run_id else {}),
            **({TAG_NOTE: description} if description else {}),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        existing = self.find_run(context.run.run_id, asset_key, partition, experiment)
        if existing is not None:
            run_id = existing.info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            name = run_name or (f"{asset_key}[{partition}]" if partition else asset_key)
            run_id = client.create_run(exp_id, run_name=name, tags=run_tags).info.run_id
        tracked = TrackedRun(client, run_id, exp_id, self.run_url(exp_id, run_id), self.resolved_uri())
        if existing is not None:
            tracked.set_tags(run_tags)
        try:
            context.log.info(f"MLflow run {run_id}: {tracked.url}")
            yield tracked
        except BaseException:
            client.set_terminated(run_id, "FAILED" if not _is_interrupt() else "KILLED")
            raise
        else:
            client.set_terminated(run_id, "FINISHED")


def snapshot_dataset(snapshot_key: str, content_hash: str, shard_dir: str | os.PathLike,
                     profile: Mapping[str, Any] | None = None):
    """One snapshot's token shards as an MLflow dataset: name and source = the snapshot key,
    digest = the content hash the tokenize stage recorded for its shards (MLflow keeps at most
    36 characters of a digest; the whole hash is in the source). Built as the dataset entity
    itself: the shards are llm.c .bin files, which none of mlflow.data's loaders reads."""
    from mlflow.entities import Dataset

    source = {"snapshot_key": snapshot_key, "content_hash": content_hash, "shards": str(shard_dir)}
    return Dataset(name=snapshot_key, digest=str(content_hash)[:36], source_type="hgpt_snapshot",
                   source=json.dumps(source), profile=json.dumps(dict(profile or {}), default=str))


def _is_interrupt() -> bool:
    import sys

    exc = sys.exc_info()[1]
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "DagsterExecutionInterruptedError"


def log_table_artifact(run: TrackedRun | None, rows: list[dict], artifact_file: str) -> None:
    """A list of records as a JSON table artifact (MLflow's UI renders `.json` with `log_table`
    layout only for pandas; a plain JSON file is portable and readable)."""
    if run is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(json.dumps(rows, indent=1, default=str))
        parent = str(Path(artifact_file).parent)
        run.log_artifact(path, None if parent == "." else parent)
