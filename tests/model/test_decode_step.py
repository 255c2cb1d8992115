"""DecodeStep (the module-free decoding step) against the module path it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from model.decode_step import DecodeStep


def _model(**overrides) -> GPT:
    cfg = dict(block_size=64, vocab_size=300, padded_vocab_size=320, n_layer=2, n_head=4, n_embd=32)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg), seed=1).eval()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("overrides", [{}, {"bias": False}, {"attention": "math"}])
def test_decode_step_equals_the_module_path(batch, overrides):
    model = _model(**overrides)
    head = model.lm_head.weight[: model.config.vocab_size]
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 300, (batch, 10), generator=gen)
    with torch.inference_mode():
        fast, slow = model.new_cache(batch, 40), model.new_cache(batch, 40)
        model.hidden_states(prompt, fast)
        model.hidden_states(prompt, slow)
        step = DecodeStep(model)
        tokens = torch.randint(0, 300, (batch,), generator=gen)
        for _ in range(25):
            ours = step(tokens, fast)
            ref = F.linear(model.hidden_states(tokens.view(batch, 1), slow)[:, -1], head)
            assert ours.shape == (batch, 300)
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
            assert torch.equal(ours.argmax(-1), ref.argmax(-1))
            tokens = ours.argmax(-1)
        assert fast.pos == slow.pos == 35


def test_decode_step_refuses_training_mode_and_a_full_cache():
    model = _model()
    with torch.inference_mode():
        cache = model.new_cache(1, 11)
        model.hidden_states(torch.zeros(1, 10, dtype=torch.long), cache)
        step = DecodeStep(model)
        step(torch.tensor([1]), cache)  # position 10, the cache's last slot
        with pytest.raises(ValueError, match="exceeds the context"):
            step(torch.tensor([1]), cache)
        model.train()
        with pytest.raises(RuntimeError, match="eval mode"):
            step(torch.tensor([1]), cache)


@pytest.mark.parametrize("vocab", [300, 5000])  # 5000 rows: the fp16-screened head where available
def test_greedy_step_picks_the_argmax_of_the_logits(vocab):
    model = _model(vocab_size=vocab, padded_vocab_size=vocab + 64)
    with torch.inference_mode():
        a, b = model.new_cache(2, 40), model.new_cache(2, 40)
        prompt = torch.randint(0, vocab, (2, 5), generator=torch.Generator().manual_seed(3))
        model.hidden_states(prompt, a)
        model.hidden_states(prompt, b)
        step, tokens = DecodeStep(model), prompt[:, -1]
        for _ in range(20):
            picked = step.greedy(tokens, a)
            assert torch.equal(picked, step(tokens, b).max(dim=-1).indices)
            assert int(picked.max()) < vocab  # padded rows are never candidates
            tokens = picked
