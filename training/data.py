"""Shard data loader: memory-mapped llm.c shards, deterministic order, resumable, DDP-sliced.

    shards = find_shards(["data/shards"])          # Shards(train=[...], val=[...])
    loader = ShardLoader(shards.train, batch=8, seq_len=256, seed=1337, rank=0, world_size=1)
    x, y = loader.next_batch()                      # (8, 256) int64 inputs and targets
    state = loader.state_dict(); loader.load_state_dict(state)

Two orders (`order=`, TrainConfig.data_order):

"shuffled" (the default). Every shard is cut into *windows* of seq_len + 1 tokens at stride
seq_len (consecutive windows share one token, so every token but a shard's short tail is
predicted once per epoch). Each epoch draws a permutation of all windows of all shards from
`seed + epoch`, and a micro-batch is the next `batch` windows of it: its sequences come from
anywhere in the corpus, as in nanoGPT's `get_batch`, but without replacement. An epoch runs on
into the next, so every window is seen exactly once per epoch. Memory: the shards stay
memory-mapped (a batch reads `batch` windows); the permutation costs 4 bytes per window
(8 past 2**32 windows), i.e. 0.2% of the corpus's size at seq_len 1024 (2 bytes a token).

"llmc" (llm.c's order). The training stream is a sequence of *chunks* of batch * seq_len + 1
consecutive tokens (the extra token gives the last target). Each epoch visits the shards in a
permutation drawn from `seed + epoch`, reads each shard's chunks front to back (stride
batch * seq_len, so no token is skipped) and drops a tail shorter than a chunk. It suits shards
whose documents are already shuffled (FineWeb's, and since tokenize-2 ours); on a corpus in
source order the sequences of a batch all come from one page.

In both orders every rank walks the same global stream of micro-batches and, at each call,
takes micro-batch `rank` of the next `world_size`: the ranks read disjoint slices, and the
position is the same on every rank, so rank 0's checkpoint resumes all of them. One process
with gradient accumulation A and N processes with accumulation A / N therefore see the same
global batches.

With `vocab_size`, each micro-batch is range-checked as it is read (`check_token_ids`, a max over
the batch's tokens, already in memory): an id the model has no row for stops the run before the
forward pass, naming the shard and the token offset. Opening a shard reads only its header, so
a run does not read the whole corpus before its first step; a bad id in a part of the corpus
no batch reaches never matters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipelines.shard_format import ShardError, check_token_ids, file_kind, open_tokens
from training.config import DATA_ORDERS


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
        elif path.exists():  # a FIFO would block the reader forever; a device is never a shard
            raise ShardError(f"{path}: is {file_kind(path.stat().st_mode)}, not a shard file")
        else:
            raise ValueError(f"{path}: no such shard directory or file")
    if not train:
        raise ValueError(f"no training shards (train_*.bin) in {', '.join(map(str, sources))}")
    return Shards(train=train, val=val)


ORDERS = DATA_ORDERS


class ShardLoader:
    """Batches of (inputs, targets) from token shards; see the module docstring for the orders."""

    def __init__(self, files: list[Path], batch: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, order: str = "shuffled",
                 vocab_size: int | None = None):
        if not files:
            raise ValueError("ShardLoader needs at least one shard file")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        if order not in ORDERS:
            raise ValueError(f"data order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.files = [Path(f) for f in files]
        self.batch, self.seq_len, self.seed = batch, seq_len, seed
        self.rank, self.world_size, self.order = rank, world_size, order
        self.chunk = batch * seq_len + 1
        self.vocab_size = vocab_size
        self._tokens = [open_tokens(f) for f in self.files]  # validates each header
        self.epoch = 0
        if order == "llmc":
            usable = [i for i in range(len(self.files)) if len(self._tokens[i]) >= self.chunk]
            if not usable:
                raise ShardError(
                    f"no shard holds a full batch of {self.chunk} tokens (batch {batch} x seq_len "
                    f"{seq_len} + 1): {', '.join(str(f) for f in self.files[:3])}"
                )
            self._usable = usable
            self.shard_pos, self.offset = 0, 0
            self._order = self._epoch_order(0)
        else:
            per_shard = np.array([max(0, (len(t) - 1) // seq_len) for t in self._tokens], np.int64)
            self._window_end = np.cumsum(per_shard)  # shard i holds global windows
            self._window_start = self._window_end - per_shard  # [start_i, end_i)
            self.n_windows = int(self._window_end[-1])
            if self.n_windows == 0:
                raise ShardError(
                    f"no shard holds one window of {seq_len + 1} tokens (seq_len {seq_len} + 1): "
                    f"{', '.join(str(f) for f in self.files[:3])}"
                )
            self.position = 0  # windows of this epoch's permutation already served
            self._perm = self._epoch_windows(0)

    # ---- llm.c's order --------------------------------------------------------------------

    def _epoch_order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch])  # independent of any global RNG
        return [self._usable[j] for j in rng.permutation(len(self._usable))]

    def _next_chunk(self) -> tuple[int, int]:
        """(shard index, token offset) of the next chunk in the global stream; advances."""
        while True:
            shard = self._order[self.shard_pos]
            if self.offset + self.chunk <= len(self._tokens[shard]):
                start = self.offset
                self.offset += self.chunk - 1  # the next chunk starts at this one's last target
                return shard, start
            self.shard_pos, self.offset = self.shard_pos + 1, 0
            if self.shard_pos == len(self._order):
                self.epoch, self.shard_pos = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)

    # ---- shuffled windows ---------------------------------------------------------------------

    def _epoch_windows(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        dtype = np.uint32 if self.n_windows <= 2**32 else np.int64
        return rng.permutation(self.n_windows).astype(dtype)

    def _next_windows(self) -> np.ndarray:
        """The next `batch` global window ids of the stream (crossing into the next epoch's
        permutation when this one runs out); advances."""
        out = []
        need = self.batch
        while need:
            take = self._perm[self.position : self.position + need]
            out.append(take)
            need -= len(take)
            self.position += len(take)
            if self.position == self.n_windows:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._epoch_windows(self.epoch)
        return np.concatenate(out).astype(np.int64)

    def _read_windows(self, windows: np.ndarray) -> torch.Tensor:
        shard = np.searchsorted(self._window_end, windows, side="right")
        starts = (windows - self._window_start[shard]) * self.seq_len
        buf = np.empty((len(windows), self.seq_len + 1), np.int64)
        for row, (s, start) in enumerate(zip(shard.tolist(), starts.tolist())):
            buf[row] = self._tokens[s][start : start + self.seq_len + 1]
        if self.vocab_size is not None and int(buf.max()) >= self.vocab_size:
            for row, (s, start) in enumerate(zip(shard.tolist(), starts.tolist())):
                check_token_ids(buf[row], self.vocab_size, self.files[s], offset=start)
        return torch.from_numpy(buf)

    # ---- both -------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (batch, seq_len) inputs and targets (int64, CPU)."""
        if self.order == "shuffled":
            mine = None
            for r in range(self.world_size):  # every rank advances past all ranks' batches
                windows = self._next_windows()
                if r == self.rank:
                    mine = windows
            buf = self._read_windows(mine)
            return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()
        mine = None
        for r in range(self.world_size):  # every rank advances past all ranks' chunks
            shard, start = self._next_chunk()
            if r == self.rank:
                mine = (shard, start)
        shard, start = mine
        span = self._tokens[shard][start:start + self.chunk]
        if self.vocab_size is not None:
            check_token_ids(span, self.vocab_size, self.files[shard], offset=start)
        buf = torch.from_numpy(np.asarray(span, dtype=np.int64))
        x = buf[:-1].view(self.batch, self.seq_len)
        y = buf[1:].view(self.batch, self.seq_len)
        return x, y

    def state_dict(self) -> dict:
        state = {"order": self.order, "epoch": self.epoch, "files": [str(f) for f in self.files],
                 "chunk": self.chunk, "seed": self.seed}
        if self.order == "llmc":
            return {**state, "shard_pos": self.shard_pos, "offset": self.offset}
        return {**state, "position": self.position, "windows": self.n_windows}

    def load_state_dict(self, state: dict) -> None:
        saved_order = state.get("order", "llmc")  # positions saved before there was a choice
        if saved_order != self.order:
            raise ValueError(
                f"data position was saved in the {saved_order!r} data order; this run uses "
                f"{self.order!r} (set data_order to {saved_order!r} to resume it)"
            )
        if state["chunk"] != self.chunk or state["seed"] != self.seed:
            raise ValueError(
                f"data position was saved for chunks of {state['chunk']} tokens and seed "
                f"{state['seed']}; this run uses {self.chunk} and {self.seed}"
            )
        if [Path(f).name for f in state["files"]] != [f.name for f in self.files]:
            raise ValueError("data position was saved for a different list of shard files")
        if self.order == "llmc":
            self.epoch, self.shard_pos, self.offset = state["epoch"], state["shard_pos"], state["offset"]
            self._order = self._epoch_order(self.epoch)
            return
        if state["windows"] != self.n_windows:
            raise ValueError(
                f"data position was saved for shards holding {state['windows']} windows; these "
                f"hold {self.n_windows} (the shards' contents changed)"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._perm = self._epoch_windows(self.epoch)
