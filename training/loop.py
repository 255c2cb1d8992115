"""The training loop, written out: read it top to bottom.

    from training import TrainConfig, train
    result = train(TrainConfig.preset("tiny", data=["data/shards"], out="runs/tiny"))

One optimizer step = `grad_accum` micro-steps of forward + backward on (micro_batch, seq_len)
tokens per rank, gradients averaged over micro-steps (loss / grad_accum) and ranks (DDP, synced
on the last micro-step only), clipped to a global norm, then one AdamW update at the scheduled
learning rate. Every `eval_every` steps the held-out loss is measured; every `checkpoint_every`
steps (and at the end) rank 0 writes a checkpoint that `resume=True` continues from, bit for
bit. A non-finite loss stops the run before it touches the weights.

One run at a time per run directory: rank 0 holds RUN_DIR/.lock (pipelines.locking) from before
anything is written there until the end; a second run on it stops at once (LockHeld, naming the
holder), on every rank. A lock left by a killed run is taken over.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from evaluation.heldout import HeldoutResult, evaluate_loss
from model.gpt import GPT
from pipelines.atomic import write_text_atomic
from pipelines.locking import exclusive_lock
from training import distributed
from training.callbacks import Callback, CallbackList
from training.checkpointing import (
    check_shard_fingerprint,
    latest_checkpoint,
    load_training_checkpoint,
    refuse_fresh_run_over_checkpoints,
    remove_partial_checkpoints,
    save_training_checkpoint,
    shard_fingerprint,
)
from training.config import TrainConfig
from training.data import ShardLoader, find_shards
from training.fused_loss import LossModel
from training.metrics import flops_per_token, measure_peak_flops, mfu, peak_flops_source
from training.optim import AdamW, clip_grad_norm, group_counts, param_groups
from training.precision import resolve_precision
from training.schedule import get_lr

RESULT_FILE = "result.json"
LOCK_FILE = ".lock"
# What rank 0 may raise where the other ranks would wait for it (the lock, a checkpoint write):
# the user errors the CLI reports in one line.
_USER_ERRORS = (ValueError, OSError, RuntimeError)


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; the run stops without updating."""


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived; raised at the next safe point (never inside a checkpoint write)."""

    def __init__(self, signum: int):
        super().__init__(f"training interrupted by signal {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class TrainResult:
    step: int  # optimizer steps completed
    train_loss: float | None  # loss of the last step
    val_loss: float | None  # held-out loss at the end (None without val shards)
    # ... its bits per byte, and the val tokens it was measured on: the first eval_tokens of the
    # val shards, rounded down to whole windows (fewer when the shards hold fewer)
    val_bpb: float | None
    val_tokens: int | None
    checkpoint: str | None  # the last checkpoint written or resumed from
    tokens_seen: int
    train_shards: list[str] = field(default_factory=list)
    val_shards: list[str] = field(default_factory=list)
    run_dir: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def train(cfg: TrainConfig, callbacks: list[Callback] | tuple = ()) -> TrainResult:
    """Run (or resume) training as configured; callable from Python, the CLI and torchrun."""
    cfg.validate()
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = distributed.setup(cfg.device)
    try:
        with contextlib.ExitStack() as held:
            run_dir = Path(cfg.out)
            _on_main_for_all(info, lambda: held.enter_context(
                exclusive_lock(run_dir / LOCK_FILE, what=f"training run {run_dir}")))
            guard = held.enter_context(_signals_raise_interrupt())
            return _train(cfg, CallbackList(callbacks), info, guard)
    finally:
        if owns_group:
            distributed.teardown()


def _on_main_for_all(dist: distributed.DistInfo, fn):
    """fn() on rank 0 only (its result there, None elsewhere). If it fails with a user error,
    every rank raises at once (rank 0 the error, the others a RuntimeError with its message)
    rather than the others waiting for rank 0 in their next collective until the timeout."""
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except _USER_ERRORS as exc:
            error = exc
    message = distributed.agree_on_error(None if error is None else str(error), dist)
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(message)
    return result


def _train(cfg: TrainConfig, callbacks: CallbackList, dist: distributed.DistInfo,
           guard: "_SignalGuard") -> TrainResult:
    run_dir, device = Path(cfg.out), dist.device
    if dist.is_main:  # under the run's lock no other writer exists: their leftovers are stale
        remove_partial_checkpoints(run_dir)
    if not cfg.resume:
        _on_main_for_all(dist, lambda: refuse_fresh_run_over_checkpoints(run_dir))
    torch.manual_seed(cfg.seed + dist.rank)  # dropout differs per rank; init has its own seed
    precision = resolve_precision(cfg.precision, device)
    shards = find_shards(cfg.data)
    seq_len = cfg.sequence_length
    grad_accum = cfg.grad_accum_steps(dist.world_size)

    # ---- model, optimizer, data ------------------------------------------------------------
    model = GPT(cfg.model_config(), seed=cfg.seed).to(device)  # same init on every rank
    groups = param_groups(model, cfg.weight_decay)
    optimizer = AdamW(groups, lr=cfg.max_lr, betas=cfg.betas, eps=cfg.eps,
                      weight_decay=cfg.weight_decay,
                      compiled=cfg.compile if cfg.compile_optimizer is None else cfg.compile_optimizer)
    # vocab_size: every id is range-checked as a shard opens, so a bad shard stops the run here,
    # named with its offset, not deep inside the embedding (or silently, on a padding row).
    loader = ShardLoader(shards.train, cfg.micro_batch, seq_len, cfg.seed, dist.rank,
                         dist.world_size, order=cfg.data_order,
                         vocab_size=model.config.vocab_size)
    # After the loader, which refuses what is not a regular file (a FIFO would block a read).
    fingerprint = shard_fingerprint(shards.train)  # ~1 MiB read per shard
    scaler = precision.grad_scaler()

    start_step, tokens_seen, last_checkpoint = 0, 0, None
    if cfg.resume and (found := latest_checkpoint(run_dir)) is not None:
        state = load_training_checkpoint(found, model, optimizer)  # weights, moments, RNG
        check_shard_fingerprint(state.get("data_fingerprint"), fingerprint, shards.train, found)
        loader.load_state_dict(state["data"])
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        last_checkpoint = str(found)

    # The module that DDP and torch.compile wrap: GPT + (fused) loss -> scalar.
    step_model: torch.nn.Module = LossModel(model, fused=cfg.fused_loss)
    ddp = None
    if dist.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
        step_model = ddp
    if cfg.compile:
        step_model = torch.compile(step_model)

    flops_tok = flops_per_token(model.config, seq_len)
    peak_dtype = precision.autocast_dtype or torch.float32
    peak = measure_peak_flops(peak_dtype, device) if dist.is_main else 0.0
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "train_config.json", cfg.to_json())
        callbacks.on_train_start(cfg, {
            "world_size": dist.world_size, "grad_accum": grad_accum, "device": str(device),
            "precision": precision.name, "seq_len": seq_len, "tokens_per_step": cfg.batch_tokens,
            "parameters": model.num_parameters(), **group_counts(groups),
            "model_config": model.config.to_dict(), "flops_per_token": flops_tok,
            "peak_flops": peak, "peak_flops_source": peak_flops_source(peak_dtype, device),
            "max_steps": cfg.max_steps, "start_step": start_step, "resumed_from": last_checkpoint,
            "train_shards": [str(p) for p in shards.train],
            "val_shards": [str(p) for p in shards.val],
        })

    # ---- the loop -----------------------------------------------------------------------
    loss_value, held = None, None
    for step in range(start_step, cfg.max_steps):
        t0 = time.perf_counter()
        lr = get_lr(step, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        loss_sum = torch.zeros((), device=device)
        for micro in range(grad_accum):
            x, y = (t.to(device, non_blocking=True) for t in loader.next_batch())
            # DDP all-reduces gradients during backward; only the last micro-step needs it.
            last = micro == grad_accum - 1
            sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
            with sync:
                with precision.autocast():
                    loss = step_model(x, y) / grad_accum  # mean over the whole step's tokens
                loss_sum += loss.detach()
                (scaler.scale(loss) if scaler else loss).backward()
            guard.check()
        distributed.all_reduce_mean(loss_sum, dist)  # report the global mean, same on all ranks
        loss_value = loss_sum.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {step + 1}; stopped before updating the weights. "
                f"Last good checkpoint: {last_checkpoint or 'none written yet'}"
            )
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip).item()
        if scaler is not None:
            scaler.step(optimizer, lr=lr)  # skipped when fp16 gradients overflowed
            scaler.update()
        elif not math.isfinite(grad_norm):
            raise NonFiniteLossError(
                f"gradient norm is {grad_norm} at step {step + 1}; stopped before updating the "
                f"weights. Last good checkpoint: {last_checkpoint or 'none written yet'}"
            )
        else:
            optimizer.step(lr=lr)
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        done, tokens_seen = step + 1, tokens_seen + cfg.batch_tokens

        if dist.is_main:
            tok_s = cfg.batch_tokens / dt
            callbacks.on_step(done, {
                "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s,
                "mfu": mfu(tok_s / dist.world_size, flops_tok, peak), "step_time_s": dt,
                "tokens_seen": tokens_seen,
            })
        final = done == cfg.max_steps
        if shards.val and ((cfg.eval_every and done % cfg.eval_every == 0) or final):
            held = _evaluate(model, shards.val, cfg, seq_len, device, precision)
            if dist.is_main:
                callbacks.on_eval(done, {"val_loss": held.loss, "val_bpb": held.bpb,
                                         "val_perplexity": held.perplexity,
                                         "val_tokens": held.tokens, "val_bytes": held.bytes})
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or final:
            with guard.deferred():  # a signal now waits until the checkpoint is complete
                def save():
                    path = save_training_checkpoint(
                        run_dir, done, model, optimizer, cfg,
                        {"tokens_seen": tokens_seen, "data": loader.state_dict(),
                         "data_fingerprint": fingerprint,
                         "grad_scaler": scaler.state_dict() if scaler else None,
                         "train_loss": loss_value},
                        cfg.keep_last, previous=last_checkpoint)
                    callbacks.on_checkpoint(done, path)
                    return str(path)

                # A failed write (a full disk) stops every rank with rank 0's message.
                last_checkpoint = _on_main_for_all(dist, save) or last_checkpoint
        guard.check()

    if held is None and shards.val and start_step >= cfg.max_steps:
        held = _evaluate(model, shards.val, cfg, seq_len, device, precision)
    result = TrainResult(
        step=max(start_step, cfg.max_steps), train_loss=loss_value,
        val_loss=None if held is None else held.loss, val_bpb=None if held is None else held.bpb,
        val_tokens=None if held is None else held.tokens,
        checkpoint=last_checkpoint, tokens_seen=tokens_seen,
        train_shards=[str(p) for p in shards.train], val_shards=[str(p) for p in shards.val],
        run_dir=str(run_dir),
    )
    if dist.is_main:
        write_text_atomic(run_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2))
        callbacks.on_train_end(result)
    return result


def _evaluate(model, val_shards, cfg, seq_len, device, precision) -> HeldoutResult:
    # Every rank calls it (evaluate_loss splits the windows over ranks and all-reduces).
    return evaluate_loss(model, val_shards, max_tokens=cfg.eval_tokens,
                         batch_size=cfg.micro_batch, seq_len=seq_len, device=device,
                         autocast_dtype=precision.autocast_dtype)


class _SignalGuard:
    """Turns SIGTERM/SIGINT into TrainingInterrupted: at once, or, inside `deferred()`, as soon
    as the protected block (a checkpoint write) finishes. The orchestrator cancels a run by
    signalling its process tree; the run then stops within one micro-step."""

    def __init__(self):
        self.pending: int | None = None
        self.depth = 0

    def handler(self, signum, frame):
        self.pending = signum
        if self.depth == 0:
            self.check()

    def check(self) -> None:
        if self.pending is not None and self.depth == 0:
            raise TrainingInterrupted(self.pending)

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        self.check()


@contextlib.contextmanager
def _signals_raise_interrupt():
    guard = _SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, guard.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield guard
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
