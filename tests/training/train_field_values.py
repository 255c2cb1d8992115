"""A value for every TrainConfig field, each different from the tiny preset's (and from what the
Dagster jobs add to it), valid together: the CLI and the Launchpad tests set each field to it and
check it arrives. A new TrainConfig field fails those tests until it has a value here."""

from __future__ import annotations

FIELD_VALUES = {
    "model": "gpt2",
    "model_overrides": {"n_layer": 2, "dropout": 0.1, "attention": "math", "bias": False},
    "data": ["shards/a", "shards/b"],
    "out": "runs/x",
    "batch_tokens": 8192,
    "micro_batch": 4,
    "seq_len": 128,
    "max_lr": 2e-3,
    "min_lr": 2e-5,
    "warmup_steps": 3,
    "max_steps": 7,
    "weight_decay": 0.05,
    "betas": (0.8, 0.9),
    "eps": 1e-6,
    "grad_clip": 0.5,
    "precision": "bf16",
    "compile": True,
    "compile_optimizer": True,
    "fused_loss": False,
    "seed": 7,
    "data_order": "llmc",
    "eval_every": 3,
    "eval_tokens": 1024,
    "checkpoint_every": 5,
    "keep_last": 4,
    "resume": True,
    "device": "cpu",
    "log_every": 3,
}
