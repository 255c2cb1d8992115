"""The index of the largest logit, argmax(x @ W.T), reading half of W's bytes.

    screen = ScreenedArgmax.for_weight(head, rows=V)  # rows [:V] of head (fp32), cached per version
    ids = screen(x)                                   # x (B, C) -> (B,), as (x @ head[:V].T).argmax(-1)

Why: at batch 1 a decoding step is bound by reading the weights, and the LM head is the biggest
matrix (154 MB of GPT-2 124M's 500 MB in fp32, 51 MB of the tiny preset's 64 MB). Greedy
decoding needs only the position of the largest logit. So the head is also kept in fp16 (half
the bytes; fbgemm's fp16-weight GEMM, activations and accumulation in fp32), which gives every
logit within a bound that holds for any x:

    |w_i . x - fp16(w_i) . x| <= EPS * ||w_i||_2 * ||x||_2 + TINY * ||x||_1

EPS = 2^-9 covers the fp16 rounding of each weight (relative 2^-11), the same again in case
the kernel rounded x too, and fp32 rounding in both products (each at most C * 2^-24 * sum |w x|,
<= 2^-12 for widths up to 4096); TINY covers weights in fp16's subnormal range. The row with the
largest true logit has an upper bound at least the best lower bound, so only those candidate
rows (a handful: the bound is ~1e-3 of a logit) are recomputed in fp32, and the largest wins:
the full product's argmax (logits within fp32 rounding of each other are as fragile there as
here). Too many candidates, and the full product decides.

The fp16 copy is made once per weight and reused while the weight is unchanged (its version
counter and storage are checked on every call); an in-place update makes a new one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

EPS = 2.0**-9  # relative error bound of the fp16 product (see the module docstring)
TINY = 2.0**-24  # absolute rounding of a weight in fp16's subnormal range (half its 2^-24 step, doubled)
FP16_MAX = 60000.0  # weights beyond this would overflow fp16 (65504)
# Rows recomputed in fp32 at most; past it the screen saves too little and the full product runs.
MAX_CANDIDATES = 1024

# Keyed by tensor identity (tensors compare element-wise, so a plain WeakKeyDictionary cannot).
_CACHE = WeakIdKeyDictionary()


def fbgemm_available() -> bool:
    """Whether this torch build has fbgemm's fp16-weight kernel (x86 CPU builds do; others run
    the full product). The one machine check of this module: tests patch it to force either."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def screening_supported(weight: torch.Tensor) -> bool:
    """fbgemm's fp16-weight kernel on a CPU fp32 matrix. Small heads gain nothing."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.dim() == 2
            and weight.size(0) >= 4096 and weight.size(1) <= 4096 and fbgemm_available())


def head_argmax(x: torch.Tensor, weight: torch.Tensor, rows: int) -> torch.Tensor:
    """x (B, C) -> (B,) argmax of x @ weight[:rows].T: screened where supported, else the full
    fp32 product. `weight` is the parameter itself (the screen is cached on it)."""
    head = weight[:rows]
    screen = ScreenedArgmax.for_weight(weight, rows) if screening_supported(head) else None
    if screen is not None:
        return screen(x)
    return F.linear(x, head).max(dim=-1).indices


def _fp16_safe(w: torch.Tensor) -> bool:
    return bool(w.abs().max() <= FP16_MAX)  # False for inf and NaN too


class ScreenedArgmax:
    def __init__(self, weight: torch.Tensor) -> None:
        w = weight.detach()
        if not screening_supported(w):
            raise ValueError(f"screened argmax needs a large 2-D fp32 CPU matrix and fbgemm, got "
                             f"{tuple(w.shape)} {w.dtype} on {w.device}")
        if not _fp16_safe(w):
            raise ValueError("weights too large (or not finite) for an fp16 copy")
        self.weight = w
        self._version, self._ptr = w._version, w.data_ptr()
        self.packed = torch.ops.quantized.linear_prepack_fp16(w, None)
        self.row_norm = torch.linalg.vector_norm(w, dim=1)  # (V,)

    @classmethod
    def for_weight(cls, weight: torch.Tensor, rows: int | None = None) -> "ScreenedArgmax | None":
        """The screen of weight[:rows], cached on `weight` (a parameter, say: a slice of it would
        be a new object every time) and rebuilt when the weight changed since it was made. None
        (also cached) when fp16 cannot hold the weights: the caller uses the full product."""
        rows = weight.size(0) if rows is None else rows
        state = (rows, weight._version, weight.data_ptr())
        found = _CACHE.get(weight)
        if found is None or found[0] != state:
            head = weight[:rows]
            found = _CACHE[weight] = (state, cls(head) if _fp16_safe(head) else None)
        return found[1]

    def matches(self, weight: torch.Tensor) -> bool:
        return weight._version == self._version and weight.data_ptr() == self._ptr

    def bounds(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V): how far each fp16 logit may lie from the fp32 one."""
        l2 = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (B, 1)
        l1 = x.abs().sum(dim=1, keepdim=True)
        return self.row_norm * (EPS * l2) + TINY * l1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C) fp32 -> (B,) indices of the largest logit of each row."""
        if not self.matches(self.weight):
            raise RuntimeError("the weight changed since this screen was made; use for_weight()")
        approx = torch.ops.quantized.linear_dynamic_fp16(x.contiguous(), self.packed)  # (B, V)
        err = self.bounds(x)
        best_lower = (approx - err).amax(dim=1, keepdim=True)  # (B, 1)
        candidates = (approx + err) >= best_lower  # (B, V): always holds the true maximum
        out = torch.empty(x.size(0), dtype=torch.long)
        for b in range(x.size(0)):
            rows = candidates[b].nonzero().squeeze(1)  # increasing: ties go to the first, as argmax
            if rows.numel() > MAX_CANDIDATES or not bool(torch.isfinite(approx[b]).all()):
                out[b] = F.linear(x[b : b + 1], self.weight).max(dim=-1).indices[0]
            else:
                exact = F.linear(x[b : b + 1], self.weight.index_select(0, rows))  # (1, n)
                out[b] = rows[exact.max(dim=-1).indices[0]]
        return out
