"""Training and evaluation assets: trained_checkpoint -> evaluation, samples.

`trained_checkpoint` trains on the token shards of every materialized snapshot (or the subset
named in its config), in a Dagster Pipes subprocess under torchrun (pipelines/orchestration/
train_entry.py), holding the `gpu` concurrency pool. It records exactly which snapshots (keys and
content hashes) it used: in the model checkpoint's own index, in the asset metadata, as MLflow
tags, and on the registered model version.
"""


import json
import math
from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AutomationCondition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pipelines.orchestration.assets.data import filtered_documents, token_shards
from pipelines.orchestration.configs import EvaluationConfig, SamplesConfig, TrainingConfig
from pipelines.orchestration.metadata import git_commit, hash_strings, json_md, md_table
from pipelines.orchestration.mlflow_resource import TAG_MODEL_ID, TAG_MODEL_VERSION, TAG_NOTE, MLflowTracking
from pipelines.orchestration.pipes_launcher import TrainingLauncher
from pipelines.orchestration.resources import WorkspaceResource

TRAIN_ENTRY = "pipelines.orchestration.train_entry"
MODEL_SUBDIR = "model"  # RUN_DIR/model: the final weights as a model-only checkpoint + lineage

# "New shards since the last training": some snapshot's token_shards were (re)materialized after
# this asset was last requested or materialized, and nothing upstream is still running.
NEW_SHARDS_SINCE_LAST_TRAINING = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("new shards since the last training")


def latest_metadata(instance, key: AssetKey | str, partition: str | None = None) -> dict | None:
    """Metadata (raw values) of the newest materialization of an asset (partition)."""
    key = AssetKey(key) if isinstance(key, str) else key
    flt = AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(flt, limit=1).records
    if not records:
        return None
    mat = records[0].asset_materialization
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def training_inputs(instance, workspace: WorkspaceResource, selected: list[str] | None) -> list[dict]:
    """The snapshots to train on, each with its shard directory and content hash."""
    materialized = instance.get_materialized_partitions(token_shards.key)
    if selected:
        missing = sorted(set(selected) - set(materialized))
        if missing:
            raise Failure(f"token_shards not materialized for snapshot(s): {', '.join(missing)}")
        keys = sorted(set(selected))
    else:
        keys = sorted(materialized)
    if not keys:
        raise Failure("no snapshot has materialized token_shards yet: process a snapshot first")
    inputs = []
    for key in keys:
        shards = latest_metadata(instance, token_shards.key, key) or {}
        filtered = latest_metadata(instance, filtered_documents.key, key) or {}
        shard_dir = workspace.ws().snapshot_dir(key) / "shards"
        if not any(shard_dir.glob("train_*.bin")):
            raise Failure(f"{shard_dir}: no train_*.bin shards for snapshot {key}")
        inputs.append({
            "snapshot": key,
            "shard_dir": str(shard_dir),
            "content_hash": shards.get("content_hash"),
            "filter_config_sha256": filtered.get("filter_config_sha256"),
        })
    return inputs


def lineage_of(inputs: list[dict]) -> dict:
    return {
        "snapshot_keys": [i["snapshot"] for i in inputs],
        "shard_content_hashes": {i["snapshot"]: i["content_hash"] for i in inputs},
        "shard_manifest_hash": hash_strings(f"{i['snapshot']}={i['content_hash']}" for i in inputs),
        "filter_config_sha256": sorted({str(i["filter_config_sha256"]) for i in inputs}),
        "git_commit": git_commit(),
    }


def lineage_tags(lineage: dict) -> dict[str, str]:
    return {
        "hgpt.snapshot_keys": ",".join(lineage["snapshot_keys"]),
        "hgpt.shard_manifest_hash": lineage["shard_manifest_hash"],
        "hgpt.filter_config_sha256": ",".join(lineage["filter_config_sha256"]),
        "hgpt.git_commit": lineage["git_commit"],
    }


