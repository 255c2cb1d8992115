"""Key/value cache for incremental decoding: each new token attends to stored keys instead of
recomputing the whole prefix. Preallocated to `max_len` so decoding never reallocates."""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer, batch_size, n_head, head_dim, max_len, device, dtype):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # tokens already stored (the absolute position of the next token)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's keys/values (B, nh, T, hs) for `layer`; return all keys/values so far."""
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions requested, capacity {self.max_len}")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Called once per forward pass, after every layer has stored its keys."""
        self.pos += n

    def rewind(self, pos: int) -> None:
        """Forget every position from `pos` on (speculative decoding drops rejected guesses).
        The stale keys stay in memory and are overwritten by the next update."""
        if not 0 <= pos <= self.pos:
            raise ValueError(f"cannot rewind KV cache to {pos}: it holds {self.pos} positions")
        self.pos = pos

    def reset(self) -> None:
        self.pos = 0
