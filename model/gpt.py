"""GPT-2, written out: embeddings, pre-LayerNorm transformer blocks, tied LM head.

    python -c "from model import GPT, GPTConfig; print(GPT(GPTConfig.preset('tiny')))"

Module names follow OpenAI's checkpoint (transformer.h.0.attn.c_attn, ...) so the mapping to
Hugging Face's layout in hf_interop.py is a rename-free transpose. Shapes: B batch, T time,
C = n_embd, nh heads, hs = C / nh head size, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import GPTConfig
from model.kv_cache import KVCache


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's nn.LayerNorm cannot drop only the bias)."""

    def __init__(self, dim: int, bias: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.impl = config.attention
        self.dropout = config.dropout
        # Q, K and V for all heads in one matmul: (C) -> (3C).
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True  # scaled init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)  # (B, nh, start + T, hs): all keys so far
        y = self._attend(q, k, v, start)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))

    def _attend(self, q, k, v, start: int) -> torch.Tensor:
        T, S = q.size(-2), k.size(-2)
        dropout = self.dropout if self.training else 0.0
        # Query i sits at absolute position start + i and may see keys 0 .. start + i.
        # Without a cache (start == 0, S == T) that is the usual lower-triangular mask; a single
        # decoding step (T == 1) sees every cached key, so needs no mask at all.
        mask = None
        if T > 1 and start > 0:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=start)
        if self.impl == "sdpa":
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=(mask is None and T > 1)
            )
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, S)
        if T > 1:
            if mask is None:
                mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
            att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = F.dropout(att, p=dropout, training=self.training)
        return att @ v  # (B, nh, T, S) x (B, nh, S, hs) -> (B, nh, T, hs)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 used the tanh approximation of GELU ("gelu_new" in transformers).
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias, config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.bias, config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.embedding_rows, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=LayerNorm(config.n_embd, config.bias, config.layer_norm_eps),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.embedding_rows, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """GPT-2 init from our own generator, so a seed gives the same weights on any machine.

        normal(0, 0.02) for every matrix and embedding, zero biases, unit LayerNorm gains, and
        std * (2 * n_layer) ** -0.5 for projections that write into the residual stream (each
        block adds two, so the stream's variance stays O(1) with depth).
        """
        gen = torch.Generator(device="cpu").manual_seed(seed)
        residual_std = 0.02 * (2 * self.config.n_layer) ** -0.5
        for module in self.modules():  # a fixed order: the module tree's definition order
            if isinstance(module, nn.Linear):
                if module is self.lm_head:
                    continue  # tied to wte, initialised there
                std = residual_std if getattr(module, "is_residual_projection", False) else 0.02
                _normal_(module.weight, std, gen)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                _normal_(module.weight, 0.02, gen)
            elif isinstance(module, LayerNorm):
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()

    def num_parameters(self, exclude_position_embeddings: bool = False) -> int:
        """Parameters counted once (the tied LM head shares wte's storage)."""
        n = sum(p.numel() for p in self.parameters())  # parameters() already de-duplicates
        if exclude_position_embeddings:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab_size), and the mean cross-entropy
        against targets (B, T) if given (targets == -1 are ignored)."""
        x = self.hidden_states(idx, cache)  # (B, T, C)
        # Only the first vocab_size rows of the (padded) tied matrix become logits: padding
        # rows can then never be sampled nor enter the softmax of the loss. Slicing rows of a
        # row-major matrix is a free view.
        logits = F.linear(x, self.lm_head.weight[: self.config.vocab_size])  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) -> the final LayerNorm's output (B, T, C), the LM head's input. Training
        uses it to fuse the head with the loss (training/fused_loss.py) without the logits."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.advance(T)
        return self.transformer.ln_f(x)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for incremental decoding of `batch_size` sequences."""
        ref = self.transformer.wte.weight
        return KVCache(
            n_layer=self.config.n_layer,
            batch_size=batch_size,
            n_head=self.config.n_head,
            head_dim=self.config.head_dim,
            max_len=max_len or self.config.block_size,
            device=ref.device,
            dtype=ref.dtype,
        )


def _normal_(tensor: torch.Tensor, std: float, gen: torch.Generator) -> None:
    # Draw on the CPU generator and copy, so the weights do not depend on the model's device.
    tensor.copy_(torch.empty(tensor.shape).normal_(0.0, std, generator=gen))
