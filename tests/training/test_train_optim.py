"""Our AdamW against torch.optim.AdamW, our clipping against clip_grad_norm_, parameter groups."""

import copy

import pytest
import torch

from model import GPT, GPTConfig
from training.optim import AdamW, clip_grad_norm, group_counts, param_groups

CFG = GPTConfig(block_size=16, vocab_size=97, n_layer=2, n_head=2, n_embd=16)


def _batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randint(0, 97, (2, 16), generator=gen), torch.randint(0, 97, (2, 16), generator=gen)


def _torch_groups(model, wd):
    return [{"params": g["params"], "weight_decay": g["weight_decay"]}
            for g in param_groups(model, wd)]


def test_param_groups_split_by_rank_and_count_everything_once():
    model = GPT(CFG)
    groups = param_groups(model, 0.1)
    decay, no_decay = groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert "transformer.wte.weight" in decay["names"] and "lm_head.weight" not in decay["names"]
    assert all(n.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight"))
               for n in no_decay["names"])
    counts = group_counts(groups)
    # per block: 4 matrices, 4 linear biases + 2 LN (weight, bias); plus wte, wpe, ln_f
    assert counts["decay_tensors"] == 2 * 4 + 2 and counts["no_decay_tensors"] == 2 * 8 + 2
    assert counts["decay_params"] + counts["no_decay_params"] == model.num_parameters()
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_adamw_matches_torch_over_100_training_steps():
    """Real training: each optimizer's model computes its own gradients, 100 steps, fp32."""
    ours_model = GPT(CFG, seed=3)
    ref_model = copy.deepcopy(ours_model)
    hp = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    ours = AdamW(param_groups(ours_model, 0.1), weight_decay=0.1, **hp)
    ref = torch.optim.AdamW(_torch_groups(ref_model, 0.1), **hp)
    worst = 0.0
    for step in range(100):
        lr = 3e-3 * (1 - step / 200)  # a changing lr, as under the schedule
        x, y = _batch(step)
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            model(x, y)[1].backward()
        for g in ref.param_groups:
            g["lr"] = lr
        ours.step(lr=lr)
        ref.step()
        ours.zero_grad()
        ref.zero_grad()
        for (name, p), q in zip(ours_model.named_parameters(), ref_model.parameters()):
            rel = ((p - q).abs().max() / q.abs().max().clamp(min=1e-12)).item()
            worst = max(worst, rel)
            assert rel <= 1e-6, f"step {step} {name}: relative difference {rel:.2e}"
    # state is comparable too
    for name, p in ours_model.named_parameters():
        ref_state = ref.state[dict(ref_model.named_parameters())[name]]
        torch.testing.assert_close(ours.state[name]["exp_avg_sq"], ref_state["exp_avg_sq"],
                                   rtol=1e-5, atol=1e-12)
    assert ours.step_count == 100


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_adamw_update_matches_torch_on_the_same_gradients(compiled):
    """The same gradient sequence fed to both (so rounding cannot feed back through the model:
    the key bias of attention has a mathematically zero gradient, pure rounding noise that
    Adam's normalisation amplifies, which makes two models that differ by one ulp diverge)."""
    model = GPT(CFG, seed=4)
    ref_model = copy.deepcopy(model)
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    ours = AdamW(param_groups(model, 0.1), weight_decay=0.1, compiled=compiled, **hp)
    ref = torch.optim.AdamW(_torch_groups(ref_model, 0.1), **hp)
    gen = torch.Generator().manual_seed(0)
    for step in range(100):
        lr = 1e-2 * (1 - step / 200)
        for p, q in zip(model.parameters(), ref_model.parameters()):
            scale = 10.0 ** torch.randint(-3, 2, (), generator=gen).item()  # mixed magnitudes
            g = torch.randn(p.shape, generator=gen) * scale
            p.grad, q.grad = g.clone(), g.clone()
        for g in ref.param_groups:
            g["lr"] = lr
        ours.step(lr=lr)
        ref.step()
        for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
            rel = ((p - q).abs().max() / q.abs().max().clamp(min=1e-12)).item()
            assert rel <= 1e-6, f"step {step} {name}: relative difference {rel:.2e}"


def test_adamw_state_dict_round_trip_continues_identically():
    def run(model, opt, steps):
        for s in steps:
            x, y = _batch(s)
            model(x, y)[1].backward()
            opt.step(lr=1e-3)
            opt.zero_grad()

    a = GPT(CFG, seed=1)
    opt_a = AdamW(param_groups(a, 0.1), betas=(0.9, 0.95))
    run(a, opt_a, range(3))
    b = copy.deepcopy(a)
    opt_b = AdamW(param_groups(b, 0.1), betas=(0.9, 0.95))
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    run(a, opt_a, range(3, 6))
    run(b, opt_b, range(3, 6))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="different parameter groups"):
        AdamW(param_groups(GPT(CFG.replace(n_layer=1)), 0.1)).load_state_dict(opt_a.state_dict())


@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e6, 0.0])
def test_clip_matches_torch_clip_grad_norm(max_norm):
    torch.manual_seed(0)
    ps = [torch.randn(5, 7, requires_grad=True), torch.randn(3, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    for p, q in zip(ps, qs):
        g = torch.randn_like(p) * 3
        p.grad, q.grad = g.clone(), g.clone()
    norm = clip_grad_norm(ps, max_norm)
    if max_norm > 0:
        ref_norm = torch.nn.utils.clip_grad_norm_(qs, max_norm)
    else:  # 0 = report only
        ref_norm = torch.linalg.vector_norm(torch.stack([q.grad.norm() for q in qs]))
    assert torch.equal(norm, ref_norm)
    for p, q in zip(ps, qs):
        assert torch.equal(p.grad, q.grad)
    if max_norm == 1e-3:
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps]))
        assert total.item() == pytest.approx(1e-3, rel=1e-3)
