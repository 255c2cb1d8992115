"""The hand-written training engine: AdamW, schedule, clipping, mixed precision, DDP, exact resume.

    hgpt train --preset tiny --data SHARD_DIR --out RUN_DIR [--resume]
    torchrun --nproc-per-node 2 -m training --preset tiny --data SHARD_DIR --out RUN_DIR

Imports are lazy so that `import training.config` stays light (the Dagster code location reads
the config without loading the loop).
"""

from __future__ import annotations

__all__ = ["Callback", "BaseCallback", "JsonlLogger", "NonFiniteLossError", "TrainConfig",
           "TrainResult", "TrainingInterrupted", "train"]


def __getattr__(name):
    if name in ("train", "TrainResult", "NonFiniteLossError", "TrainingInterrupted"):
        from training import loop
        return getattr(loop, name)
    if name in ("Callback", "BaseCallback", "JsonlLogger"):
        from training import callbacks
        return getattr(callbacks, name)
    if name == "TrainConfig":
        from training.config import TrainConfig
        return TrainConfig
    raise AttributeError(f"module 'training' has no attribute {name!r}")
