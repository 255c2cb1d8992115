"""The architecture itself: attention paths, init, parameter count, initial loss, padding, cache."""

import math

import pytest
import torch

from model import GPT, GPTConfig

SMALL = GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=32)


def test_124m_parameter_count():
    # OpenAI's GPT-2 small: 124,439,808 parameters with the LM head tied to wte (counted once).
    model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_parameters() == 124_439_808
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("padded", [None, 50304])
def test_initial_loss_is_near_uniform(padded):
    # A fresh GPT-2 predicts nearly uniformly: loss in [ln V, ln V + 0.3]
    # (llm.c's step-0 loss is 11.009 at vocab 50304, ln 50257 = 10.825).
    config = GPTConfig.preset("gpt2", padded_vocab_size=padded, block_size=128, n_layer=4)
    model = GPT(config, seed=0)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (4, 129), generator=gen)
    with torch.no_grad():
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
    low = math.log(config.vocab_size)
    assert low <= loss.item() <= low + 0.3


def test_attention_paths_agree_forward_and_backward():
    torch.manual_seed(0)
    sdpa = GPT(SMALL.replace(attention="sdpa"), seed=7)
    math_ = GPT(SMALL.replace(attention="math"), seed=7)
    idx = torch.randint(0, SMALL.vocab_size, (3, 48))
    targets = torch.randint(0, SMALL.vocab_size, (3, 48))
    logits_a, loss_a = sdpa(idx, targets)
    logits_b, loss_b = math_(idx, targets)
    assert (logits_a - logits_b).abs().max().item() <= 1e-5
    loss_a.backward()
    loss_b.backward()
    for (name, pa), (_, pb) in zip(sdpa.named_parameters(), math_.named_parameters()):
        assert (pa.grad - pb.grad).abs().max().item() <= 1e-5, name


def test_attention_is_causal():
    model = GPT(SMALL, seed=1).eval()
    idx = torch.randint(0, SMALL.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 15:] = (changed[0, 15:] + 1) % SMALL.vocab_size
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :15], b[:, :15])  # the future does not leak into the past
    assert not torch.equal(a[:, 15:], b[:, 15:])


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = GPT(SMALL, seed=3), GPT(SMALL, seed=3), GPT(SMALL, seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


def test_init_statistics():
    config = GPTConfig.preset("gpt2", n_layer=6)
    model = GPT(config, seed=0)
    block = model.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.02)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.02)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.02)
    assert block.mlp.c_fc.bias.abs().max().item() == 0.0
    assert torch.equal(block.ln_1.weight, torch.ones_like(block.ln_1.weight))


def test_padded_vocab_rows_never_become_logits():
    config = SMALL.replace(padded_vocab_size=576)
    model = GPT(config, seed=0)
    assert model.transformer.wte.weight.shape[0] == 576
    with torch.no_grad():
        # Make the padding rows overwhelmingly attractive: they must still never appear.
        model.transformer.wte.weight[512:] = 100.0
    idx = torch.randint(0, 512, (2, 16))
    logits, loss = model(idx, idx)
    assert logits.shape[-1] == 512
    assert logits.argmax(-1).max().item() < 512
    loss.backward()  # padding rows get no gradient from the loss (only via embedding lookups)
    assert model.transformer.wte.weight.grad[512:].abs().max().item() == 0.0


def test_kv_cache_matches_full_recompute():
    model = GPT(SMALL, seed=2).eval()
    idx = torch.randint(0, SMALL.vocab_size, (2, 30))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(batch_size=2)
        prefill, _ = model(idx[:, :10], cache=cache)  # prompt
        chunk, _ = model(idx[:, 10:17], cache=cache)  # several tokens on top of a cache
        steps = [model(idx[:, t : t + 1], cache=cache)[0] for t in range(17, 30)]
    incremental = torch.cat([prefill, chunk, *steps], dim=1)
    assert (incremental - full).abs().max().item() <= 1e-5
    assert cache.pos == 30


def test_sequence_longer_than_block_size_is_rejected():
    model = GPT(SMALL)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, SMALL.block_size + 1, dtype=torch.long))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_embd=30, n_head=4), "divisible"),
        (dict(n_layer=0), "n_layer"),
        (dict(padded_vocab_size=100), "padded_vocab_size"),
        (dict(attention="flash"), "attention"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        SMALL.replace(**bad)


def test_presets():
    assert GPTConfig.preset("gpt2-xl").n_embd == 1600
    tiny = GPTConfig.preset("tiny")
    assert (tiny.n_layer, tiny.n_head, tiny.n_embd, tiny.block_size) == (4, 4, 256, 256)
    with pytest.raises(ValueError, match="unknown model preset"):
        GPTConfig.preset("gpt5")
