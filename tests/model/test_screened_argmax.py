"""ScreenedArgmax (greedy decoding's LM head screened in fp16) against the plain fp32 argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import screened_argmax as S

needs_fbgemm = pytest.mark.skipif(
    "fbgemm" not in torch.backends.quantized.supported_engines,
    reason="the fp16-weight kernel comes with fbgemm (x86 builds of torch)")


def _weight(V=8192, C=64, seed=0) -> torch.Tensor:
    return torch.randn(V, C, generator=torch.Generator().manual_seed(seed)) * 0.02


@needs_fbgemm
def test_screen_equals_the_full_argmax_and_its_bound_holds():
    w = _weight()
    screen = S.ScreenedArgmax(w)
    gen = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 30.0):
        x = torch.randn(5, 64, generator=gen) * scale
        full = F.linear(x, w)
        approx = torch.ops.quantized.linear_dynamic_fp16(x, screen.packed)
        assert bool(((full - approx).abs() <= screen.bounds(x)).all())
        assert torch.equal(screen(x), full.max(dim=-1).indices)


@needs_fbgemm
def test_near_ties_are_settled_in_fp32():
    # Rows 10 and 4000 differ by less than fp16 can tell apart; the fp32 recheck decides.
    w = _weight()
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(2))
    w[10] = x[0] * 0.05
    w[4000] = w[10] * (1 + 1e-5)
    full = F.linear(x, w).max(dim=-1).indices
    assert full.item() == 4000
    assert torch.equal(S.ScreenedArgmax(w)(x), full)
    w[4000] = w[10]  # an exact tie: the first index, as argmax
    assert S.ScreenedArgmax(w)(x).item() == 10


@needs_fbgemm
def test_too_many_candidates_or_non_finite_input_fall_back_to_the_full_product():
    w = torch.ones(8192, 64)  # every row ties
    assert S.ScreenedArgmax(w)(torch.ones(1, 64)).item() == 0
    w = _weight()
    x = torch.full((1, 64), float("nan"))
    assert torch.equal(S.ScreenedArgmax(w)(x), F.linear(x, w).max(dim=-1).indices)


@needs_fbgemm
def test_cached_screen_is_rebuilt_after_an_in_place_update():
    w = torch.nn.Parameter(_weight(V=8200))
    first = S.ScreenedArgmax.for_weight(w, rows=8192)
    assert S.ScreenedArgmax.for_weight(w, rows=8192) is first
    assert first.weight.shape == (8192, 64)
    with torch.no_grad():
        w.mul_(-1.0)
    with pytest.raises(RuntimeError, match="changed"):
        first(torch.randn(1, 64))
    second = S.ScreenedArgmax.for_weight(w, rows=8192)
    assert second is not first
    x = torch.randn(3, 64)
    assert torch.equal(second(x), F.linear(x, w[:8192]).max(dim=-1).indices)


@needs_fbgemm
def test_unsupported_weights_are_refused():
    with pytest.raises(ValueError, match="screened argmax needs"):
        S.ScreenedArgmax(torch.randn(100, 8))
    with pytest.raises(ValueError, match="too large"):
        S.ScreenedArgmax(_weight() * 1e7)


@needs_fbgemm
def test_weights_fp16_cannot_hold_fall_back_to_the_full_product():
    x = torch.randn(2, 64)
    for bad in (_weight() * 1e7, _weight().index_fill(0, torch.tensor([7]), float("nan"))):
        w = torch.nn.Parameter(bad)
        assert S.ScreenedArgmax.for_weight(w) is None
        assert torch.equal(S.head_argmax(x, w, 8192), F.linear(x, w).max(dim=-1).indices)


def test_without_fbgemm_the_head_is_the_full_product(monkeypatch):
    # What builds without fbgemm (non-x86) take, forced on any machine.
    monkeypatch.setattr(S, "fbgemm_available", lambda: False)
    w = torch.nn.Parameter(_weight())
    assert not S.screening_supported(w)
    x = torch.randn(3, 64)
    assert torch.equal(S.head_argmax(x, w, 8192), F.linear(x, w).max(dim=-1).indices)
    with pytest.raises(ValueError, match="screened argmax needs"):
        S.ScreenedArgmax(w.detach())
