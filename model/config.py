"""Typed, validated GPT-2 architecture configuration and the named presets.

The model config describes only the network; how it is trained lives in training/.
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


# Upper bounds on every size of a GPTConfig, and on the parameter count they multiply to. A
# config is often data from a file (a checkpoint, a transformers directory); without bounds a
# config.json with n_layer=10**9 would allocate until the machine kills the process, before the
# weights were ever looked at. Each bound is far above GPT-2's largest size (gpt2-xl: 48 layers,
# 25 heads, width 1600, context 1024, vocabulary 50257, 1.56B parameters).
SIZE_LIMITS: dict[str, int] = {
    "n_layer": 1024,
    "n_head": 1024,
    "n_embd": 65536,
    "block_size": 1 << 20,
    "vocab_size": 1 << 22,
    "padded_vocab_size": 1 << 22,
    "parameters": 20_000_000_000,  # 80 GB of fp32 weights, 13x gpt2-xl
}


@dataclass(frozen=True)
class GPTConfig(ConfigSerialisation):
    """Shape of a GPT-2 model. Every size, and the parameter count, is bounded by SIZE_LIMITS.

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
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "padded_vocab_size"):
            value = getattr(self, name)
            if value is None and name == "padded_vocab_size":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
            if value > SIZE_LIMITS[name]:
                raise ValueError(f"GPTConfig.{name} = {value} exceeds the limit of "
                                 f"{SIZE_LIMITS[name]} (SIZE_LIMITS[{name!r}])")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.padded_vocab_size is not None and self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"GPTConfig.padded_vocab_size ({self.padded_vocab_size}) must be >= "
                f"vocab_size ({self.vocab_size})"
            )
        if self.num_parameters > SIZE_LIMITS["parameters"]:
            raise ValueError(
                f"GPTConfig describes {self.num_parameters} parameters, over the limit of "
                f"{SIZE_LIMITS['parameters']} (SIZE_LIMITS['parameters'])"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"GPTConfig.bias must be true or false, got {self.bias!r}")
        if self.attention not in ("sdpa", "math"):
            raise ValueError(f"GPTConfig.attention must be 'sdpa' or 'math', got {self.attention!r}")
        if (not isinstance(self.layer_norm_eps, (int, float)) or isinstance(self.layer_norm_eps, bool)
                or not 0.0 < self.layer_norm_eps < 1.0):
            raise ValueError(f"GPTConfig.layer_norm_eps must be in (0, 1), got {self.layer_norm_eps!r}")

    @property
    def num_parameters(self) -> int:
        """Parameters of the model this config builds (the tied LM head counted once),
        computed without building it. model.gpt.GPT.num_parameters counts the built model;
        a test keeps the two equal."""
        C = self.n_embd
        biases = 11 * C if self.bias else 0  # c_attn 3C, c_proj C, c_fc 4C, c_proj C, ln 2C
        gains = 2 * C  # ln_1, ln_2
        per_layer = 12 * C * C + gains + biases  # c_attn 3C^2, c_proj C^2, c_fc and c_proj 4C^2
        ln_f = 2 * C if self.bias else C
        return (self.embedding_rows + self.block_size) * C + self.n_layer * per_layer + ln_f

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
