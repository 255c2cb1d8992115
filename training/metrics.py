"""Training FLOPs, model FLOPs utilisation (MFU), and a measured matrix-product peak.

FLOPs per token for a forward + backward pass (Kaplan et al. 2020; nanoGPT `estimate_mfu`,
llm.c `gpt2_estimate_mfu`):

    flops_per_token = 6 * N + 12 * L * T * C
      6 * N         each weight does one multiply-add (2 FLOPs) per token forward and two
                    backward (gradients for inputs and for the weight): N = parameters that
                    take part in matmuls = all parameters minus the position embeddings (the
                    tied token embedding counts once, as the LM head matmul, at vocab_size
                    rows: the padding rows never multiply).
      12 * L * T * C  attention scores and weighted sum: per layer 2 * T * C multiply-adds per
                    token forward (QK^T and AV over T keys of width C), x 3 for backward, x 2
                    FLOPs per multiply-add. (A causal kernel skips half; by convention, and as in
                    nanoGPT/llm.c, the full T is counted.)

MFU = achieved FLOP/s / peak FLOP/s, where the peak is measured here by timing a large matrix
product in the training dtype, or is the vendor figure on known GPUs. `peak_flops_source` says
which, so an MFU is never printed without what it divides by.
"""

from __future__ import annotations

import functools
import time

import torch

from model.config import GPTConfig

# Dense (no sparsity) peak FLOP/s of common GPUs, bf16/fp16 tensor cores.
KNOWN_GPU_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def matmul_params(config: GPTConfig) -> int:
    """Parameters taking part in matmuls for one token: blocks + final LN + LM head (vocab_size
    rows of the tied embedding; the padding rows never multiply)."""
    C, L = config.n_embd, config.n_layer
    per_block = (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C) + 4 * C
    return L * per_block + 2 * C + config.vocab_size * C


def flops_per_token(config: GPTConfig, seq_len: int) -> int:
    """Training (forward + backward) FLOPs per token: 6 * N + 12 * L * T * C."""
    return 6 * matmul_params(config) + 12 * config.n_layer * seq_len * config.n_embd


@functools.cache
def measure_peak_flops(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                       max_n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` (n x n) @ (n x n) products (2 n^3 FLOPs each); n grows
    from 256 to max_n while one product takes under 50 ms, so a dtype the hardware emulates
    slowly (fp16 on most CPUs) costs a fraction of a second, not minutes. Cached per process."""
    device = torch.device(device)
    if (known := _known_gpu_peak(dtype, device)) is not None:
        return known[1]

    def timed(a, b) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        first = timed(a, b)  # includes warm-up
        if first > 0.05 or n >= max_n:
            break
        n *= 2
    best = min([first] + [timed(a, b) for _ in range(repeats if first < 0.5 else 1)])
    return 2 * n**3 / best


def _known_gpu_peak(dtype: torch.dtype, device: torch.device) -> tuple[str, float] | None:
    """(GPU name, vendor peak) for bf16/fp16 on a GPU of KNOWN_GPU_PEAKS, else None."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in KNOWN_GPU_PEAKS.items():
        if key in name:
            return key, peak
    return None


def peak_flops_source(dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu") -> str:
    """In words, the peak that measure_peak_flops(dtype, device) returns: a vendor figure or a
    measurement on this machine."""
    device = torch.device(device)
    dtype_name = str(dtype).removeprefix("torch.")
    if (known := _known_gpu_peak(dtype, device)) is not None:
        return f"{known[0]} dense {dtype_name} tensor-core spec"
    return f"measured {dtype_name} matmul peak of this {device.type}"


def format_flops(flops: float) -> str:
    """358e9 -> '358 GFLOP/s'."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP/s"
    return f"{flops:.3g} FLOP/s"


def mfu(tokens_per_s: float, flops_per_tok: int, peak_flops: float) -> float:
    return tokens_per_s * flops_per_tok / peak_flops if peak_flops > 0 else 0.0