def export_model(run_dir: Path, lineage: dict) -> tuple[Path, Path]:
    """The newest verified training checkpoint, re-written as a model-only checkpoint under
    RUN_DIR/model whose checkpoint.json metadata holds the lineage (snapshot keys, hashes)."""
    from model.checkpoint import load_model, resolve_checkpoint, write_checkpoint

    ckpt = resolve_checkpoint(run_dir)  # verifies hashes of every file
    model = load_model(ckpt)
    source = {"training_checkpoint": str(ckpt), "step": ckpt.name}
    out = write_checkpoint(run_dir / MODEL_SUBDIR, model, metadata={**lineage, **source})
    return ckpt, out


def version_description(lineage: dict, result: dict) -> str:
    """A model version's description: what it was trained on and how well it did there."""
    val = (f"; training's val loss {result['val_loss']:.4f} nats/token"
           + (f", {result['val_bpb']:.4f} bits/byte" if isinstance(result.get("val_bpb"), float) else "")
           if isinstance(result.get("val_loss"), float) else "")
    return (f"Trained on snapshot(s) {', '.join(lineage['snapshot_keys'])} (shard manifest "
            f"{lineage['shard_manifest_hash'][:12]}) for {result.get('step', '?')} steps at commit "
            f"{lineage['git_commit'][:12]}{val}. The evaluation asset's held-out loss decides the "
            "champion alias.")


def log_model(mlflow: MLflowTracking, run, model_dir: Path, lineage: dict, context,
              result: dict | None = None) -> dict:
    """The checkpoint as an MLflow pyfunc model (from code, no pickle) and a registered version,
    with a signature (prompts in, continuations out, generation params) and an input example."""
    import mlflow as mlflow_lib

    from pipelines.orchestration.mlflow_model import PARAM_DEFAULTS, PROMPT_EXAMPLE
    from pipelines.orchestration.mlflow_resource import REGISTERED_MODEL_DESCRIPTION

    mlflow_lib.set_tracking_uri(mlflow.resolved_uri())
    mlflow_lib.set_registry_uri(mlflow.resolved_uri())
    code = Path(__file__).resolve().parents[1] / "mlflow_model.py"
    with mlflow_lib.start_run(run_id=run.run_id):
        info = mlflow_lib.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"checkpoint": str(model_dir)},
            pip_requirements=["torch", "safetensors", "tiktoken", "numpy", "homebrew-gpt2"],
            # predict's type hints give the input/output schema, this example's params the
            # params schema (and MLflow runs predict on it once, so a broken model fails here)
            input_example=(PROMPT_EXAMPLE, PARAM_DEFAULTS),
            registered_model_name=mlflow.registered_model_name,
            await_registration_for=60,
            tags=lineage_tags(lineage),
        )
    version = str(info.registered_model_version)
    client = mlflow.client()
    for k, v in {**lineage_tags(lineage), "dagster.run_id": context.run.run_id,
                 "mlflow.run_id": run.run_id, TAG_MODEL_ID: info.model_id}.items():
        client.set_model_version_tag(mlflow.registered_model_name, version, k, v)
    client.update_registered_model(mlflow.registered_model_name, description=REGISTERED_MODEL_DESCRIPTION)
    described = version_description(lineage, result or {})
    client.update_model_version(mlflow.registered_model_name, version, description=described)
    # the LoggedModel's own page shows this tag as its description
    client.set_logged_model_tags(info.model_id, {TAG_NOTE: described})
    return {"model_uri": info.model_uri, "registered_model": mlflow.registered_model_name,
            "version": version, "model_id": info.model_id}


def training_datasets(inputs: list[dict], instance) -> list:
    """The snapshots trained on as MLflow datasets (see snapshot_dataset)."""
    from pipelines.orchestration.mlflow_resource import snapshot_dataset

    out = []
    for i in inputs:
        shards = latest_metadata(instance, token_shards.key, i["snapshot"]) or {}
        profile = {k: shards[k] for k in ("train_tokens", "val_tokens", "documents", "shards") if k in shards}
        out.append(snapshot_dataset(i["snapshot"], i["content_hash"] or "unknown", i["shard_dir"], profile))
    return out


