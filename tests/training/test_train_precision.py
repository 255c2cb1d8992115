"""Which precision `auto` resolves to on each kind of machine, forced by patching the detector,
so every machine checks the choices a GPU makes."""

import warnings

import pytest
import torch

from training.precision import resolve_precision


@pytest.fixture
def keep_tf32():
    # resolve_precision turns TF32 on for CUDA; put the process-wide switches back afterwards
    # (torch's cuBLAS switch object takes assignment only, not monkeypatch's delattr).
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("bf16_gpu,expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_takes_bf16_where_the_gpu_has_it_else_fp16(monkeypatch, keep_tf32,
                                                                bf16_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    p = resolve_precision("auto", torch.device("cuda"))
    assert (p.name, p.device_type) == (expected, "cuda")
    assert p.autocast_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expected]
    with warnings.catch_warnings():  # without a GPU torch warns that the scaler would idle
        warnings.simplefilter("ignore", UserWarning)
        assert (p.grad_scaler() is not None) == (expected == "fp16")  # fp16 needs loss scaling
    assert torch.backends.cuda.matmul.allow_tf32


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch, keep_tf32):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="does not support bf16"):
        resolve_precision("bf16", torch.device("cuda"))


def test_auto_on_cpu_is_exact_fp32_and_explicit_requests_are_kept():
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, torch.device("cpu")).name == name
