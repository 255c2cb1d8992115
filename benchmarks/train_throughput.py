"""Training throughput: our GPT-2 + our AdamW against transformers' GPT2LMHeadModel + torch AdamW.

    .venv/bin/python benchmarks/train_throughput.py                 # fp32 and bf16, ~10 min
    .venv/bin/python benchmarks/train_throughput.py --precision bf16 --rounds 3
    python benchmarks/train_throughput.py --device cuda --preset gpt2 --batch 16 --seq 1024 \
        --precision bf16 --variants hf_compiled ours_compiled     # GPT-2 124M on a GPU

One training step = zero grads, forward (under autocast for bf16), loss, backward, global-norm
clip to 1.0, optimizer step, on the same random (batch, seq) tokens, same shape for everyone.
Default: the tiny preset (4 layers, 4 heads, width 256, context 256), batch 8, vocabulary 50304
(transformers' head is 50304 wide; ours is padded to 50304 and multiplies the 50257 real rows).

Variants, per precision:
    hf_eager        GPT2LMHeadModel + torch.optim.AdamW (defaults)
    hf_compiled     torch.compile(GPT2LMHeadModel) + torch.optim.AdamW(fused=True)
    ours_eager      our GPT + fused chunked LM-head/cross-entropy + our AdamW (foreach)
    ours_compiled   the same with torch.compile on the model and our compiled AdamW update
    ours_compiled_adamw  eager model, our AdamW update compiled (TrainConfig.compile_optimizer)
    ours_*_native   (bf16 only, for transparency) ours with torch's own bf16 GEMM in the LM
                    head even where the CPU lacks bf16 instructions (see training/fused_loss.py)
Variants are timed in alternation, `--steps` steps per turn, `--rounds` turns, in one process,
so background load hits all of them alike; the figure is the median step time. MFU uses
training.metrics.flops_per_token (6 N + 12 L T C, stated there) and a matrix-product peak
measured here in the same dtype (on known GPUs, the vendor's dense bf16 figure), named in the
output. Prints one JSON object, with the CPU's bf16 features.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import GPT, GPTConfig  # noqa: E402
from training.fused_loss import LossModel, native_bf16_matmul  # noqa: E402
from training.metrics import KNOWN_GPU_PEAKS, flops_per_token, measure_peak_flops  # noqa: E402
from training.optim import AdamW, clip_grad_norm, param_groups  # noqa: E402
from benchmarks.machine import cpu_bf16_flags, cpu_name  # noqa: E402

LR, BETAS, WD = 6e-4, (0.9, 0.95), 0.1


class Shape:
    """What every variant trains: model config, batch, sequence length, device."""

    def __init__(self, config: GPTConfig, batch: int, seq: int, device: str):
        self.config, self.batch, self.seq = config, batch, seq
        self.device = torch.device(device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Variant:
    def __init__(self, name, model, step_loss, params, optimizer_step, zero_grad, autocast):
        self.name, self.model, self.step_loss = name, model, step_loss
        self.params, self.optimizer_step, self.zero_grad = params, optimizer_step, zero_grad
        self.autocast = autocast
        self.times: list[float] = []

    def step(self, x, y) -> float:
        self.zero_grad()
        with self.autocast():
            loss = self.step_loss(x, y)
        loss.backward()
        return loss


def _autocast(dtype, device_type: str):
    if dtype is None:
        import contextlib
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type, dtype=dtype)


def hf_variant(shape: Shape, compiled: bool, dtype) -> Variant:
    import transformers

    cfg = shape.config
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.embedding_rows, n_positions=cfg.block_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, activation_function="gelu_new")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_cfg).to(shape.device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, **({"fused": True} if compiled else {}))
    run = torch.compile(model) if compiled else model
    params = list(model.parameters())

    def loss_fn(x, y):
        return run(input_ids=x, labels=y).loss  # labels are shifted inside; close enough in cost

    def opt_step():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return Variant(f"hf_{'compiled' if compiled else 'eager'}", model, loss_fn, params, opt_step,
                   lambda: opt.zero_grad(set_to_none=True), _autocast(dtype, shape.device.type))


def ours_variant(shape: Shape, compiled: bool, dtype, native_bf16: bool = False,
                 compiled_adamw: bool | None = None) -> Variant:
    model = GPT(shape.config, seed=0).to(shape.device).train()
    compiled_adamw = compiled if compiled_adamw is None else compiled_adamw
    opt = AdamW(param_groups(model, WD), lr=LR, betas=BETAS, compiled=compiled_adamw)
    loss_model = LossModel(model, fused=True, bf16_via_fp32=False if native_bf16 else None)
    run = torch.compile(loss_model) if compiled else loss_model
    params = list(model.parameters())

    def opt_step():
        clip_grad_norm(params, 1.0)
        opt.step(lr=LR)

    name = f"ours_{'compiled' if compiled else 'eager'}" + ("_native" if native_bf16 else "")
    if compiled_adamw and not compiled:
        name = "ours_compiled_adamw"
    return Variant(name, model, run, params, opt_step, opt.zero_grad,
                   _autocast(dtype, shape.device.type))


def bench(shape: Shape, precision: str, rounds: int, steps: int, variants: list[str]) -> dict:
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    gen = torch.Generator().manual_seed(0)
    tokens = (shape.batch, shape.seq)
    x = torch.randint(0, shape.config.vocab_size, tokens, generator=gen).to(shape.device)
    y = torch.randint(0, shape.config.vocab_size, tokens, generator=gen).to(shape.device)
    makers = {
        "hf_eager": lambda: hf_variant(shape, False, dtype),
        "hf_compiled": lambda: hf_variant(shape, True, dtype),
        "ours_eager": lambda: ours_variant(shape, False, dtype),
        "ours_compiled": lambda: ours_variant(shape, True, dtype),
        "ours_compiled_adamw": lambda: ours_variant(shape, False, dtype, compiled_adamw=True),
        "ours_compiled_native": lambda: ours_variant(shape, True, dtype, native_bf16=True),
    }
    n_tok = shape.batch * shape.seq
    runs = []
    for name in variants:
        if name.endswith("_native") and (dtype is None or native_bf16_matmul(shape.device.type)):
            continue  # only differs from ours_compiled where the machine lacks bf16 units
        v = makers[name]()
        t0 = time.perf_counter()
        for _ in range(2):  # warm-up: compilation, allocator, first-touch pages
            v.step(x, y)
            v.optimizer_step()
        shape.sync()
        print(f"[{precision}] {name}: warm-up {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        runs.append(v)
    for r in range(rounds):
        for v in runs:
            for _ in range(steps):
                t0 = time.perf_counter()
                v.step(x, y)
                v.optimizer_step()
                shape.sync()
                v.times.append(time.perf_counter() - t0)
        print(f"[{precision}] round {r + 1}/{rounds}: " + ", ".join(
            f"{v.name} {n_tok / statistics.median(v.times):.0f}" for v in runs),
            file=sys.stderr)
    peak_dtype = dtype or torch.float32
    peak = measure_peak_flops(peak_dtype, shape.device)
    peak_source = f"measured {str(peak_dtype).removeprefix('torch.')} matmul on {shape.device}"
    if shape.device.type == "cuda" and peak in KNOWN_GPU_PEAKS.values() and dtype is not None:
        peak_source = f"vendor dense {str(peak_dtype).removeprefix('torch.')} peak"
    if dtype is not None and not native_bf16_matmul(shape.device.type):
        # Without bf16 instructions our LM head multiplies bf16-rounded operands on the fp32
        # units: count MFU against the faster of the two peaks so it stays an honest fraction.
        fp32_peak = measure_peak_flops(torch.float32, shape.device)
        if fp32_peak > peak:
            peak, peak_source = fp32_peak, f"measured float32 matmul on {shape.device} (faster here)"
    fpt = flops_per_token(shape.config, shape.seq)
    out = {"peak_flops": peak, "peak_source": peak_source, "variants": {}}
    for v in runs:
        tok_s = n_tok / statistics.median(v.times)
        out["variants"][v.name] = {
            "tokens_per_s": round(tok_s, 1), "best_tokens_per_s": round(n_tok / min(v.times), 1),
            "mfu": round(tok_s * fpt / peak, 4), "steps_timed": len(v.times)}
    t = {k: v["tokens_per_s"] for k, v in out["variants"].items()}
    best_ours = max((k for k in t if k.startswith("ours") and not k.endswith("_native")),
                    key=t.get, default=None)
    if best_ours:
        out["best_ours"] = best_ours
        for ref in ("hf_eager", "hf_compiled"):
            if ref in t:
                out[f"ratio_{best_ours}_vs_{ref}"] = round(t[best_ours] / t[ref], 3)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    parser.add_argument("--variants", nargs="+", default=[
        "hf_eager", "hf_compiled", "ours_eager", "ours_compiled", "ours_compiled_adamw",
        "ours_compiled_native"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--preset", default="tiny", help="model preset (model/config.py)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--override", nargs="*", default=[], metavar="FIELD=INT",
                        help="model config overrides, e.g. n_layer=2 n_embd=64 (smoke runs)")
    args = parser.parse_args(argv)
    overrides = {k: int(v) for k, v in (o.split("=", 1) for o in args.override)}
    config = GPTConfig.preset(args.preset, **overrides)
    shape = Shape(config, args.batch, min(args.seq, config.block_size), args.device)
    result = {
        "config": {"preset": args.preset, "n_layer": config.n_layer, "n_head": config.n_head,
                   "n_embd": config.n_embd, "block_size": config.block_size,
                   "vocab": config.embedding_rows, "batch": shape.batch, "seq_len": shape.seq,
                   "device": str(shape.device)},
        "flops_per_token": flops_per_token(config, shape.seq),
        "flop_formula": "6 * N + 12 * n_layer * seq_len * n_embd (training/metrics.py)",
        "machine": {"cpu": cpu_name(), "cpu_bf16_flags": cpu_bf16_flags(),
                    "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "platform": platform.platform(),
                    "gpu": (torch.cuda.get_device_name(shape.device)
                            if shape.device.type == "cuda" else None),
                    "native_bf16_matmul": native_bf16_matmul(shape.device.type),
                    "loadavg_start": os.getloadavg()},
    }
    for precision in args.precision:
        result[precision] = bench(shape, precision, args.rounds, args.steps, args.variants)
    result["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
