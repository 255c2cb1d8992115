"""Shard data loader: memory-mapped llm.c shards, deterministic order, resumable, DDP-sliced.

    shards = find_shards(["data/shards"])          # Shards(train=[...], val=[...])
    loader = ShardLoader(shards.train, batch=8, seq_len=256, seed=1337, rank=0, world_size=1)
    x, y = loader.next_batch()                      # (8, 256) int64 inputs and targets
    state = loader.state_dict(); loader.load_state_dict(state)

The training stream is a sequence of *chunks* of batch * seq_len + 1 consecutive tokens (the
extra token gives the last target). Each epoch visits the shards in a permutation drawn from
`seed + epoch`, reads each shard's chunks front to back (stride batch * seq_len, so no token is
skipped) and drops a tail shorter than a chunk. Every rank walks the same global stream and, at
each call, takes chunk `rank` of the next `world_size` chunks: the ranks read disjoint slices,
and the position (epoch, shard, offset) is the same on every rank, so rank 0's checkpoint
resumes all of them. One process with gradient accumulation A and N processes with accumulation
A / N therefore see the same global batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipelines.shard_format import ShardError, open_tokens


@dataclass(frozen=True)
class Shards:
    train: list[Path]
    val: list[Path]


def find_shards(sources: Iterable[str | os.PathLike]) -> Shards:
    """Training (`train_*.bin`) and validation (`val_*.bin`) shards from directories or files.

    An explicit file counts as validation if its name starts with `val_`, else as training.
    """
    train, val = [], []
    sources = list(sources)
    if not sources:
        raise ValueError("no data given: pass one or more shard directories (--data DIR)")
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found_train = sorted(path.glob("train_*.bin"))
            found_val = sorted(path.glob("val_*.bin"))
            if not found_train and not found_val:
                raise ValueError(f"{path}: no train_*.bin or val_*.bin shards in this directory")
            train += found_train
            val += found_val
        elif path.is_file():
            (val if path.name.startswith("val_") else train).append(path)
        else:
            raise ValueError(f"{path}: no such shard directory or file")
    if not train:
        raise ValueError(f"no training shards (train_*.bin) in {', '.join(map(str, sources))}")
    return Shards(train=train, val=val)


class ShardLoader:
    """Batches of (inputs, targets) from token shards; see the module docstring for the order."""

    def __init__(self, files: list[Path], batch: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not files:
            raise ValueError("ShardLoader needs at least one shard file")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.files = [Path(f) for f in files]
        self.batch, self.seq_len, self.seed = batch, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.chunk = batch * seq_len + 1
        self._tokens: dict[int, np.memmap] = {}
        usable = [i for i in range(len(self.files)) if len(self._shard(i)) >= self.chunk]
        if not usable:
            raise ShardError(
                f"no shard holds a full batch of {self.chunk} tokens (batch {batch} x seq_len "
                f"{seq_len} + 1): {', '.join(str(f) for f in self.files[:3])}"
            )
        self._usable = usable
        self.epoch, self.shard_pos, self.offset = 0, 0, 0
        self._order = self._epoch_order(0)

    def _shard(self, i: int) -> np.memmap:
        if i not in self._tokens:
            self._tokens[i] = open_tokens(self.files[i])  # validates the header
        return self._tokens[i]

    def _epoch_order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch])  # independent of any global RNG
        return [self._usable[j] for j in rng.permutation(len(self._usable))]

    def _next_chunk(self) -> tuple[int, int]:
        """(shard index, token offset) of the next chunk in the global stream; advances."""
        while True:
            shard = self._order[self.shard_pos]
            if self.offset + self.chunk <= len(self._shard(shard)):
                start = self.offset
                self.offset += self.chunk - 1  # the next chunk starts at this one's last target
                return shard, start
            self.shard_pos, self.offset = self.shard_pos + 1, 0
            if self.shard_pos == len(self._order):
                self.epoch, self.shard_pos = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (batch, seq_len) inputs and targets (int64, CPU)."""
        mine = None
        for r in range(self.world_size):  # every rank advances past all ranks' chunks
            shard, start = self._next_chunk()
            if r == self.rank:
                mine = (shard, start)
        shard, start = mine
        buf = torch.from_numpy(np.asarray(self._shard(shard)[start:start + self.chunk],
                                          dtype=np.int64))
        x = buf[:-1].view(self.batch, self.seq_len)
        y = buf[1:].view(self.batch, self.seq_len)
        return x, y

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "offset": self.offset,
                "files": [str(f) for f in self.files], "chunk": self.chunk, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["chunk"] != self.chunk or state["seed"] != self.seed:
            raise ValueError(
                f"data position was saved for chunks of {state['chunk']} tokens and seed "
                f"{state['seed']}; this run uses {self.chunk} and {self.seed}"
            )
        if [Path(f).name for f in state["files"]] != [f.name for f in self.files]:
            raise ValueError("data position was saved for a different list of shard files")
        self.epoch, self.shard_pos, self.offset = state["epoch"], state["shard_pos"], state["offset"]
        self._order = self._epoch_order(self.epoch)
