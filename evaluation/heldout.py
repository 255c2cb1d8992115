"""Held-out loss and perplexity on a fixed prefix of the validation shards.

    hgpt eval CHECKPOINT --val-dir DATA/val --max-tokens 10485760

Deterministic by construction: the first `max_tokens` tokens of the validation shards (in sorted
file order), cut into contiguous (seq_len + 1)-token windows; the same checkpoint and shards
always give the same number. llm.c and modded-nanogpt use the first 10,485,760 tokens of
FineWeb's validation shard.

DDP: when torch.distributed is initialised, rank r evaluates the global batches r, r + world, ...
(the very same batches, same shapes, as a single process would run), keeps one loss sum per
window, and an all-reduce of that per-window vector (each entry is non-zero on exactly one rank,
so the sum is exact) hands every rank all the window sums, which are then added in window order.
The result is bit-for-bit the single-process one, on every rank.

Next to the loss (nats per target token) comes bits per byte (evaluation/bpb.py): the same
sums divided by the UTF-8 bytes of the targets, comparable across tokenizers.

Token ids are range-checked as they are read (the model's `vocab_size`): an id the model has no
row for stops the evaluation naming the shard and the token offset, instead of an IndexError from
inside the embedding or a loss quietly computed on a padding row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.bpb import bits_per_byte, nats_and_bytes
from model.checkpoint import unwrap_model
from pipelines.shard_format import check_token_ids, open_tokens

LLMC_VAL_TOKENS = 10_485_760


@dataclass(frozen=True)
class HeldoutResult:
    loss: float  # mean nats per target token
    perplexity: float
    tokens: int  # predicted (target) tokens the mean is taken over
    bpb: float  # bits per byte of the same targets (evaluation/bpb.py)
    bytes: int  # UTF-8 bytes of those targets (<|endoftext|> counts 0)

    def to_dict(self) -> dict:
        return asdict(self)


def validation_windows(shards: Iterable[Path], max_tokens: int, seq_len: int,
                       vocab_size: int | None = None) -> np.ndarray:
    """(N, seq_len + 1) int64 windows covering the first tokens of the shards, no overlap but
    the one-token shift between inputs and targets. With `vocab_size`, every token read is
    checked to be below it (ShardError naming shard and offset)."""
    need = max_tokens + 1
    parts, have = [], 0
    for path in sorted(Path(p) for p in shards):
        tokens = open_tokens(path)
        take = min(len(tokens), need - have)
        parts.append(np.asarray(tokens[:take], dtype=np.int64))
        if vocab_size is not None:  # a max over tokens just copied into memory
            check_token_ids(parts[-1], vocab_size, path)
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


def validation_fingerprint(shards: Iterable[Path], max_tokens: int = LLMC_VAL_TOKENS) -> str:
    """sha256 of exactly the tokens evaluate_loss reads (max_tokens + 1, as little-endian uint16):
    two losses are comparable only when their fingerprints (and seq_len) agree. Store it as the
    `val_data` metric of evaluation.champion."""
    import hashlib

    digest, need = hashlib.sha256(), max_tokens + 1
    for path in sorted(Path(p) for p in shards):
        tokens = open_tokens(path)[:need]
        digest.update(np.ascontiguousarray(tokens, dtype="<u2").tobytes())
        need -= len(tokens)
        if need <= 0:
            break
    return digest.hexdigest()


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    shards: Iterable[Path],
    max_tokens: int = LLMC_VAL_TOKENS,
    batch_size: int = 8,
    seq_len: int | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    vocab_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeldoutResult:
    """Mean next-token cross-entropy over the first `max_tokens` validation tokens.

    Ids are checked against `vocab_size`, by default the model's own (`config.vocab_size`; a
    model without our config, such as a wrapped transformers one, is checked only if given one).
    Under torch.distributed every rank must call this with the same arguments; all get the same
    result. `model` may be wrapped in DDP (its inner module is used: no gradient sync needed).
    `progress(done, total)`, if given, is called with target tokens scored so far (this rank's
    share under torch.distributed): once with 0 at the start, then after every batch."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module  # no DDP forward hooks: evaluation never syncs gradients
    config = getattr(unwrap_model(model), "config", None)
    seq_len = seq_len or config.block_size
    vocab_size = vocab_size or getattr(config, "vocab_size", None)
    windows = torch.from_numpy(validation_windows(shards, max_tokens, seq_len, vocab_size))
    rank, world = _dist_rank_world()
    n_windows = len(windows)
    # float64 sums per window: the final total is then independent of how windows were batched
    # across ranks, and float64 keeps 10M-token sums from drifting. Columns: nats of all targets,
    # nats of the targets that have bytes, and their bytes (bits per byte).
    window_sums = torch.zeros(n_windows, 3, dtype=torch.float64, device=device)
    total, done = n_windows * seq_len, 0
    if progress is not None:
        progress(0, total)  # the total, before the first (possibly long) batch
    was_training = model.training
    model.eval()
    device_type = torch.device(device).type
    try:
        for b, start in enumerate(range(0, n_windows, batch_size)):
            if b % world != rank:
                continue
            batch = windows[start : start + batch_size].to(device)
            x, y = batch[:, :-1], batch[:, 1:]
            with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                logits, _ = model(x)
            losses = F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none"
            ).view(y.shape)  # (B, T)
            byte_nats, n_bytes = nats_and_bytes(losses, y, dim=1)
            window_sums[start : start + len(batch)] = torch.stack(
                [losses.double().sum(dim=1), byte_nats, n_bytes], dim=1)
            if progress is not None:
                done += len(batch) * seq_len
                progress(done, total)
    finally:
        model.train(was_training)
    if world > 1:
        torch.distributed.all_reduce(window_sums, op=torch.distributed.ReduceOp.SUM)
    nats, byte_nats, n_bytes = window_sums.sum(dim=0).tolist()
    mean = nats / total
    return HeldoutResult(loss=mean, perplexity=math.exp(min(mean, 700)), tokens=total,
                         bpb=bits_per_byte(byte_nats, n_bytes), bytes=int(n_bytes))
