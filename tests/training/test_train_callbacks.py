"""The printed training lines: step/total, tokens/s, MFU with its peak, ETA; val loss with its
bits per byte and token count; print_every=0 prints nothing but still records everything."""

import io
from types import SimpleNamespace

from training.callbacks import JsonlLogger, read_metrics

INFO = {"start_step": 0, "max_steps": 80, "peak_flops": 358e9,
        "peak_flops_source": "measured float32 matmul peak of this cpu"}
STEP = {"loss": 6.5, "lr": 3e-4, "grad_norm": 0.5, "tokens_per_s": 814.0, "mfu": 0.413,
        "step_time_s": 2.5, "tokens_seen": 81920}
EVAL = {"val_loss": 6.479, "val_bpb": 2.25, "val_perplexity": 651.9, "val_tokens": 16384,
        "val_bytes": 70000}


def test_step_and_eval_lines(tmp_path):
    out = io.StringIO()
    log = JsonlLogger(tmp_path, print_every=10, stream=out)
    log.on_train_start(SimpleNamespace(max_steps=80), INFO)
    log.lines.t_start -= 40.0  # 40 s for the first 40 steps: 40 s left
    for step in range(1, 41):
        log.on_step(step, STEP)
    log.on_eval(40, EVAL)
    lines = out.getvalue().splitlines()
    assert lines[1] == ("train: mfu = model FLOP/s / 358 GFLOP/s, the measured float32 matmul "
                        "peak of this cpu")
    steps = [line for line in lines if line.startswith("step") and "| loss" in line]
    assert len(steps) == 4  # every 10th step
    assert steps[-1].startswith("step 40/80 | loss 6.500000 | lr 3.000e-04 | norm 0.5000 | "
                                "814 tok/s | mfu 41.3% of 358 GFLOP/s | eta ")
    eta = steps[-1].rsplit("eta ", 1)[1]
    assert eta in ("40s", "39s", "41s")
    assert lines[-1] == "step 40/80 | val loss 6.479000 nats/token, 2.2500 bits/byte on 16,384 val tokens"
    assert read_metrics(tmp_path, "eval")[40]["val_bpb"] == 2.25


def test_resumed_run_counts_eta_from_its_own_steps(tmp_path):
    out = io.StringIO()
    log = JsonlLogger(tmp_path, print_every=1, stream=out)
    log.on_train_start(SimpleNamespace(max_steps=80), {**INFO, "start_step": 70})
    log.lines.t_start -= 5.0  # 5 s for steps 71..75: 5 s for the last 5
    log.on_step(75, STEP)
    assert out.getvalue().splitlines()[-1].split("| eta ")[1] in ("5s", "4s", "6s")


def test_print_every_zero_is_silent_but_records(tmp_path):
    out = io.StringIO()
    log = JsonlLogger(tmp_path, print_every=0, stream=out)
    log.on_train_start(SimpleNamespace(max_steps=80), INFO)
    log.on_step(1, STEP)
    log.on_eval(1, EVAL)
    log.on_checkpoint(1, tmp_path / "ckpt")
    assert out.getvalue() == ""
    assert sorted(read_metrics(tmp_path)) == [1]