def loss_curve(run_dir: Path) -> dict:
    """Training's loss and val loss per step as Dagster metadata.

    Dagster's Plots tab draws a numeric metadata value across materializations (one point per
    training), not a curve within one run, and the OSS UI renders neither vega-lite nor a table
    as a chart. Markdown with an embedded PNG is shown as the image itself, so the curve is a
    small matplotlib plot in markdown, beside the numbers as a table (step, loss, val loss)."""
    from training.callbacks import read_metrics

    if not (run_dir / "metrics.jsonl").exists():
        return {}
    steps = read_metrics(run_dir, "step")
    evals = read_metrics(run_dir, "eval")
    rows = [{"step": s, "loss": float(steps[s]["loss"]) if s in steps else None,
             "val_loss": float(evals[s]["val_loss"]) if s in evals and "val_loss" in evals[s] else None}
            for s in sorted(set(steps) | set(evals))]
    rows = [r for r in rows if r["loss"] is not None or r["val_loss"] is not None]
    if not rows:
        return {}
    from dagster import TableColumn, TableRecord, TableSchema

    table = MetadataValue.table(
        records=[TableRecord(r) for r in rows],  # None where a step had no eval
        schema=TableSchema(columns=[TableColumn("step", "int"), TableColumn("loss", "float"),
                                    TableColumn("val_loss", "float")]))
    return {"loss_curve": _loss_plot(rows, run_dir / "loss_curve.png"), "loss_table": table}


