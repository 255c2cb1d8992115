"""Our GPT-2 against transformers' GPT2LMHeadModel with the same weights, both directions.

Tolerances (fp32): logits 1e-5 max abs, greedy tokens identical. The loss is about 10.8 here,
where one fp32 ulp is 2**-20 = 9.5e-7: ours within 2 ulps of the exact (fp64) cross-entropy of
our own logits, and within 4 ulps of transformers' loss. Each side sums 50,257 exponentials in
fp32, in an order the CPU's kernels choose (AVX2 and AVX512 machines differ). On an AVX512 CPU,
torch's fp32 cross-entropy was measured 1.2 ulps from exact on our logits and 1.5 on
transformers' (which are within 3e-7 of ours), so a 1-ulp bound between the two sides holds only
on some machines.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from model import GPT, GPTConfig
from model.hf_interop import export_hf, import_hf

LOSS_ULP = 2.0**-20  # fp32 spacing of numbers in [8, 16)
CONFIG = GPTConfig(block_size=128, vocab_size=50257, n_layer=3, n_head=4, n_embd=64)
SEQ_LENS = (1, 7, 64, 127)  # +1 token for the loss check stays within block_size


def _hf_model(path):
    model = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager")
    return model.eval()


def _greedy(step, prompt, n_new):
    """Full-recompute greedy decoding with any callable idx -> logits."""
    idx = prompt
    for _ in range(n_new):
        nxt = step(idx)[:, -1, :].argmax(dim=-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
    return idx[:, prompt.size(1):]


def _assert_same_outputs(ours: GPT, hf) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for T in SEQ_LENS:
            idx = torch.randint(0, CONFIG.vocab_size, (2, T), generator=gen)
            targets = torch.randint(0, CONFIG.vocab_size, (2, T), generator=gen)
            logits, _ = ours(idx)
            hf_logits = hf(idx).logits
            assert (logits - hf_logits).abs().max().item() <= 1e-5, f"T={T}"
            # transformers shifts labels by one internally: give it T+1 tokens and us the
            # same T (input, next-token) pairs.
            seq = torch.cat([idx, targets[:, :1]], dim=1)
            seq_logits, loss = ours(seq[:, :-1], seq[:, 1:])
            exact = torch.nn.functional.cross_entropy(
                seq_logits.double().reshape(-1, seq_logits.size(-1)), seq[:, 1:].reshape(-1))
            assert 8 <= loss.item() < 16  # the range LOSS_ULP is the spacing of
            assert abs(loss.item() - exact.item()) <= 2 * LOSS_ULP, f"T={T}"
            hf_loss = hf(seq, labels=seq).loss
            assert abs(loss.item() - hf_loss.item()) <= 4 * LOSS_ULP, f"T={T}"
        prompt = torch.randint(0, CONFIG.vocab_size, (1, 8), generator=gen)
        ours_tokens = _greedy(lambda i: ours(i)[0], prompt, 20)
        hf_tokens = _greedy(lambda i: hf(i).logits, prompt, 20)
        assert torch.equal(ours_tokens, hf_tokens)


def test_export_direction_matches_transformers(tmp_path):
    ours = GPT(CONFIG, seed=1).eval()
    export_hf(ours, tmp_path / "hf")
    _assert_same_outputs(ours, _hf_model(tmp_path / "hf"))


def test_import_direction_matches_transformers(tmp_path):
    torch.manual_seed(2)
    hf_cfg = transformers.GPT2Config(
        vocab_size=CONFIG.vocab_size, n_positions=CONFIG.block_size, n_embd=CONFIG.n_embd,
        n_layer=CONFIG.n_layer, n_head=CONFIG.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    # transformers zeroes biases at init; give them values so the test would notice a
    # missing or misplaced bias.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    hf.save_pretrained(tmp_path / "hf")
    ours = import_hf(tmp_path / "hf").eval()
    _assert_same_outputs(ours, _hf_model(tmp_path / "hf"))


def test_padded_vocab_exports_real_vocab_only(tmp_path):
    ours = GPT(CONFIG.replace(padded_vocab_size=50304), seed=3).eval()
    export_hf(ours, tmp_path / "hf")
    hf = _hf_model(tmp_path / "hf")
    assert hf.config.vocab_size == 50257
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        assert (ours(idx)[0] - hf(idx).logits).abs().max().item() <= 1e-5
