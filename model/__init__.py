"""GPT-2 in plain PyTorch. Imports nothing from training/, pipelines/, evaluation/, dagster or mlflow."""

from model.config import PRESETS, GPTConfig
from model.gpt import GPT
from model.kv_cache import KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "PRESETS"]
