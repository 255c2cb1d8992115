import copy

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from training.fused_loss import LossModel, fused_linear_cross_entropy, reference_loss


def _inputs(N=300, C=24, V=1000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(N, C, generator=gen).requires_grad_()
    w = (torch.randn(V, C, generator=gen) * 0.3).requires_grad_()
    t = torch.randint(0, V, (N,), generator=gen)
    t[::7] = -1  # ignored positions
    return h, w, t


def _grads(loss_fn, h, w, t):
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = loss_fn(h, w, t)
    (loss * 0.25).backward()  # a non-unit incoming gradient, as under grad accumulation
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 64, 299, 300, 4096])
def test_fused_loss_and_gradients_equal_the_definition_fp32(chunk):
    h, w, t = _inputs()
    loss, gh, gw = _grads(lambda *a: fused_linear_cross_entropy(*a, chunk=chunk), h, w, t)
    ref_loss, ref_gh, ref_gw = _grads(reference_loss, h, w, t)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-9)
    assert gh[::7].abs().max() == 0  # ignored positions get no gradient


# Both ways of computing the bf16 products run on every machine: torch's bf16 GEMM ("native",
# what GPUs and CPUs with AMX/AVX512-BF16 take) and the fp32 GEMM on bf16-rounded operands
# ("via fp32", what CPUs without bf16 units take). Which one a machine picks is forced here.
BRANCHES = pytest.mark.parametrize("via_fp32", [False, True], ids=["native", "via_fp32"])


@BRANCHES
def test_fused_loss_under_bf16_autocast_is_close_to_autocast_reference(via_fp32):
    h, w, t = _inputs(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, gh, gw = _grads(
            lambda *a: fused_linear_cross_entropy(*a, bf16_via_fp32=via_fp32), h, w, t)
        ref_loss, ref_gh, ref_gw = _grads(
            lambda h, w, t: F.cross_entropy((h @ w.t()).float(), t, ignore_index=-1), h, w, t)
    exact_loss, exact_gh, exact_gw = _grads(reference_loss, h, w, t)
    assert gh.dtype == torch.float32 and gw.dtype == torch.float32
    # bf16 operands: both within bf16 rounding of the fp32 loss, and of each other
    assert abs(loss - exact_loss) < 2e-2 and abs(loss - ref_loss) < 2e-2
    torch.testing.assert_close(gw, ref_gw, rtol=5e-2, atol=2e-4)
    assert (gw - exact_gw).abs().max() <= (ref_gw - exact_gw).abs().max() * 1.5 + 1e-6
    assert (gh - exact_gh).abs().max() <= (ref_gh - exact_gh).abs().max() * 1.5 + 1e-7


@BRANCHES
@pytest.mark.parametrize("chunk", [64, 4096])
def test_bf16_gradients_are_the_bf16_products_rounded_at_most_once(via_fp32, chunk):
    # The same bf16 operands multiplied exactly (fp64): a bf16 GEMM can do no better than round
    # that once to bf16 (unit roundoff 2^-8), plus fp32 accumulation inside it. Rounding an operand
    # twice (e.g. h * 1/n to bf16) costs up to 2^-8 of every term and fails the bound.
    h, w, t = _inputs(seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, gh, gw = _grads(
            lambda *a: fused_linear_cross_entropy(*a, chunk=chunk, bf16_via_fp32=via_fp32), h, w, t)
    hb, wb = h.detach().bfloat16(), w.detach().bfloat16()
    valid = t != -1
    if via_fp32:
        logits = hb.float() @ wb.float().t()
    else:
        logits = (hb @ wb.t()).float()  # the bf16 GEMM's logits, rounded to bf16 like autocast's
    g = torch.softmax(logits, dim=1)
    g[torch.arange(len(t)), t.clamp(min=0)] -= 1.0
    g = (g * valid.unsqueeze(1)).bfloat16().double()  # the operand both branches multiply
    scale = 0.25 / valid.sum().double()  # the mean's 1/n and the test's incoming 0.25
    # grad-W is summed over chunks of rows; the native GEMM rounds each chunk's (V, C) result.
    partials = [g[s:s + chunk].t() @ hb[s:s + chunk].double() * scale
                for s in range(0, len(t), chunk)]
    exact_gw = sum(partials)
    rounded_gw = sum(p.abs() for p in partials)  # what one rounding per chunk can cost, / 2^-8
    exact_gh = (g @ wb.double()) * scale
    abs_gw = (g.abs().t() @ hb.double().abs()) * scale
    abs_gh = (g.abs() @ wb.double().abs()) * scale
    once = 2.0**-8 if not via_fp32 else 0.0  # the native GEMM's one rounding to bf16
    assert bool(((gw.double() - exact_gw).abs() <= once * rounded_gw + 2.0**-16 * abs_gw).all())
    assert bool(((gh.double() - exact_gh).abs() <= once * exact_gh.abs() + 2.0**-16 * abs_gh).all())


@pytest.mark.parametrize("native", [False, True])
def test_loss_model_takes_the_branch_the_machine_detector_names(monkeypatch, native):
    from training import fused_loss

    monkeypatch.setattr(fused_loss, "native_bf16_matmul", lambda device_type="cpu": native)
    cfg = GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=1, n_embd=8)
    assert LossModel(GPT(cfg, seed=0)).bf16_via_fp32 is (not native)
    assert LossModel(GPT(cfg, seed=0), bf16_via_fp32=native).bf16_via_fp32 is native  # forced


@pytest.mark.parametrize("flags,native", [
    ("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n", True),
    ("flags\t\t: fpu avx2 avx512f avx512_bf16\n", True),
    ("flags\t\t: fpu avx2 avx512f avx512_vnni\n", False),
    ("", False),
])
def test_native_bf16_detector_reads_the_cpu_flags(flags, native):
    from training.fused_loss import cpu_flags_have_bf16

    assert cpu_flags_have_bf16(flags) is native


def test_loss_model_fused_equals_the_gpt_forward_loss():
    cfg = GPTConfig(block_size=16, vocab_size=300, padded_vocab_size=320, n_layer=2, n_head=2,
                    n_embd=32)
    fused, plain = LossModel(GPT(cfg, seed=2), fused=True, chunk=10), None
    plain = LossModel(copy.deepcopy(fused.gpt), fused=False)
    x = torch.randint(0, 300, (3, 16))
    y = torch.randint(0, 300, (3, 16))
    a, b = fused(x, y), plain(x, y)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    a.backward()
    b.backward()
    for (name, p), q in zip(fused.gpt.named_parameters(), plain.gpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)
    assert fused.gpt.transformer.wte.weight.grad[300:].abs().max() == 0  # padding rows untouched


def test_fused_loss_is_exact_where_the_target_probability_underflows():
    # Targets whose logit sits ~100 below the row's maximum: p[target] ~ e^-100 is below what
    # fp32 holds, so those rows take the exact path; the loss must still equal the definition.
    h, w, t = _inputs(N=40, C=8, V=50, seed=3)
    with torch.no_grad():
        h.copy_(torch.randn(40, 8))
        w.copy_(torch.randn(50, 8))
        t[:] = torch.arange(40) % 50
        w[1:5] *= 60.0  # rows 1..4 dominate: other targets fall far below the maximum
    loss, gh, gw = _grads(fused_linear_cross_entropy, h, w, t)
    ref_loss, ref_gh, ref_gw = _grads(reference_loss, h, w, t)
    assert ref_loss > 20  # the case is real: some per-token losses are huge
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-6)
