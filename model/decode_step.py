"""One decoding step of a GPT, written without module calls: the newest token of each sequence
in, next-token logits out, keys and values read from and appended to the KV cache.

    step = DecodeStep(gpt)                 # eval mode, under torch.inference_mode()
    cache = gpt.new_cache(batch, max_len)
    hidden = gpt.hidden_states(prompt, cache)          # prefill as usual
    logits = step(next_tokens, cache)                  # (B,) -> (B, vocab_size)

Why: at batch 1 a step multiplies each weight matrix by one vector, so its cost is reading the
weights once plus a fixed cost per operation. The module path (GPT.hidden_states) adds module
calls, 3-D views and transposes, and SDPA's kernel, which for a single query costs more than the
two small batched products it replaces here. For the tiny preset that fixed part is a third of
a step. The operations are the module path's (layer norms, the same linear layers as
addmm(bias, x, W^T), tanh GELU), on (B, C) rows; only the attention is written out, so logits
agree with the module path to fp32 rounding (~1e-7), not bit for bit, and greedy tokens are the
same (tests/model/test_decode_step.py, tests/evaluation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.kv_cache import KVCache
from model.screened_argmax import head_argmax


class DecodeStep:
    """Holds views of the GPT's parameters (not copies): later in-place weight updates show."""

    def __init__(self, gpt) -> None:
        cfg = gpt.config
        self.n_head, self.head_dim, self.n_embd = cfg.n_head, cfg.head_dim, cfg.n_embd
        self.eps = cfg.layer_norm_eps
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.block_size = cfg.block_size
        t = gpt.transformer

        def linear(m):  # (bias, W^T) for addmm(bias, x, W^T) = F.linear(x, W, bias)
            bias = m.bias if m.bias is not None else torch.zeros(m.out_features, dtype=m.weight.dtype,
                                                                   device=m.weight.device)
            return bias, m.weight.t()

        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.layers = [
            (b.ln_1.weight, b.ln_1.bias, *linear(b.attn.c_attn), *linear(b.attn.c_proj),
             b.ln_2.weight, b.ln_2.bias, *linear(b.mlp.c_fc), *linear(b.mlp.c_proj))
            for b in t.h
        ]
        self.ln_f = (t.ln_f.weight, t.ln_f.bias)
        self.head = gpt.lm_head.weight[: cfg.vocab_size]  # real vocabulary only, as GPT.forward
        self._gpt = gpt

    def __call__(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """tokens (B,) at position cache.pos -> logits (B, vocab_size); advances the cache."""
        return F.linear(self.hidden(tokens, cache), self.head)

    def greedy(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """tokens (B,) -> the most likely next tokens (B,), as self(tokens, cache).argmax(-1),
        but screening the LM head with an fp16 copy where that reads fewer bytes
        (model/screened_argmax.py)."""
        return head_argmax(self.hidden(tokens, cache), self._gpt.lm_head.weight, self.head.size(0))

    def hidden(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """tokens (B,) -> the final LayerNorm's output (B, C), the LM head's input."""
        if self._gpt.training:
            raise RuntimeError("DecodeStep runs the model in eval mode only (no dropout)")
        pos, end = cache.pos, cache.pos + 1
        if end > min(self.block_size, cache.max_len):
            raise ValueError(f"sequence of {end} tokens exceeds the context "
                             f"(block_size {self.block_size}, KV cache {cache.max_len})")
        B, C, nh, hs = tokens.size(0), self.n_embd, self.n_head, self.head_dim
        x = F.embedding(tokens, self.wte) + self.wpe[pos]  # (B, C)
        shape, eps, addmm, bmm = (C,), self.eps, torch.addmm, torch.bmm
        # Each layer's keys and values as (B * nh, max_len, hs), written at `pos` directly
        # (what KVCache.update does, without a method call per layer).
        keys = cache.k.view(-1, B * nh, cache.max_len, hs).unbind(0)
        values = cache.v.view(-1, B * nh, cache.max_len, hs).unbind(0)
        for layer, (w1, b1, ba, wa, bp, wp, w2, b2, bf, wf, bm, wm) in enumerate(self.layers):
            qkv = addmm(ba, F.layer_norm(x, shape, w1, b1, eps), wa)  # (B, 3C)
            # (B, 3C) -> q, k, v as (B * nh, 1, hs): heads as a batch, one query position.
            q, k, v = qkv.view(B, 3, nh, hs).transpose(0, 1).reshape(3, B * nh, 1, hs).unbind(0)
            k_all, v_all = keys[layer], values[layer]
            k_all[:, pos:end] = k
            v_all[:, pos:end] = v
            # One query sees every cached key: no mask. Written out: for a single query SDPA's
            # kernel costs more than these small batched products.
            att = bmm(q, k_all[:, :end].transpose(1, 2)).mul_(self.scale).softmax(-1)  # (B*nh, 1, end)
            y = bmm(att, v_all[:, :end]).view(B, C)  # heads side by side
            x = addmm(bp, y, wp).add_(x)
            h = F.gelu(addmm(bf, F.layer_norm(x, shape, w2, b2, eps), wf), approximate="tanh")
            x = addmm(bm, h, wm).add_(x)
        cache.advance(1)
        return F.layer_norm(x, shape, *self.ln_f, eps)
