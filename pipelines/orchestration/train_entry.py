"""Training entry point run by the `trained_checkpoint` asset through Dagster Pipes (under torchrun).

    torchrun --standalone --nproc-per-node 2 -m pipelines.orchestration.train_entry --spec SPEC.json

SPEC.json (written by the asset) holds the TrainConfig dict, the MLflow run to log into and
lineage tags. Every rank trains; only rank 0 opens the Pipes channel (logs, per-step metrics and
the final materialization go to the Dagster run) and logs to MLflow (params, per-step curves,
validation loss, system metrics, checkpoint weights). Without Dagster (no Pipes bootstrap in the
environment) it still runs, logging to stdout, metrics.jsonl and MLflow.

SIGINT/SIGTERM (a cancelled Dagster run; torchrun forwards them to each worker) stop training
between steps; the newest checkpoint on disk stays valid because checkpoints appear atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

# Metrics that go to MLflow / Dagster from each step record.
STEP_METRICS = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "step_time_s", "tokens_seen")
CHECKPOINT_ARTIFACT_FILES = ("model.safetensors", "config.json", "checkpoint.json")


class MLflowCallback:
    """Rank 0's MLflow logging: params at start, metrics every step, weights at each checkpoint."""

    def __init__(self, tracking_uri: str, run_id: str, system_metrics: bool = True):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        if system_metrics:
            with contextlib.suppress(Exception):
                mlflow.set_system_metrics_sampling_interval(2)
                mlflow.set_system_metrics_samples_before_logging(1)
        self.run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id

    def _log(self, metrics: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and v == v]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def on_train_start(self, cfg, info):
        from pipelines.orchestration.mlflow_resource import flatten_params

        params = {**cfg.to_dict(), "world_size": info.get("world_size"),
                  "grad_accum": info.get("grad_accum"), "device": info.get("device")}
        existing = self.client.get_run(self.run_id).data.params
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_dict(self.run_id, info, "train_start.json")

    def on_step(self, step, metrics):
        self._log({k: metrics[k] for k in STEP_METRICS if k in metrics}, step)

    def on_eval(self, step, metrics):
        self._log(metrics, step)

    def on_checkpoint(self, step, path):
        path = Path(path)
        for name in CHECKPOINT_ARTIFACT_FILES:
            if (path / name).exists():
                self.client.log_artifact(self.run_id, str(path / name), f"checkpoints/{path.name}")

    def on_train_end(self, result):
        self.client.log_dict(self.run_id, result.to_dict(), "train_result.json")

    def close(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def _raise_interrupt(signum, frame):  # before train() installs its own handlers
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrainingInterrupted"


def run(spec: dict, pipes=None) -> dict:
    from training import train
    from training.callbacks import JsonlLogger, ProgressLines
    from training.config import TrainConfig

    cfg = TrainConfig.from_dict(spec["train_config"])
    rank = int(os.environ.get("RANK", "0"))
    callbacks: list = []
    tracker = None
    if rank == 0:
        every = max(1, cfg.log_every)
        # Under Dagster the lines go into the run's log only: printed as well, they would reach
        # the console twice (once as the child's stdout, once as a Dagster log entry).
        callbacks.append(JsonlLogger(cfg.out, print_every=0 if pipes is not None else every))
        if pipes is not None:
            callbacks.append(ProgressLines(pipes.log.info, every))
        mlflow_spec = spec.get("mlflow") or {}
        if mlflow_spec.get("run_id"):
            tracker = MLflowCallback(mlflow_spec["tracking_uri"], mlflow_spec["run_id"],
                                     mlflow_spec.get("system_metrics", True))
            callbacks.append(tracker)
    try:
        result = train(cfg, callbacks=callbacks)
    except BaseException as exc:
        if tracker is not None:
            tracker.close("KILLED" if _interrupted(exc) else "FAILED")
        raise
    if tracker is not None:
        tracker.close("FINISHED")
    return result.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train under Dagster Pipes")
    parser.add_argument("--spec", required=True, help="JSON written by the trained_checkpoint asset")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    spec = json.loads(Path(args.spec).read_text())
    rank = int(os.environ.get("RANK", "0"))

    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    try:
        if rank == 0 and PipesEnvVarParamsLoader().is_dagster_pipes_process():
            with open_dagster_pipes() as pipes:
                result = run(spec, pipes)
                pipes.report_asset_materialization(
                    metadata={"train_result": {"raw_value": result, "type": "json"}}
                )
        else:
            run(spec)
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        print(f"rank {rank}: {exc}; stopped (the newest checkpoint stays valid)", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