def _loss_plot(rows: list[dict], path: Path) -> MetadataValue:
    import matplotlib

    matplotlib.use("Agg")  # no display; the figure only goes to a file
    import matplotlib.pyplot as plt

    from pipelines.orchestration.metadata import png_markdown

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    train = [(r["step"], r["loss"]) for r in rows if r["loss"] is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    if train:
        ax.plot(*zip(*train), label="loss (train batch)", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return png_markdown([path], "Loss per step")


def checkpoint_checks(result: dict, model_dir: Path) -> list[AssetCheckResult]:
    """trained_checkpoint's checks: a finite final loss, and the exported checkpoint verifies
    (every file present with the hash its index records)."""
    from model.checkpoint import CheckpointError, verify_checkpoint

    loss = result.get("train_loss")
    finite = isinstance(loss, (int, float)) and math.isfinite(loss)
    try:
        index = verify_checkpoint(model_dir)
        verified, problem = True, f"{len(index['files'])} files verified"
    except (CheckpointError, OSError, ValueError) as exc:
        verified, problem = False, str(exc)
    return [
        AssetCheckResult(check_name="final_loss_finite", passed=bool(finite),
                         severity=AssetCheckSeverity.ERROR,
                         metadata={"train_loss": float(loss) if isinstance(loss, (int, float)) else "missing"}),
        AssetCheckResult(check_name="checkpoint_verifies", passed=verified,
                         severity=AssetCheckSeverity.ERROR,
                         metadata={"model_dir": MetadataValue.path(str(model_dir)), "result": problem}),
    ]


@asset(
    group_name="training",
    deps=[AssetDep(token_shards, partition_mapping=AllPartitionMapping())],
    pool="gpu",
    kinds={"pytorch"},
    code_version="train-1",
    automation_condition=NEW_SHARDS_SINCE_LAST_TRAINING,
    description="GPT-2 trained from scratch on the token shards of the materialized snapshots, "
    "through Dagster Pipes under torchrun; the final weights as a verified safetensors checkpoint, "
    "an MLflow model and a registered model version with lineage tags.",
    check_specs=[
        AssetCheckSpec("final_loss_finite", asset="trained_checkpoint",
                       description="training's final loss is a finite number (no divergence)"),
        AssetCheckSpec("checkpoint_verifies", asset="trained_checkpoint",
                       description="the exported checkpoint's files all match the hashes its "
                       "index records (model.checkpoint.verify_checkpoint)"),
    ],
)
def trained_checkpoint(context: AssetExecutionContext, config: TrainingConfig,
                       workspace: WorkspaceResource, mlflow: MLflowTracking,
                       launcher: TrainingLauncher) -> MaterializeResult:
    inputs = training_inputs(context.instance, workspace, config.snapshots)
    lineage = lineage_of(inputs)
    run_dir = workspace.ws().runs / f"train-{context.run.run_id[:8]}"
    cfg = config.train_config(data=[i["shard_dir"] for i in inputs], out=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "lineage.json").write_text(json.dumps({**lineage, "inputs": inputs}, indent=2) + "\n")
    context.log.info(f"training on {len(inputs)} snapshot(s): {', '.join(lineage['snapshot_keys'])}")
    with mlflow.asset_run(context, run_name=f"train {cfg.model} {context.run.run_id[:8]}",
                          tags=lineage_tags(lineage),
                          description=f"GPT-2 ({cfg.model}) trained from scratch for {cfg.max_steps} "
                          f"steps on snapshot(s) {', '.join(lineage['snapshot_keys'])}, materializing "
                          "the Dagster asset trained_checkpoint; the evaluation and samples of this "
                          "model are the runs nested below.") as run:
        datasets = training_datasets(inputs, context.instance) if run is not None else []
        if run is not None:
            run.log_inputs(datasets, "training")
        spec = {
            "train_config": cfg.to_dict(),
            "lineage": lineage,
            "mlflow": {"tracking_uri": run.tracking_uri, "run_id": run.run_id} if run else None,
        }
        spec_path = run_dir / "dagster_spec.json"
        spec_path.write_text(json.dumps(spec, indent=2, default=str) + "\n")
        invocation = launcher.run(context=context, extras={"run_dir": str(run_dir)},
                                  module=TRAIN_ENTRY, args=["--spec", str(spec_path)])
        reported = {}
        try:
            reported = dict(invocation.get_materialize_result().metadata or {})
        except Exception:  # no materialization reported (e.g. Pipes disabled in the child)
            pass
        result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
        ckpt, model_dir = export_model(run_dir, lineage)
        metadata = {
            "snapshot_keys": MetadataValue.json(lineage["snapshot_keys"]),
            "inputs": MetadataValue.md(md_table(inputs)),
            "shard_manifest_hash": lineage["shard_manifest_hash"],
            "git_commit": lineage["git_commit"],
            "preset": str(getattr(config.preset, "value", config.preset)),
            "train_config": json_md(cfg.to_dict()),
            "run_dir": MetadataValue.path(str(run_dir)),
            "training_checkpoint": MetadataValue.path(str(ckpt)),
            "model_dir": MetadataValue.path(str(model_dir)),
            **{k: v for k, v in reported.items() if k != "train_result"},
        }
        for k in ("train_loss", "val_loss", "val_bpb", "val_tokens", "step", "tokens_seen"):
            if isinstance(result.get(k), (int, float)):
                metadata[k] = result[k]
        if isinstance(result.get("val_tokens"), int):
            # Training's own check on a prefix of the val shards (eval_tokens, kept small for
            # speed); the evaluation asset scores up to its max_tokens of them, so its number
            # can differ.
            metadata["val_loss_measured_on"] = (
                f"the first {result['val_tokens']:,} tokens of the val shards (eval_tokens "
                f"{cfg.eval_tokens:,} in whole windows), at step {result.get('step')}")
        metadata.update(loss_curve(run_dir))
        if run is not None:
            run.log_dict({**lineage, "inputs": inputs}, "lineage.json")
            run.log_artifacts(model_dir, "final_checkpoint")
            registered = log_model(mlflow, run, model_dir, lineage, context, result)
            # Training's own validation numbers on the model's page as well (the evaluation
            # asset adds its held-out loss and HellaSwag there).
            run.log_metrics({k: result[k] for k in ("val_loss", "val_bpb", "train_loss") if k in result},
                            step=result.get("step"), model_id=registered["model_id"],
                            dataset=datasets[0] if len(datasets) == 1 else None)
            metadata["registered_model"] = f"{registered['registered_model']} v{registered['version']}"
            metadata["registered_model_version"] = registered["version"]
            metadata["mlflow_model_uri"] = registered["model_uri"]
            metadata["mlflow_model_id"] = registered["model_id"]
            metadata.update(run.dagster_metadata())
    return MaterializeResult(metadata=metadata, check_results=checkpoint_checks(result, model_dir))


def _trained(context) -> dict:
    meta = latest_metadata(context.instance, trained_checkpoint.key)
    if not meta or "model_dir" not in meta:
        raise Failure("trained_checkpoint has no materialization yet")
    return meta


def _model_tags(trained: dict) -> dict:
    """Tags naming the model version (and LoggedModel) a run scored."""
    tags = {}
    if trained.get("registered_model_version"):
        tags[TAG_MODEL_VERSION] = str(trained["registered_model"])
    if trained.get("mlflow_model_id"):
        tags[TAG_MODEL_ID] = trained["mlflow_model_id"]
    return tags


def _nested_under_training(trained: dict, what: str) -> dict:
    """asset_run arguments that nest a run under the training run of the model it used."""
    parent = trained.get("mlflow_run_id")
    version = trained.get("registered_model", "")
    return {"parent_run_id": parent,
            "description": what + (f" ({version})." if version else ".")}


def _lineage_datasets(lineage: dict, workspace: WorkspaceResource) -> list:
    from pipelines.orchestration.mlflow_resource import snapshot_dataset

    hashes = lineage.get("shard_content_hashes") or {}
    return [snapshot_dataset(k, hashes.get(k) or "unknown", workspace.ws().snapshot_dir(k) / "shards")
            for k in lineage["snapshot_keys"]]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def unigram_baseline(train_files: list[Path], targets, max_train_tokens: int = 50_000_000) -> dict:
    """What a model that knows only token frequencies scores: the unigram distribution of the
    training shards (add-one smoothed over GPT-2's vocabulary) as cross-entropy on the very
    validation targets the model is scored on, plus that distribution's own entropy. A trained
    model's validation loss must be below the cross-entropy."""
    import numpy as np

    from model.tokenizer import N_VOCAB
    from pipelines.shard_format import open_tokens

    counts = np.zeros(max(N_VOCAB, 1 << 16), dtype=np.float64)
    seen = 0
    for f in train_files:
        tokens = open_tokens(f)[: max(0, max_train_tokens - seen)]
        counts += np.bincount(tokens, minlength=len(counts))
        seen += len(tokens)
        if seen >= max_train_tokens:
            break
    counts = counts[:N_VOCAB]
    p = (counts + 1.0) / (counts.sum() + N_VOCAB)
    q = counts[counts > 0] / counts.sum()
    targets = np.asarray(targets).reshape(-1)
    return {
        "unigram_cross_entropy": float(-np.log(p[targets]).mean()),
        "unigram_entropy_train": float(-(q * np.log(q)).sum()),
        "train_tokens_counted": int(seen),
    }


@asset(
    group_name="evaluation",
    deps=[trained_checkpoint],
    pool="gpu",
    kinds={"pytorch"},
    code_version="eval-1",
    automation_condition=AutomationCondition.eager(),
    description="Held-out loss on the val shards of the snapshots the model was trained on (and "
    "HellaSwag when a file is configured), compared with the unigram baseline; the `champion` "
    "alias in the MLflow registry moves to this version only when it is better.",
    check_specs=[AssetCheckSpec("val_loss_below_unigram_baseline", asset="evaluation",
                                description="validation loss is finite and below the loss of the "
                                "shards' unigram distribution on the same validation tokens")],
)
def evaluation(context: AssetExecutionContext, config: EvaluationConfig,
               workspace: WorkspaceResource, mlflow: MLflowTracking) -> MaterializeResult:
    from evaluation.heldout import evaluate_loss, validation_windows
    from evaluation.progress import Progress
    from model.checkpoint import load_model

    trained = _trained(context)
    model_dir = Path(trained["model_dir"])
    lineage = json.loads((model_dir / "checkpoint.json").read_text())["metadata"]
    keys = lineage["snapshot_keys"]
    shard_dirs = [workspace.ws().snapshot_dir(k) / "shards" for k in keys]
    val = sorted(f for d in shard_dirs for f in d.glob("val_*.bin"))
    train = sorted(f for d in shard_dirs for f in d.glob("train_*.bin"))
    if not val:
        raise Failure(f"no val_*.bin shards under {', '.join(map(str, shard_dirs))}")
    device = _device(config.device)
    model = load_model(model_dir, device=device)
    seq_len = model.config.block_size
    with mlflow.asset_run(context, tags={"hgpt.snapshot_keys": ",".join(keys), **_model_tags(trained)},
                          **_nested_under_training(trained, "Held-out loss, bits per byte and "
                          "HellaSwag of the model trained by the parent run")) as run:
        model_id = trained.get("mlflow_model_id")
        eval_datasets = _lineage_datasets(lineage, workspace) if run is not None else []
        if run is not None:
            run.log_inputs(eval_datasets, "evaluation", model_id=model_id)
        # Progress as lines in the run's log (every 10 s), not a bar on the process's stderr.
        with Progress("eval val", total=0, unit="tok", every_s=10, emit=context.log.info) as progress:
            held = evaluate_loss(model, val, max_tokens=config.max_tokens,
                                 batch_size=config.batch_size, seq_len=seq_len, device=device,
                                 progress=progress.update_to)
        # The same targets evaluate_loss scored: every window's tokens after the first.
        unigram = unigram_baseline(train, validation_windows(val, config.max_tokens, seq_len)[:, 1:])
        baseline = unigram["unigram_cross_entropy"]
        out = {"val_loss": held.loss, "val_bpb": held.bpb, "val_perplexity": held.perplexity,
               "val_tokens": held.tokens, "val_bytes": held.bytes, **unigram, "snapshot_keys": keys,
               "val_data": hash_strings(f"{p.parent.parent.name}/{p.name}" for p in val)}
        if config.hellaswag_path:
            from evaluation.hellaswag import evaluate_hellaswag

            hs = evaluate_hellaswag(model, config.hellaswag_path, limit=config.hellaswag_limit, device=device)
            out.update({"hellaswag_acc": hs["acc"], "hellaswag_acc_norm": hs["acc_norm"], "hellaswag_n": hs["n"]})
        metadata = {
            "val_loss": held.loss,
            "val_bpb": held.bpb,
            "val_perplexity": held.perplexity,
            "val_tokens": held.tokens,
            "val_bytes": held.bytes,
            "val_loss_measured_on": f"the first {held.tokens:,} tokens of the val shards "
            f"({len(val)} val_*.bin of {', '.join(keys)}; max_tokens {config.max_tokens:,})",
            "unigram_baseline": baseline,
            "unigram_entropy_train": unigram["unigram_entropy_train"],
            "model_dir": MetadataValue.path(str(model_dir)),
            "hellaswag": out.get("hellaswag_acc_norm", "skipped (no hellaswag_path configured)"),
        }
        version = trained.get("registered_model_version")
        if run is not None:
            run.log_metrics({k: v for k, v in out.items() if isinstance(v, (int, float))})
            # The held-out numbers on the LoggedModel's page, measured on the snapshot's val shards.
            run.log_metrics({k: out[k] for k in ("val_loss", "val_bpb", "hellaswag_acc_norm") if k in out},
                            model_id=model_id,
                            dataset=eval_datasets[0] if len(eval_datasets) == 1 else None)
            run.log_dict(out, "evaluation.json")
            if version:
                from evaluation.champion import promote_if_better

                metrics = {"val_loss": held.loss, "val_bpb": held.bpb, "val_tokens": held.tokens,
                           "val_data": out["val_data"]}
                if "hellaswag_acc_norm" in out:
                    metrics["hellaswag_acc_norm"] = out["hellaswag_acc_norm"]
                decision = promote_if_better(mlflow.registered_model_name, version, metrics,
                                             client=mlflow.client())
                mlflow.client().set_model_version_tag(mlflow.registered_model_name, version,
                                                      "hgpt.evaluation_run_id", run.run_id)
                out["champion_decision"] = decision.to_dict()
                metadata["champion_decision"] = ("promoted" if decision.promote else "kept") + f": {decision.reason}"
                run.set_tags({"hgpt.champion_decision": metadata["champion_decision"]})
            metadata.update(run.dagster_metadata())
        (model_dir.parent / "evaluation.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    passed = math.isfinite(held.loss) and held.loss < baseline
    check = AssetCheckResult(
        check_name="val_loss_below_unigram_baseline",
        passed=bool(passed),
        severity=AssetCheckSeverity.ERROR,
        metadata={"val_loss": held.loss, "val_bpb": held.bpb, "unigram_baseline": baseline,
                  "margin": baseline - held.loss if math.isfinite(held.loss) else float("nan")},
    )
    return MaterializeResult(metadata=metadata, check_results=[check])


@asset(
    group_name="evaluation",
    deps=[trained_checkpoint],
    pool="gpu",
    kinds={"pytorch"},
    code_version="samples-1",
    automation_condition=AutomationCondition.eager(),
    description="Text sampled from the trained model for fixed prompts and seeds (reproducible), "
    "as markdown in the Dagster UI and a text artifact in MLflow.",
    check_specs=[AssetCheckSpec("samples_non_empty", asset="samples",
                                description="every prompt got a non-empty continuation")],
)
def samples(context: AssetExecutionContext, config: SamplesConfig, workspace: WorkspaceResource,
            mlflow: MLflowTracking) -> MaterializeResult:
    from evaluation.samples import samples_markdown, write_samples
    from model.checkpoint import load_model

    trained = _trained(context)
    model_dir = Path(trained["model_dir"])
    model = load_model(model_dir, device="cpu")
    with mlflow.asset_run(context, tags=_model_tags(trained), **_nested_under_training(
            trained, "Text sampled for fixed prompts and seeds from the model trained by the parent run")) as run:
        records = write_samples(model, config.prompts, seeds=[config.seed, config.seed + 1],
                                max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_k=config.top_k, top_p=config.top_p)
        text = samples_markdown(records, title=f"Samples from {model_dir}")
        (model_dir.parent / "samples.md").write_text(text)
        (model_dir.parent / "samples.json").write_text(json.dumps(records, indent=2) + "\n")
        metadata = {"samples": MetadataValue.md(text), "count": len(records)}
        if run is not None:
            run.log_text(text, "samples.md")
            run.log_dict(records, "samples.json")
            run.log_metrics({"samples": len(records),
                             "mean_chars": sum(len(r["text"]) for r in records) / max(1, len(records))})
            metadata.update(run.dagster_metadata())
    empty = [r for r in records if not r["text"].strip()]
    check = AssetCheckResult(
        check_name="samples_non_empty",
        passed=bool(records) and not empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={"samples": len(records), "empty": len(empty)},
    )
    return MaterializeResult(metadata=metadata, check_results=[check])


TRAINING_ASSETS = [trained_checkpoint]
EVALUATION_ASSETS = [evaluation, samples]
