"""Bits per byte: the loss in a unit that does not depend on the tokenizer.

    from evaluation.bpb import bits_per_byte, target_bytes
    bpb = bits_per_byte(nats_sum, n_bytes)

A loss in nats per token rewards a tokenizer with long tokens; bits per byte divides the same
information by the text it covers, so models with different vocabularies compare (nanochat's
definition):

    bpb = sum over target tokens of their loss in nats / (ln 2 x sum of their UTF-8 byte lengths)

Each GPT-2 token id stands for a fixed byte string (byte-level BPE), so its length is a table,
built once from the tokenizer (tiktoken's `decode_single_token_bytes`). <|endoftext|> is a
special token: it is no text, so it counts 0 bytes, and, as in nanochat, a target with 0 bytes
is left out of the numerator as well (its nats would otherwise be spread over other tokens'
bytes). Ids past GPT-2's 50,257 (the padded rows of a model's embedding) cover no text either.
The mean loss per token still counts every target, <|endoftext|> included.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

# Room for every id a uint16 shard can hold: ids without bytes map to 0.
_TABLE_SIZE = 1 << 16


@functools.cache
def token_byte_lengths() -> np.ndarray:
    """(65536,) int64: the UTF-8 byte length of each GPT-2 token id; 0 for <|endoftext|> and
    for ids GPT-2 does not have."""
    from model.tokenizer import EOT_TOKEN, N_VOCAB, get_encoding

    enc = get_encoding()
    table = np.zeros(_TABLE_SIZE, dtype=np.int64)
    for i in range(N_VOCAB):
        if i != EOT_TOKEN:
            table[i] = len(enc.decode_single_token_bytes(i))
    table.flags.writeable = False  # shared by every caller through the cache
    return table


@functools.cache
def _table_on(device: str) -> torch.Tensor:
    return torch.from_numpy(token_byte_lengths().copy()).to(device)


def target_bytes(targets: torch.Tensor) -> torch.Tensor:
    """UTF-8 byte lengths of the target ids, same shape (int64, on the targets' device)."""
    return _table_on(str(targets.device))[targets]


def nats_and_bytes(losses: torch.Tensor, targets: torch.Tensor, dim: int = -1):
    """(nats, bytes) summed along `dim` in float64, for per-token losses (nats) of `targets`:
    the targets that cover no bytes (<|endoftext|>) are left out of both, as bits_per_byte
    expects."""
    n_bytes = target_bytes(targets)
    nats = torch.where(n_bytes > 0, losses.double(), torch.zeros((), dtype=torch.float64,
                                                                  device=losses.device))
    return nats.sum(dim=dim), n_bytes.double().sum(dim=dim)


def bits_per_byte(nats_sum: float, n_bytes: float) -> float:
    """Bits per byte from a sum of per-token nats and the byte count of those tokens (nan when
    the targets hold no bytes at all)."""
    return nats_sum / (math.log(2) * n_bytes) if n_bytes > 0 else float("nan")
