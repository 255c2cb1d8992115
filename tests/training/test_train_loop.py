"""The loop in-process: callbacks, result, learning, resume, NaN stop, checkpoint crash safety."""

import json
import math
import shutil

import pytest

from model.checkpoint import CheckpointError, resolve_checkpoint, verify_checkpoint
from tests.training.conftest import small_config
from training import loop
from training.callbacks import BaseCallback, JsonlLogger, read_metrics
from training.checkpointing import (
    OPTIMIZER_TENSORS,
    latest_checkpoint,
    list_checkpoints,
)
from training.loop import NonFiniteLossError, train


class Recorder(BaseCallback):
    def __init__(self):
        self.events = []

    def on_train_start(self, cfg, info):
        self.events.append(("start", info))

    def on_step(self, step, metrics):
        self.events.append(("step", step, metrics))

    def on_eval(self, step, metrics):
        self.events.append(("eval", step, metrics))

    def on_checkpoint(self, step, path):
        self.events.append(("checkpoint", step, path))

    def on_train_end(self, result):
        self.events.append(("end", result))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


def test_train_reports_through_callbacks_and_writes_the_run_dir(shard_dir, tmp_path):
    cfg = small_config(shard_dir, tmp_path / "run", max_steps=24, eval_every=12,
                       checkpoint_every=8)
    rec = Recorder()
    result = train(cfg, [rec, JsonlLogger(cfg.out, print_every=100)])
    start = rec.of("start")[0][1]
    assert start["grad_accum"] == 2 and start["world_size"] == 1 and start["start_step"] == 0
    assert start["decay_tensors"] == 2 * 4 + 2 and start["precision"] == "fp32"
    steps = rec.of("step")
    assert [s[1] for s in steps] == list(range(1, 25))
    for _, _, m in steps:
        assert set(m) >= {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens_seen"}
        assert math.isfinite(m["loss"]) and m["grad_norm"] > 0 and 0 < m["mfu"] < 1
    assert steps[0][2]["lr"] == pytest.approx(cfg.max_lr / 2)  # warmup step 1 of 2
    assert steps[-1][2]["lr"] == pytest.approx(cfg.min_lr, rel=0.05)
    # it learns the repeated phrase: loss well below uniform (ln 256 = 5.55)
    assert steps[-1][2]["loss"] < steps[0][2]["loss"] - 1.0
    assert [e[1] for e in rec.of("eval")] == [12, 24]
    assert [e[1] for e in rec.of("checkpoint")] == [8, 16, 24]
    assert [p.name for p in list_checkpoints(cfg.out)] == ["step_00000016", "step_00000024"]
    assert result.step == 24 and result.tokens_seen == 24 * 256
    assert result.val_loss == rec.of("eval")[-1][2]["val_loss"]
    last_eval = rec.of("eval")[-1][2]
    # The tokens actually scored: eval_tokens (1024) in whole windows of seq_len (32), and bpb.
    assert last_eval["val_tokens"] == result.val_tokens == 1024
    assert result.val_bpb == last_eval["val_bpb"] and last_eval["val_bpb"] > 0
    assert start["max_steps"] == 24 and "measured float32 matmul peak" in start["peak_flops_source"]
    assert result.checkpoint.endswith("step_00000024") and len(result.train_shards) == 2
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk == result.to_dict() and rec.of("end")[0][1] == result
    assert read_metrics(cfg.out)[24]["loss"] == result.train_loss
    verify_checkpoint(result.checkpoint)


def test_resume_continues_bit_for_bit(shard_dir, tmp_path):
    full = train(small_config(shard_dir, tmp_path / "full", checkpoint_every=3, max_steps=9),
                 [JsonlLogger(tmp_path / "full", print_every=100)])
    part = small_config(shard_dir, tmp_path / "part", checkpoint_every=3, max_steps=9)
    train(part.replace(max_steps=5), [JsonlLogger(part.out, print_every=100)])  # ends at step 5
    # newest checkpoint is step 5 (the final one); drop it to resume from step 3 instead
    shutil.rmtree(list_checkpoints(part.out)[-1])
    resumed = train(part.replace(resume=True), [JsonlLogger(part.out, print_every=100)])
    want, got = read_metrics(tmp_path / "full"), read_metrics(part.out)
    for step in range(4, 10):
        assert got[step]["loss"] == want[step]["loss"], step
        assert got[step]["grad_norm"] == want[step]["grad_norm"], step
    assert resumed.val_loss == full.val_loss and resumed.tokens_seen == full.tokens_seen


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(shard_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_forward = loop.LossModel.forward

    def poisoned(self, idx, targets):
        calls["n"] += 1
        loss = real_forward(self, idx, targets)
        return loss * float("nan") if calls["n"] > 2 * 5 else loss  # 2 micro-steps per step

    monkeypatch.setattr(loop.LossModel, "forward", poisoned)
    cfg = small_config(shard_dir, tmp_path / "run", checkpoint_every=4, max_steps=8)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 6.*step_00000004"):
        train(cfg)
    assert latest_checkpoint(cfg.out).name == "step_00000004"
    assert not (tmp_path / "run" / "result.json").exists()


def test_crash_while_writing_a_checkpoint_leaves_the_previous_one_loadable(
        shard_dir, tmp_path, monkeypatch):
    cfg = small_config(shard_dir, tmp_path / "run", checkpoint_every=4, max_steps=4)
    train(cfg)
    good = latest_checkpoint(cfg.out)
    import training.checkpointing as ckpt

    def crash_midway(tensors, path, *a, **k):
        if path.endswith(OPTIMIZER_TENSORS):
            open(path, "wb").write(b"half a file")
            raise KeyboardInterrupt("simulated kill during the write")
        return real_save(tensors, path, *a, **k)

    real_save = ckpt.save_file
    monkeypatch.setattr(ckpt, "save_file", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        train(cfg.replace(resume=True, max_steps=8))
    monkeypatch.undo()
    assert latest_checkpoint(cfg.out) == good  # the half-written one is invisible
    # a checkpoint corrupted after the fact is skipped too
    resumed = train(cfg.replace(resume=True, max_steps=6, checkpoint_every=6))
    newest = list_checkpoints(cfg.out)[-1]
    (newest / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError):
        verify_checkpoint(newest)
    assert resolve_checkpoint(cfg.out) == good and resumed.step == 6
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # stale temp dirs pruned


def test_bf16_and_fp16_paths_run(shard_dir, tmp_path):
    for precision in ("bf16", "fp16"):
        r = train(small_config(shard_dir, tmp_path / precision, precision=precision, max_steps=3,
                               checkpoint_every=3))
        assert math.isfinite(r.train_loss) and r.step == 3
    state = json.loads((latest_checkpoint(tmp_path / "fp16") / "trainer_state.json").read_text())
    assert state["grad_scaler"]["scale"] > 0  # the loss scaler is checkpointed


def test_bad_data_dir_is_named(tmp_path):
    cfg = small_config(tmp_path / "nope", tmp_path / "run")
    with pytest.raises(ValueError, match="nope: no such shard directory"):
        train(cfg)
