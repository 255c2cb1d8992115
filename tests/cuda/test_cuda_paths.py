"""The paths a GPU takes, on a GPU: skipped where there is none, run by benchmarks/gpu_check.sh.

    python -m pytest -m cuda tests/cuda
CPU machines check the same choices by forcing them (tests/training/test_train_fused_loss.py,
test_train_precision.py); these confirm them on the real device.
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from training.fused_loss import LossModel, fused_linear_cross_entropy, native_bf16_matmul
from training.optim import AdamW, param_groups

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CFG = GPTConfig(block_size=64, vocab_size=50257, padded_vocab_size=50304, n_layer=2, n_head=2,
                n_embd=64)


def _batch(seed=0, B=4, T=64, V=50257):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=gen), torch.randint(0, V, (B, T), generator=gen)


def test_bf16_autocast_training_step_learns_and_starts_where_fp32_does():
    assert native_bf16_matmul("cuda")
    x, y = _batch()
    with torch.no_grad():
        cpu_loss = float(LossModel(GPT(CFG, seed=0))(x, y))  # fp32 on the CPU, same weights
    model = GPT(CFG, seed=0).cuda()
    loss_model = LossModel(model)
    assert loss_model.bf16_via_fp32 is False  # the native branch
    opt = AdamW(param_groups(model, 0.1), lr=3e-3, betas=(0.9, 0.95))
    x, y = x.cuda(), y.cuda()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_model(x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert abs(losses[0] - cpu_loss) < 2e-2  # bf16 rounding of the operands only
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.5


def test_fused_loss_native_branch_matches_autocast_on_cuda():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(300, 64, generator=gen).cuda()
    w = (torch.randn(1000, 64, generator=gen) * 0.3).cuda()
    t = torch.randint(0, 1000, (300,), generator=gen).cuda()
    t[::7] = -1

    def grads(fn):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(hh, ww, t)
        (loss * 0.25).backward()
        return loss.detach(), hh.grad, ww.grad

    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, gh, gw = grads(lambda *a: fused_linear_cross_entropy(*a, bf16_via_fp32=False))
        ref_loss, ref_gh, ref_gw = grads(
            lambda h, w, t: F.cross_entropy((h @ w.t()).float(), t, ignore_index=-1))
    exact_loss, exact_gh, exact_gw = grads(
        lambda h, w, t: F.cross_entropy(h @ w.t(), t, ignore_index=-1))
    assert abs(loss - exact_loss) < 2e-2 and abs(loss - ref_loss) < 2e-2
    assert (gw - exact_gw).abs().max() <= (ref_gw - exact_gw).abs().max() * 1.5 + 1e-6
    assert (gh - exact_gh).abs().max() <= (ref_gh - exact_gh).abs().max() * 1.5 + 1e-7


def test_our_adamw_matches_torch_fused_adamw_on_cuda():
    ours_model = GPT(CFG, seed=3).cuda()
    ref_model = copy.deepcopy(ours_model)
    hp = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    ours = AdamW(param_groups(ours_model, 0.1), weight_decay=0.1, **hp)
    ref = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                             for g in param_groups(ref_model, 0.1)], fused=True, **hp)
    worst = 0.0
    for step in range(30):
        x, y = (a.cuda() for a in _batch(step, B=2, T=16))
        for model in (ours_model, ref_model):
            model(x, y)[1].backward()
        ours.step()
        ref.step()
        ours.zero_grad()
        ref.zero_grad(set_to_none=True)
        for p, q in zip(ours_model.parameters(), ref_model.parameters()):
            worst = max(worst, float((p - q).abs().max() / q.abs().max().clamp(min=1e-12)))
    assert worst < 1e-5, worst


def test_generation_gives_the_same_tokens_on_gpu_and_cpu():
    from evaluation.generate import generate

    model = GPT(CFG, seed=3).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(5)  # spread logits out, away from near-ties
    prompt = _batch(5, B=1, T=6)[0][0].tolist()
    cpu = generate(model, [prompt], 30, temperature=0, stop_at_eot=False)
    gpu = generate(model.cuda(), [prompt], 30, temperature=0, stop_at_eot=False)
    assert cpu == gpu


def test_one_process_nccl_ddp_step_equals_the_plain_step():
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        plain = LossModel(GPT(CFG, seed=0).cuda())
        wrapped = DDP(LossModel(copy.deepcopy(plain.gpt)), device_ids=[0])
        x, y = (a.cuda() for a in _batch())
        plain(x, y).backward()
        wrapped(x, y).backward()
        for p, q in zip(plain.gpt.parameters(), wrapped.module.gpt.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()
