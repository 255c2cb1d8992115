"""The main job: the whole asset graph, headless, against the persistent Dagster instance.

    hgpt run                                   # embedded default snapshot, tiny preset, CPU
    hgpt run --source local --input DIR        # a local directory of FineWeb parquet/jsonl files
    hgpt run --source hub --hub-config sample-10BT --hub-max-files 1   # FineWeb from the hub

Steps: build the default snapshot (docstrings of the installed Python packages, never FineWeb)
or resolve the chosen source; register it as a `snapshots` partition; run the `process_snapshot`
job for it; run the `retrain` job (training through Pipes, evaluation, samples). Everything is
recorded in workspace/dagster (so `hgpt ui` shows it afterwards) and workspace/mlflow.

Reruns are idempotent: a step whose inputs did not change since its last successful
materialization is skipped (no duplicate MLflow runs or model versions; --force reruns it, adding
to the history). A run left "started" by a killed process (kill -9) is marked failed on the next
start, its concurrency slots and MLflow runs released, and the job continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from pipelines.locking import exclusive_lock
from pipelines.orchestration.paths import REPO_ROOT, Workspace, ensure_dagster_home, get_instance

MAIN_TAG = "hgpt/main_job"
PID_TAG = "hgpt/pid"
DEFAULT_SNAPSHOT_NAME = "python-docstrings"
# The main job's tiny run: 350 steps x 1,024 tokens (358,400 tokens). Measured on the default
# snapshot (quiet 2-core AVX512_BF16 CPU): held-out loss 5.875 against a unigram baseline of
# 6.890, in 235 s of job time (150 steps x 2,048 tokens gave 6.06; 80 fp32 steps 6.37). Half the
# tokens per step at twice the steps learns more per token seen, at about the same cost per
# token. bf16 autocast where the CPU multiplies bf16 natively (AVX512_BF16, AMX): there the step
# is ~1.8x faster than fp32, which pays for the steps; elsewhere the job takes longer. The step
# is dominated by the 50,304-wide LM head and its softmax, so a narrower model is hardly faster.
# Training's own val is a small prefix (the evaluation asset scores more), mid-run and at the
# end; one checkpoint, at the end (a rerun after a kill trains afresh).
def main_precision(cpu_has_native_bf16: bool | None = None) -> str:
    """bf16 on a CPU with bf16 dot products; otherwise TrainConfig's "auto" (fp32 on other CPUs,
    where a bf16 GEMM is several times slower; bf16 or fp16 on a GPU). `cpu_has_native_bf16`
    forces the branch (tests); None reads this machine."""
    if cpu_has_native_bf16 is None:
        import torch

        from training.fused_loss import native_bf16_matmul

        cpu_has_native_bf16 = not torch.cuda.is_available() and native_bf16_matmul("cpu")
    return "bf16" if cpu_has_native_bf16 else "auto"


MAIN_TINY_OVERRIDES = {"max_steps": 350, "batch_tokens": 1024, "micro_batch": 4, "warmup_steps": 10,
                       "max_lr": 2e-3, "min_lr": 2e-4, "eval_every": 175, "checkpoint_every": 350,
                       "eval_tokens": 8192, "log_every": 10}
# Step events at INFO; Dagster's DEBUG event stream would drown the training log on the console.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _say(msg: str) -> None:
    print(f"[hgpt run] {msg}", flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted_runs(instance, mlflow_resource=None) -> list[str]:
    """Mark main-job runs whose process is gone (kill -9, power loss) as failed, free the pool
    slots they held and end their MLflow runs, so a rerun neither waits on them nor shows them
    as still running."""
    from dagster import DagsterRunStatus, RunsFilter

    stale = []
    runs = instance.get_runs(RunsFilter(tags={MAIN_TAG: "1"},
                                        statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING,
                                                  DagsterRunStatus.NOT_STARTED]))
    for run in runs:
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and _pid_alive(pid):
            continue
        instance.report_run_failed(run, message=f"process {pid} is gone (interrupted); marked failed by `hgpt run`")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        stale.append(run.run_id)
        if mlflow_resource is not None and mlflow_resource.enabled:
            try:
                client = mlflow_resource.client()
                # data stages and training log into experiments of their own
                exps = mlflow_resource.experiment_ids(client)
                for r in client.search_runs(exps, f"tags.`dagster.run_id` = '{run.run_id}'"):
                    if r.info.status == "RUNNING":
                        client.set_terminated(r.info.run_id, "KILLED")
            except Exception as exc:  # tracking is best effort here
                _say(f"could not close MLflow runs of {run.run_id}: {exc}")
    return stale


def resolve_source(ws: Workspace, source: str, input_dir: str | None, hub_config: str,
                   hub_max_files: int | None, default_max_chars: int | None):
    from pipelines import sources

    if source == "default":
        from pipelines.orchestration.default_snapshot import DEFAULT_MAX_CHARS, build_default_snapshot

        out = ws.default_snapshot_dir / DEFAULT_SNAPSHOT_NAME
        t0 = time.time()
        build_default_snapshot(out, default_max_chars or DEFAULT_MAX_CHARS)
        info = json.loads((out / "SNAPSHOT.json").read_text())
        _say(f"default snapshot: {info['documents']} documents, {info['tokens']:,} tokens of "
             f"Python docstrings and help topics ({info['dump']}; not FineWeb) in {time.time() - t0:.0f}s")
        return sources.local_snapshot(out), None
    if source == "local":
        if not input_dir:
            raise ValueError("--source local needs --input DIR (a directory of FineWeb parquet/jsonl files)")
        return sources.local_snapshot(input_dir), None
    if source == "hub":
        snap = sources.hub_snapshot(hub_config, max_files=hub_max_files)
        return snap, {"kind": "hub", "config": hub_config, "revision": snap.revision,
                      "max_files": hub_max_files}
    raise ValueError(f"unknown source {source!r}: default, local or hub")


def _latest(instance, key: str, partition: str | None = None):
    from dagster import AssetKey, AssetRecordsFilter

    flt = AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[partition] if partition else None)
    recs = instance.fetch_materializations(flt, limit=1).records
    return recs[0] if recs else None


def _meta(record) -> dict:
    mat = record.asset_materialization
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def data_up_to_date(instance, ws: Workspace, key: str) -> bool:
    """Every data asset of the partition materialized and the shards it recorded still on disk."""
    from pipelines.orchestration.assets.data import DATA_ASSETS

    for asset in DATA_ASSETS:
        if _latest(instance, asset.key.to_user_string(), key) is None:
            return False
    shards = ws.snapshot_dir(key) / "shards"
    return (shards / "_SUCCESS.json").exists()


def _config_hash(run_config: dict) -> str:
    return hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()[:16]


def training_up_to_date(instance, shard_hashes: dict[str, str], config_hash: str) -> bool:
    """The last training used these exact shards and this config, its model still verifies, and
    evaluation and samples ran on it."""
    from model.checkpoint import CheckpointError, verify_checkpoint

    rec = _latest(instance, "trained_checkpoint")
    if rec is None:
        return False
    run = instance.get_run_by_id(rec.run_id)
    if run is None or run.tags.get("hgpt/config_hash") != config_hash:
        return False
    meta = _meta(rec)
    try:
        lineage = json.loads((Path(meta["model_dir"]) / "checkpoint.json").read_text())["metadata"]
        verify_checkpoint(meta["model_dir"])
    except (KeyError, OSError, ValueError, CheckpointError):
        return False
    if lineage.get("shard_content_hashes") != shard_hashes:
        return False
    for downstream in ("evaluation", "samples"):
        d = _latest(instance, downstream)
        if d is None or d.storage_id < rec.storage_id:
            return False
    return True


def run_main(source: str = "default", input_dir: str | None = None, hub_config: str = "sample-10BT",
             hub_max_files: int | None = 1, preset: str = "tiny", max_steps: int | None = None,
             nproc_per_node: int = 1, force: bool = False, limit_docs: int | None = None,
             default_max_chars: int | None = None, val_fraction: float = 0.05) -> int:
    ws = Workspace.default()
    ws.root.mkdir(parents=True, exist_ok=True)
    # One main job per workspace: a second `hgpt run` stops at once (LockHeld, exit code 2)
    # instead of racing the first on the Dagster instance, the data stages and the training run.
    with exclusive_lock(ws.main_job_lock, what=f"`hgpt run` in workspace {ws.root}"):
        return _run_main(ws, source, input_dir, hub_config, hub_max_files, preset, max_steps,
                         nproc_per_node, force, limit_docs, default_max_chars, val_fraction)


def _run_main(ws: Workspace, source, input_dir, hub_config, hub_max_files, preset, max_steps,
              nproc_per_node, force, limit_docs, default_max_chars, val_fraction) -> int:
    ensure_dagster_home(ws)
    from pipelines.definitions import build_definitions
    from pipelines.orchestration import snapshots as registry
    from pipelines.orchestration.configs import preset_run_config
    from pipelines.orchestration.mlflow_resource import MLflowTracking
    from pipelines.orchestration.pipes_launcher import TrainingLauncher

    t_start = time.time()
    instance = get_instance(ws)
    mlflow = MLflowTracking()
    _say(f"workspace: {ws.root}")
    _say(f"MLflow tracking: {mlflow.resolved_uri()}")
    stale = recover_interrupted_runs(instance, mlflow)
    if stale:
        _say(f"marked {len(stale)} interrupted run(s) as failed: {', '.join(stale)}")
    mlflow.experiment_ids()  # create the store and experiments once, before parallel steps

    snapshot, hub_source = resolve_source(ws, source, input_dir, hub_config, hub_max_files, default_max_chars)
    registry.register(ws, snapshot, hub_source)
    if not instance.has_dynamic_partition(registry.SNAPSHOTS.name, snapshot.key):
        instance.add_dynamic_partitions(registry.SNAPSHOTS.name, [snapshot.key])
    _say(f"snapshot partition: {snapshot.key}")

    defs = build_definitions({"launcher": TrainingLauncher(nproc_per_node=nproc_per_node)})
    tags = {MAIN_TAG: "1", PID_TAG: str(os.getpid())}

    # 1. Data assets of the snapshot.
    if force or not data_up_to_date(instance, ws, snapshot.key):
        data_config = {"ops": {"token_shards": {"config": {"val_fraction": val_fraction, "force": force}},
                               "filtered_documents": {"config": {"limit_docs": limit_docs, "force": force}},
                               "deduplicated_documents": {"config": {"force": force}},
                               "dataset_statistics": {"config": {"force": force}}}}
        _say("materializing data assets (filter, dedup, tokenize, statistics) ...")
        if not _execute(defs, "process_snapshot", "data", "data assets", data_config, instance,
                        tags, partition_key=snapshot.key):
            return 1
    else:
        _say("data assets up to date (same snapshot files, shards on disk): skipped")

    # 2. Training, evaluation, samples on every snapshot with shards.
    # Precision is read from the machine here, not at import: importing this module stays cheap.
    overrides = {**MAIN_TINY_OVERRIDES, "precision": main_precision()} if preset == "tiny" else {}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
        for k in ("eval_every", "checkpoint_every"):
            if k in overrides:
                overrides[k] = max(1, min(overrides[k], max_steps))
    run_config = preset_run_config(preset, **overrides)
    from pipelines.orchestration.assets.training import training_inputs
    from pipelines.orchestration.resources import WorkspaceResource

    inputs = training_inputs(instance, WorkspaceResource(), None)
    shard_hashes = {i["snapshot"]: i["content_hash"] for i in inputs}
    config_hash = _config_hash({**run_config, "nproc_per_node": nproc_per_node})
    if force or not training_up_to_date(instance, shard_hashes, config_hash):
        _say(f"training ({preset} preset) on {len(inputs)} snapshot(s), then evaluation and samples ...")
        if not _execute(defs, "retrain_gpt2" if preset == "gpt2" else "retrain", "training",
                        "training, evaluation and samples", run_config, instance,
                        {**tags, "hgpt/config_hash": config_hash}):
            return 1
    else:
        _say("training up to date (same shards and config, checkpoint verifies): skipped")

    print_summary(instance, ws, mlflow, time.time() - t_start)
    return 0


def print_summary(instance, ws: Workspace, mlflow, seconds: float) -> None:
    train = _latest(instance, "trained_checkpoint")
    ev = _latest(instance, "evaluation")
    tm = _meta(train) if train else {}
    em = _meta(ev) if ev else {}
    db = mlflow.resolved_uri()
    lines = [
        "",
        f"Done in {seconds:.0f}s.",
        f"  checkpoint:     {tm.get('model_dir', '?')}",
        f"  run directory:  {tm.get('run_dir', '?')}",
        *_val_lines(em, tm),
        *_learning_lines(tm.get("run_dir")),
        f"  registered:     {tm.get('registered_model', '?')}   champion: {em.get('champion_decision', '?')}",
        f"  samples:        {Path(str(tm.get('run_dir', '.'))) / 'samples.md'}",
        f"  data:           {ws.data}",
        f"  Dagster:        {ws.dagster_home} (DAGSTER_HOME)",
        f"  MLflow:         {db}",
        "",
        "Open the Dagster UI (asset graph, runs, checks) on http://127.0.0.1:3000:",
        f"  {_command('hgpt')} ui      # or: DAGSTER_HOME={ws.dagster_home} {_command('dagster-webserver')} "
        f"-w {REPO_ROOT / 'workspace.yaml'} -h 127.0.0.1 -p 3000",
        "Open the MLflow UI (runs, loss curves, checkpoints, registered model) on http://127.0.0.1:5000:",
        f"  {_command('hgpt')} mlflow-ui   # or: {_command('mlflow')} ui --backend-store-uri {db} -h 127.0.0.1 -p 5000",
        "  (MLflow opens in GenAI mode: choose \"Model training\" to see the runs)",
    ]
    print("\n".join(lines), flush=True)


def _val_lines(em: dict, tm: dict) -> list[str]:
    """The held-out numbers, each with the tokens it was measured on: the evaluation asset's,
    and training's last periodic one (a smaller prefix of the same val shards, so it differs)."""
    nan = float("nan")
    lines = [f"  val loss:       {em.get('val_loss', nan):.4f} nats/token, "
             f"{em.get('val_bpb', nan):.4f} bits/byte on {_count(em.get('val_tokens'))} val tokens "
             f"(evaluation; unigram baseline {em.get('unigram_baseline', nan):.4f})"]
    if isinstance(tm.get("val_loss"), (int, float)):
        lines.append(f"  training's val: {tm['val_loss']:.4f} nats/token, {tm.get('val_bpb', nan):.4f} "
                     f"bits/byte on the first {_count(tm.get('val_tokens'))} of them (eval_tokens, "
                     f"at the last step)")
    return lines


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _learning_lines(run_dir) -> list[str]:
    """What the model learned, at a glance: its training loss as a small text chart (from the
    run's metrics.jsonl) and the first seed's sample for each prompt (samples.json)."""
    if not run_dir:
        return []
    from training.callbacks import read_metrics

    run_dir = Path(str(run_dir))
    lines: list[str] = []
    try:
        steps, evals = read_metrics(run_dir), read_metrics(run_dir, "eval")
    except OSError:
        steps, evals = {}, {}
    losses = [float(r["loss"]) for _, r in sorted(steps.items()) if isinstance(r.get("loss"), (int, float))]
    if len(losses) >= 2:
        per = -(-len(losses) // 48)
        val = ", ".join(f"{r['val_loss']:.2f} at step {s}" for s, r in sorted(evals.items())
                        if isinstance(r.get("val_loss"), (int, float)))
        lines += [f"  loss curve:     training loss, each column the mean of {per} step(s), "
                  f"steps 1-{len(losses)}" + (f"; val loss {val}" if val else ""),
                  *loss_chart(losses, per)]
    try:
        records = json.loads((run_dir / "samples.json").read_text())
    except (OSError, ValueError):
        records = []
    shown = {}
    for r in records:  # the first seed of each prompt: one line apiece
        shown.setdefault(r.get("prompt"), r)
    for prompt, r in list(shown.items())[:3]:
        text = " ".join(f"{prompt}{r.get('text', '')}".split())
        lines.append(f"  sample (seed {r.get('seed')}): {text[:110] + ('...' if len(text) > 110 else '')}")
    return lines


def loss_chart(losses: list[float], per: int, rows: int = 4) -> list[str]:
    """`losses` as a block chart `rows` high: a column per `per` steps (their mean), each row
    labelled with the loss that fills it. The scale is logarithmic in the loss above its lowest
    mean, so the first steps' drop from ~11 nats does not flatten the part that shows learning
    into one row. Half blocks double the resolution; ASCII where the encoding lacks blocks."""
    import math

    means = [sum(losses[i:i + per]) / len(losses[i:i + per]) for i in range(0, len(losses), per)]
    hi, lo = max(means), min(means)
    floor = max(hi - lo, 1e-6) / 64  # the excess a half row spans at the bottom

    def y(m: float) -> float:  # 0 at the lowest mean, 1 at the highest
        return math.log((m - lo + floor) / floor) / math.log((hi - lo + floor) / floor)

    levels = [1 + round(y(m) * (2 * rows - 1)) for m in means]  # half rows, 1..2*rows
    full, half = "\u2588", "\u2584"
    try:
        (full + half).encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        full, half = "#", "."
    out = []
    for row in range(rows, 0, -1):
        cells = "".join(full if lv >= 2 * row else half if lv == 2 * row - 1 else " " for lv in levels)
        top = lo - floor + floor * ((hi - lo + floor) / floor) ** ((2 * row - 1) / (2 * rows - 1))
        out.append(f"  {top:7.2f} |{cells}")
    return out


def _execute(defs, job: str, what: str, done: str, run_config: dict, instance, tags: dict,
             partition_key: str | None = None) -> bool:
    """Run a job in this process, quietly; say how it went (the run id points to the UI)."""
    t0 = time.time()
    res = defs.resolve_job_def(job).execute_in_process(
        run_config={**run_config, **QUIET}, instance=instance, partition_key=partition_key,
        tags=tags, raise_on_error=False)
    if not res.success:
        _say(f"{what} run {res.run_id} failed; see the Dagster UI")
        return False
    _say(f"{done} done in {time.time() - t0:.0f}s (run {res.run_id})")
    return True


def _command(name: str) -> str:
    """How to call a console script of this environment from the current directory: the venv's
    bin/ is usually not on PATH (scripts/run.sh does not activate it)."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        return name
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


if __name__ == "__main__":
    sys.exit(run_main())
