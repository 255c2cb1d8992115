"""Held-out loss and perplexity on a fixed prefix of the validation shards.

Deterministic by construction: the first `max_tokens` tokens of the validation shards (in
sorted file order), cut into contiguous (batch, seq_len + 1) windows; the same checkpoint and
shards always give the same number. llm.c and modded-nanogpt use the first 10,485,760 tokens of
FineWeb's validation shard.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipelines.shard_format import open_tokens

LLMC_VAL_TOKENS = 10_485_760


@dataclass(frozen=True)
class HeldoutResult:
    loss: float
    perplexity: float
    tokens: int  # predicted tokens the mean is taken over

    def to_dict(self) -> dict:
        return asdict(self)


def validation_windows(shards: Iterable[Path], max_tokens: int, seq_len: int) -> np.ndarray:
    """(N, seq_len + 1) int64 windows covering the first tokens of the shards, no overlap but
    the one-token shift between inputs and targets."""
    need = max_tokens + 1
    parts, have = [], 0
    for path in sorted(Path(p) for p in shards):
        tokens = open_tokens(path)
        take = min(len(tokens), need - have)
        parts.append(np.asarray(tokens[:take], dtype=np.int64))
        have += take
        if have >= need:
            break
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    n_windows = (len(stream) - 1) // seq_len
    if n_windows == 0:
        raise ValueError(
            f"validation shards hold {len(stream)} tokens, fewer than one window of {seq_len + 1}"
        )
    starts = np.arange(n_windows) * seq_len
    return np.stack([stream[s : s + seq_len + 1] for s in starts])


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    shards: Iterable[Path],
    max_tokens: int = LLMC_VAL_TOKENS,
    batch_size: int = 8,
    seq_len: int | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> HeldoutResult:
    """Mean next-token cross-entropy over the first `max_tokens` validation tokens."""
    seq_len = seq_len or model.config.block_size
    windows = torch.from_numpy(validation_windows(shards, max_tokens, seq_len))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device_type = torch.device(device).type
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            _, loss = model(x, y)
        total += loss.float().item() * y.numel()  # float64 sum: order-stable across batch sizes
        count += y.numel()
    model.train(was_training)
    mean = total / count
    return HeldoutResult(loss=mean, perplexity=math.exp(mean), tokens=count)
