"""LM head + cross-entropy fused and chunked: the loss and its gradients without the logits.

    loss = fused_linear_cross_entropy(h, W, targets)   # h (N, C), W (V, C), targets (N,)

Why: at GPT-2's vocabulary the head dominates a small model's step. For the `tiny` preset
(batch 8 x 256 tokens) the logits are 2048 x 50257 floats = 412 MB, which the usual path writes,
reads back for log-softmax, writes again as log-probabilities, and writes/reads twice more in
the backward pass; on a CPU that memory traffic costs as much as the matmuls. Here the rows are
processed in chunks: for each chunk the logits are computed into one reused buffer, turned in
place into softmax - one_hot, and consumed by the two gradient matmuls (the 1 / n of the mean is
applied to their small (n, C) operand and result instead of the big buffer).
The forward pass therefore also does the backward's work; backward() only scales the saved
gradients by the incoming grad (1 / accumulation steps). Same loss as
F.cross_entropy(h @ W.T, targets, ignore_index=-1) up to fp32 rounding (tested).

Precision: in fp32 everything is fp32. Under bf16 autocast the operands of the three matmuls are
rounded to bf16 and accumulated in fp32, exactly what a bf16 GEMM computes; the softmax and the
loss stay fp32. Two branches compute those products, and `native_bf16_matmul()` picks one (the
tests force both on every machine):
- native (GPUs; CPUs with AMX or AVX512_BF16): torch's bf16 GEMM, whose result is rounded to
  bf16 once per product, as autocast's own matmuls are;
- bf16 via fp32 (CPUs without bf16 dot-product instructions, where torch's bf16 GEMM is several
  times slower than its fp32 one): the bf16-rounded operands multiplied by the fp32 GEMM. The
  products are the same (a bf16 x bf16 product is exact in fp32) and the results stay fp32.
Only exact operations are applied to the bf16 operands: the 1/n of the mean is not folded into
them (h * 1/n would be rounded to bf16 a second time; that extra rounding once made the native
grad-W twice as far from fp32 as autocast's); ignored rows are zeroed (exact) and 1/n scales the
fp32 results. Tested: each gradient is the exact product of the same bf16 operands, rounded at
most once to bf16 (native) or not at all (via fp32), plus fp32 accumulation.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_CHUNK = 512


@functools.cache
def native_bf16_matmul(device_type: str = "cpu") -> bool:
    """Whether bf16 GEMMs run on bf16 hardware (GPUs; CPUs with AMX or AVX512_BF16)."""
    if device_type != "cpu":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_flags_have_bf16(f.read())
    except OSError:
        return True  # not Linux: assume a current CPU, and torch's own GEMM


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def bf16_cpu_flags(cpuinfo: str) -> list[str]:
    """The bf16 dot-product features (AMX, AVX512_BF16) that /proc/cpuinfo's flags name."""
    flags = {word for line in cpuinfo.splitlines() if line.startswith("flags")
             for word in line.split(":", 1)[-1].split()}
    return [f for f in BF16_CPU_FLAGS if f in flags]


