"""Shared fixtures: a small model and shard directories written with the real shard writer."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.shard_format import write_shard
from training.config import TrainConfig

# Small enough that a training step takes milliseconds on a 2-core CPU.
SMALL_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "vocab_size": 256,
               "padded_vocab_size": None}


def learnable_tokens(n: int, seed: int, vocab: int = 256) -> np.ndarray:
    """A token stream a small model can learn: noisy repetitions of a fixed 50-token phrase."""
    rng = np.random.default_rng(seed)
    phrase = np.random.default_rng(12345).integers(0, vocab, 50)
    stream = np.resize(phrase, n)
    noise = rng.random(n) < 0.1
    stream[noise] = rng.integers(0, vocab, int(noise.sum()))
    return stream


@pytest.fixture
def shard_dir(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    write_shard(d / "train_000000.bin", learnable_tokens(30_000, 1))
    write_shard(d / "train_000001.bin", learnable_tokens(20_000, 2))
    write_shard(d / "val_000000.bin", learnable_tokens(5_000, 3))
    return d


def small_config(shard_dir, out, **overrides) -> TrainConfig:
    base = dict(model="tiny", model_overrides=SMALL_MODEL, data=[str(shard_dir)], out=str(out),
                batch_tokens=256, micro_batch=4, seq_len=32, max_lr=3e-3, min_lr=3e-4,
                warmup_steps=2, max_steps=8, eval_every=4, eval_tokens=1024,
                checkpoint_every=4, keep_last=2, seed=7, device="cpu", precision="fp32")
    base.update(overrides)
    return TrainConfig(**base)
