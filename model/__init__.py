"""GPT-2 in plain PyTorch. Imports nothing from training/, pipelines/, evaluation/, dagster or mlflow.

The names below load lazily: `model.tokenizer` is used by data-pipeline worker processes that
should not pay torch's import time and memory.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GPT": "model.gpt",
    "GPTConfig": "model.config",
    "PRESETS": "model.config",
    "KVCache": "model.kv_cache",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