def cpu_flags_have_bf16(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's flags name bf16 dot-product instructions (AMX or AVX512_BF16)."""
    return bool(bf16_cpu_flags(cpuinfo))


def _compute_dtype(device_type: str) -> torch.dtype:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.float32


# A fresh 100 MB tensor costs about as much in page faults as the matmul that fills it (glibc
# hands allocations this large straight to mmap, and they come back zero-filled on first touch),
# so in eager mode on CPU the big per-chunk buffers (logits, grad-W's product) are kept between
# calls and reused, one per role.
_SCRATCH: dict[str, torch.Tensor] = {}


def _scratch(role: str, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
    if device.type != "cpu" or torch.compiler.is_compiling():
        return torch.empty(shape, dtype=dtype, device=device)  # GPU: the caching allocator reuses
    buf = _SCRATCH.get(role)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        _SCRATCH[role] = buf = torch.empty(shape, dtype=dtype)  # shapes change only with configs
    return buf


# Below this, -log p loses digits to fp32's subnormal range; 1e-30 is a loss of about 69.
_TINY_PROB = 1e-30

# Rows of the logits turned into gradients at a time. The softmax works in fp32; done over 64
# rows (64 x 50257 fp32 = 13 MB, which stays in a CPU's cache) the bf16 logits are read and the
# bf16 gradient written once from memory, where a whole-chunk fp32 pass would write and read
# 100 MB twice more. On a GPU it is just a few more, still large, kernels.
SOFTMAX_ROWS = 64


def _logits_to_grad(logits, targets, valid, exact_logsumexp, round_to) -> torch.Tensor:
    """In place, turn a chunk's logits (n, V) into softmax - one_hot, in fp32 row blocks, and
    return the chunk's summed loss over valid rows (fp32). `logits` is fp32 or bf16 (then each
    block is computed in fp32 and rounded once on the way back); `round_to`: for fp32 logits
    that feed bf16-rounded products, round the gradient to this dtype in place (exact as fp32).
    `exact_logsumexp(rows)` recomputes the logsumexp of the rows (a bool mask) whose target
    probability fp32 cannot hold."""
    n = logits.size(0)
    in_place = logits.dtype == torch.float32
    scratch = None if in_place else _scratch("softmax", (min(SOFTMAX_ROWS, n), logits.size(1)),
                                             torch.float32, logits.device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=logits.device)
    for a in range(0, n, SOFTMAX_ROWS):
        b = min(a + SOFTMAX_ROWS, n)
        block = logits[a:b]
        x = block if in_place else scratch[: b - a].copy_(block)  # bf16 -> fp32 is exact
        t = targets[a:b].unsqueeze(1)
        target_logit = x.gather(1, t).squeeze(1)
        # Softmax in place: torch's kernel works row by row (max, exp and sum, scale) while the
        # row is in cache. The loss is then -log p[target]...
        torch._softmax(x, 1, False, out=x)
        target_p = x.gather(1, t).squeeze(1)
        vb = valid[a:b]
        # ...except where p[target] is too small for fp32 to hold well (a logit ~80 below the
        # row's maximum: essentially never): those rows are recomputed exactly.
        tiny = vb & (target_p < _TINY_PROB)
        nll = -target_p.log()
        if tiny.any():
            rows = torch.zeros(n, dtype=torch.bool, device=x.device)
            rows[a:b] = tiny
            nll = nll.masked_scatter(tiny, exact_logsumexp(rows) - target_logit[tiny])
        loss_sum += torch.where(vb, nll, 0.0).sum()
        x.scatter_add_(1, t, torch.full_like(target_p, -1.0).unsqueeze(1))
        if not in_place:
            block.copy_(x)  # rounded to bf16 once, like the cast of a bf16 GEMM's operand
        elif round_to is not None:
            x.copy_(x.to(round_to))
    return loss_sum


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk, ignore_index, dtype, upcast, n_classes):
        # h: (N, C) any float dtype; weight: (V_padded, C) fp32 parameter, of which the first
        # n_classes rows are classes; targets: (N,) int64.
        # upcast: multiply the bf16-rounded operands with the fp32 GEMM (see module docstring).
        N, C, V = h.size(0), h.size(1), n_classes
        upcast = upcast and dtype != torch.float32
        native = dtype != torch.float32 and not upcast  # torch's own bf16 GEMMs
        w = weight[:V].to(dtype)  # the (V, C) operand, rounded once
        if upcast:
            w = w.float()
        valid = targets != ignore_index
        n_valid = valid.sum().clamp(min=1).float()
        # d(mean loss)/d(logits) = (softmax - one_hot) * valid / n_valid, applied to the small
        # (n, C) operand and results, never to the big logits buffer. In fp32 the whole row scale
        # goes on grad-W's operand h. In bf16 only the exact 0/1 mask does, and 1 / n_valid
        # scales the fp32 result in backward: h * 1/n would be rounded to bf16 a second time.
        row_scale = (valid.float() / n_valid).unsqueeze(1)  # (N, 1)
        if dtype == torch.float32:
            operand_scale, w_divisor = row_scale, torch.ones_like(n_valid)
        else:
            operand_scale, w_divisor = valid.to(dtype).unsqueeze(1), n_valid  # mask: exact
        loss_sum = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty(N, C, dtype=torch.float32, device=h.device)
        # Padding rows are part of the gradient (zero), so autograd needs no slice-backward copy.
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        # The chunk's logits, reused in place from logits to gradient: bf16 on the native branch
        # (bf16 or fp16: what the GEMM writes), else fp32.
        buffer = _scratch("logits", (min(chunk, N), V), dtype if native else torch.float32,
                          h.device)
        if native:  # grad-W's per-chunk bf16 (fp16) product, and its exact fp32 copy for the sum
            product = _scratch("grad_w_product", (V, C), dtype, h.device)
            product32 = _scratch("grad_w_product_fp32", (V, C), torch.float32, h.device)
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            hc = h[s:e].to(dtype)  # (n, C)
            if upcast:
                hc = hc.float()
            logits = buffer[: e - s]
            torch.mm(hc, w.t(), out=logits)

            def exact_logsumexp(rows, hc=hc):
                return torch.logsumexp((hc[rows] @ w.t()).float(), dim=1)

            loss_sum += _logits_to_grad(logits, targets[s:e].clamp(min=0), valid[s:e],
                                        exact_logsumexp, dtype if upcast else None)
            g = logits  # softmax - one_hot, in the dtype of the GEMMs' operands
            grad_h[s:e] = torch.mm(g, w).float().mul_(row_scale[s:e])  # (n, V) @ (V, C)
            hs = hc * operand_scale[s:e].to(hc.dtype)
            if native:  # bf16 result per chunk, summed over chunks in fp32
                torch.mm(g.t(), hs, out=product)
                # a bf16 tensor added into fp32 takes a slow mixed-dtype path (5x the time of
                # this exact copy and an fp32 add)
                grad_w[:V].add_(product32.copy_(product))
            else:
                grad_w[:V].addmm_(g.t(), hs)  # (V, n) @ (n, C), accumulated in fp32
        ctx.save_for_backward(grad_h, grad_w, w_divisor)
        ctx.h_dtype = h.dtype
        return loss_sum / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        # In place: the saved gradients are used once (no retain_graph in training). A bf16
        # grad-W was summed without the mean's 1 / n_valid, which is applied here.
        grad_h, grad_w, w_divisor = ctx.saved_tensors
        return (grad_h.mul_(grad_out).to(ctx.h_dtype), grad_w.mul_(grad_out / w_divisor),
                None, None, None, None, None, None)


def fused_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               chunk: int = DEFAULT_CHUNK, ignore_index: int = -1,
                               bf16_via_fp32: bool | None = None,
                               n_classes: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of logits h @ weight[:n_classes].T against targets (ignore_index
    skipped), with gradients for h and weight (zero for the padding rows past n_classes), never
    holding more than chunk x n_classes logits. bf16_via_fp32: run bf16 matmuls as fp32 GEMMs
    of bf16-rounded operands (None: where the device lacks bf16 instructions)."""
    dtype = _compute_dtype(h.device.type)
    if bf16_via_fp32 is None:
        bf16_via_fp32 = not native_bf16_matmul(h.device.type)
    n_classes = weight.size(0) if n_classes is None else n_classes
    with torch.autocast(h.device.type, enabled=False):
        return _FusedLinearCrossEntropy.apply(h, weight, targets, chunk, ignore_index, dtype,
                                              bf16_via_fp32, n_classes)


class LossModel(nn.Module):
    """The GPT plus its training loss, as one module for DDP and torch.compile to wrap:
    forward(idx, targets) -> mean loss. `fused=False` uses the model's own forward (logits +
    F.cross_entropy); both give the same loss."""

    def __init__(self, gpt: nn.Module, fused: bool = True, chunk: int = DEFAULT_CHUNK,
                 bf16_via_fp32: bool | None = None):
        super().__init__()
        self.gpt, self.fused, self.chunk = gpt, fused, chunk
        if bf16_via_fp32 is None:  # decided here, outside anything torch.compile traces
            bf16_via_fp32 = not native_bf16_matmul(gpt.lm_head.weight.device.type)
        self.bf16_via_fp32 = bf16_via_fp32

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return self.gpt(idx, targets)[1]
        h = self.gpt.hidden_states(idx)  # (B, T, C)
        return fused_linear_cross_entropy(h.reshape(-1, h.size(-1)), self.gpt.lm_head.weight,
                                          targets.reshape(-1), self.chunk,
                                          bf16_via_fp32=self.bf16_via_fp32,
                                          n_classes=self.gpt.config.vocab_size)


def reference_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The unfused definition, for tests."""
    return F.cross_entropy((h @ weight.t()).float(), targets, ignore_index=-1)
