"""The callback interface through which a run reports itself (stdout, JSONL, MLflow, Dagster).

Only rank 0 calls callbacks. Metrics are plain Python numbers, ready for json.dumps.

    on_train_start(cfg, info)   info: world_size, grad_accum, device, precision, param counts,
                                model config, resumed_from (checkpoint path or None), start_step,
                                max_steps, peak_flops and peak_flops_source (what MFU divides by)
    on_step(step, metrics)      after every optimizer step; step counts from 1 (= steps done).
                                metrics: loss, lr, grad_norm (before clipping), tokens_per_s,
                                mfu, step_time_s, tokens_seen
    on_eval(step, metrics)      val_loss (nats per token), val_bpb (bits per byte), val_perplexity,
                                val_tokens (target tokens scored), val_bytes (their UTF-8 bytes)
    on_checkpoint(step, path)   after a checkpoint directory is complete
    on_train_end(result)        the TrainResult
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pipelines.atomic import naming_the_file, write_text_atomic


@runtime_checkable
class Callback(Protocol):
    def on_train_start(self, cfg: Any, info: dict) -> None: ...
    def on_step(self, step: int, metrics: dict) -> None: ...
    def on_eval(self, step: int, metrics: dict) -> None: ...
    def on_checkpoint(self, step: int, path: Path) -> None: ...
    def on_train_end(self, result: Any) -> None: ...


class BaseCallback:
    """All hooks as no-ops: subclass and override what you need."""

    def on_train_start(self, cfg, info: dict) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        pass

    def on_eval(self, step: int, metrics: dict) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_train_end(self, result) -> None:
        pass


class CallbackList(BaseCallback):
    """Fans every hook out to a list of callbacks (missing hooks are skipped)."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def on_train_start(self, cfg, info):
        self._call("on_train_start", cfg, info)

    def on_step(self, step, metrics):
        self._call("on_step", step, metrics)

    def on_eval(self, step, metrics):
        self._call("on_eval", step, metrics)

    def on_checkpoint(self, step, path):
        self._call("on_checkpoint", step, path)

    def on_train_end(self, result):
        self._call("on_train_end", result)


class ProgressLines(BaseCallback):
    """The run as readable lines, handed to `emit` (print, a Dagster log): every `every`-th step
    (0: none) and each eval and checkpoint. A step line reads

        step 40/80 | loss 6.479 | lr 3.9e-04 | norm 0.66 | 814 tok/s | mfu 41.3% of 358 GFLOP/s | eta 1m20s

    The MFU's peak is named in words once, at the start. The ETA is this run's mean time per
    step so far, evaluations and checkpoints included, times the steps left."""

    def __init__(self, emit, every: int = 1):
        self.emit, self.every = emit, every
        self.max_steps, self.start_step, self.peak = None, 0, 0.0
        self.t_start = time.monotonic()

    def _step(self, step: int) -> str:
        width = len(str(self.max_steps)) if self.max_steps else 6
        total = f"/{self.max_steps}" if self.max_steps else ""
        return f"step {step:{width}d}{total}"

    def on_train_start(self, cfg, info):
        from training.metrics import format_flops

        self.start_step = info.get("start_step", 0)
        self.max_steps = info.get("max_steps", getattr(cfg, "max_steps", None))
        self.peak = info.get("peak_flops") or 0.0
        self.t_start = time.monotonic()
        if self.every <= 0:
            return
        self.emit(f"train: {json.dumps(info, default=str)}")
        if self.peak:
            self.emit(f"train: mfu = model FLOP/s / {format_flops(self.peak)}, the "
                      f"{info.get('peak_flops_source', 'peak')}")

    def on_step(self, step, metrics):
        from evaluation.progress import eta_seconds, format_duration
        from training.metrics import format_flops

        if self.every <= 0 or step % self.every:
            return
        line = (f"{self._step(step)} | loss {metrics['loss']:.6f} | lr {metrics['lr']:.3e} | "
                f"norm {metrics['grad_norm']:.4f} | {metrics['tokens_per_s']:.0f} tok/s | "
                f"mfu {100 * metrics['mfu']:.1f}%")
        if self.peak:
            line += f" of {format_flops(self.peak)}"
        if self.max_steps:
            eta = eta_seconds(step - self.start_step, self.max_steps - self.start_step,
                              time.monotonic() - self.t_start)
            if eta is not None:
                line += f" | eta {format_duration(eta)}"
        self.emit(line)

    def on_eval(self, step, metrics):
        if self.every > 0:
            bpb = f", {metrics['val_bpb']:.4f} bits/byte" if "val_bpb" in metrics else ""
            on = f" on {metrics['val_tokens']:,} val tokens" if "val_tokens" in metrics else ""
            self.emit(f"{self._step(step)} | val loss {metrics['val_loss']:.6f} nats/token{bpb}{on}")

    def on_checkpoint(self, step, path):
        if self.every > 0:
            self.emit(f"{self._step(step)} | checkpoint {path}")

    def on_train_end(self, result):
        if self.every > 0:
            self.emit(f"done: {json.dumps(result.to_dict(), default=str)}")


class JsonlLogger(BaseCallback):
    """Appends one JSON object per event to RUN_DIR/metrics.jsonl and prints the run's
    ProgressLines to `stream` every `print_every` steps (0: prints nothing, e.g. where another
    callback shows the lines). Each record has "event" (start/step/eval/checkpoint/end) and
    "step".

    The file describes the run as it now stands: when a run starts at step S (a resume, or a
    fresh run over an old directory at S = 0), records of later steps, written by a run that was
    killed after its last checkpoint, are dropped first (the file is rewritten atomically), so
    each step appears once. Nothing touches the file before the run holds its directory's lock
    (the first event), so a refused second run leaves it as it was."""

    def __init__(self, run_dir: str | os.PathLike, print_every: int = 1, stream=None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.stream = stream or sys.stdout
        self.lines = ProgressLines(self._print, print_every)

    def _write(self, record: dict) -> None:
        with naming_the_file(self.path), open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _keep_until(self, step: int) -> None:
        """Drop the records of steps after `step`, and a last line cut short by a kill."""
        try:
            lines = self.path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept = [line for line in lines if (s := _record_step(line)) is not None and s <= step]
        if kept == lines:
            return
        write_text_atomic(self.path, "".join(kept))

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_train_start(self, cfg, info):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._keep_until(info.get("start_step", 0))
        self._write({"event": "start", "step": info.get("start_step", 0), **info})
        self.lines.on_train_start(cfg, info)

    def on_step(self, step, metrics):
        self._write({"event": "step", "step": step, **metrics})
        self.lines.on_step(step, metrics)

    def on_eval(self, step, metrics):
        self._write({"event": "eval", "step": step, **metrics})
        self.lines.on_eval(step, metrics)

    def on_checkpoint(self, step, path):
        self._write({"event": "checkpoint", "step": step, "path": str(path)})
        self.lines.on_checkpoint(step, path)

    def on_train_end(self, result):
        self._write({"event": "end", "step": result.step, **result.to_dict()})
        self.lines.on_train_end(result)


def _record_step(line: str) -> int | None:
    """The step of one metrics.jsonl line, or None for a line that is not a whole record."""
    if not line.endswith("\n"):
        return None  # the last line of a killed run, cut short
    try:
        step = json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def read_metrics(run_dir: str | os.PathLike, event: str = "step") -> dict[int, dict]:
    """{step: record} of one event kind from metrics.jsonl; a later record of the same step (a
    resumed run re-doing it) replaces the earlier one."""
    out = {}
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if record.get("event") == event:
            out[record["step"]] = record
    return out
