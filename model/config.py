"""Typed, validated GPT-2 architecture configuration and the named presets.

The model config describes only the network; how it is trained lives in training/ (GUIDE lesson 4).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

AttentionImpl = Literal["sdpa", "math"]


class ConfigSerialisation:
    """JSON round trip for a config dataclass (GPTConfig here, TrainConfig in training/):
    unknown fields in the input are an error, not silently dropped."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class GPTConfig(ConfigSerialisation):
    """Shape of a GPT-2 model.

    Attributes:
        block_size: maximum context length (number of learned position embeddings).
        vocab_size: tokens the model can read and predict (GPT-2's BPE: 50257).
        padded_vocab_size: rows of the token-embedding matrix. GPUs run the embedding/LM-head
            matmuls faster at a multiple of 64 (llm.c pads 50257 -> 50304). The extra rows are
            never produced as logits, so they can never be sampled nor counted in the loss.
            None means no padding.
        n_layer: number of transformer blocks.
        n_head: attention heads per block; must divide n_embd.
        n_embd: residual-stream width.
        dropout: dropout probability on attention weights and residual branches (0 for pretraining).
        bias: whether Linear layers and LayerNorms have biases (GPT-2: True).
        attention: "sdpa" uses torch's fused scaled_dot_product_attention; "math" spells out
            softmax(QK^T / sqrt(d) + causal mask) V for readers. Both give the same numbers.
        layer_norm_eps: epsilon of every LayerNorm (GPT-2: 1e-5).
    """

    block_size: int = 1024
    vocab_size: int = 50257
    padded_vocab_size: int | None = None
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    attention: AttentionImpl = "sdpa"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.padded_vocab_size is not None and self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"GPTConfig.padded_vocab_size ({self.padded_vocab_size}) must be >= "
                f"vocab_size ({self.vocab_size})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in ("sdpa", "math"):
            raise ValueError(f"GPTConfig.attention must be 'sdpa' or 'math', got {self.attention!r}")

    @property
    def embedding_rows(self) -> int:
        return self.padded_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}"
            ) from None
        return base.replace(**overrides) if overrides else base


PRESETS: dict[str, GPTConfig] = {
    # OpenAI's four GPT-2 sizes (124M, 350M, 774M, 1558M parameters at vocab 50257).
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
    # Trains at a few thousand tokens/s on a 2-core CPU: the size the benchmarks and the
    # embedded end-to-end job use. Padded vocabulary as in llm.c.
    "tiny": GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=256, padded_vocab_size=50304),
}
