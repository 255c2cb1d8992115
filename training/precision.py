"""Mixed precision: which dtype the matmuls run in, and loss scaling where fp16 needs it.

Weights, gradients and optimizer moments stay fp32 ("master weights") in every mode; autocast
only lowers the precision of the matmuls/attention inside the forward pass.
    fp32  no autocast (TF32 matmuls on CUDA Ampere+, still fp32 storage)
    bf16  autocast to bfloat16 (CPU and CUDA); bf16 has fp32's range, so no loss scaling
    fp16  autocast to float16 + dynamic loss scaling (for GPUs without bf16; runs, slowly,
          on CPU too, which is how the tests exercise it)
    auto  bf16 where supported, else fp16 on CUDA, else fp32
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # resolved: fp32, bf16 or fp16
    device_type: str  # "cpu" or "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    def autocast(self):
        """Context manager for the forward pass (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """Loss scaler for fp16 (gradients would underflow in fp16 without it), else None."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "fp32"  # CPU bf16 pays off only with AMX/avx512_bf16; keep exact fp32
    if requested == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use precision fp16 or auto")
    if kind == "cuda":
        # TF32 tensor-core matmuls for fp32 ops (10-bit mantissa products, fp32 accumulation).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Precision(requested, kind)
