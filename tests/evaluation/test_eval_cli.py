"""`hgpt sample` and `hgpt eval` end to end on a small checkpoint."""

import json

import numpy as np
import pytest

from hgpt.cli import main
from model import GPT, GPTConfig
from model.checkpoint import write_checkpoint
from pipelines.shard_format import write_shard


@pytest.fixture()
def checkpoint(tmp_path):
    model = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32), seed=0)
    return write_checkpoint(tmp_path / "run" / "checkpoints" / "step_000010", model)


def test_sample_is_reproducible_with_a_seed(checkpoint, capsys):
    run_dir = str(checkpoint.parent.parent)  # a run directory resolves to its newest checkpoint
    args = ["sample", run_dir, "--prompt", "Hello", "--prompt", "Bye", "--max-new-tokens", "5",
            "--top-k", "10", "--seed", "3", "--num-samples", "2", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert [(r["prompt"], r["seed"]) for r in first] == [("Hello", 3), ("Hello", 4), ("Bye", 3), ("Bye", 4)]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first


def test_eval_reports_heldout_and_hellaswag(checkpoint, tmp_path, capsys):
    val = tmp_path / "val"
    val.mkdir()
    write_shard(val / "val_000000.bin", np.arange(2000) % 500)
    hs = tmp_path / "hs.jsonl"
    hs.write_text(json.dumps({"ctx": "A cat", "endings": ["sat.", "ran.", "is", "ok"], "label": 0}) + "\n")
    args = ["eval", str(checkpoint), "--val-dir", str(val), "--max-tokens", "1000", "--hellaswag", str(hs)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val_tokens"] == (1000 // 64) * 64
    assert out["val_loss"] > 0 and out["hellaswag_n"] == 1
    assert out["val_bpb"] > 0 and out["val_bytes"] > 0  # bits per byte next to the loss
    assert out["val_shards"] == [str(val / "val_000000.bin")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == out


def test_eval_errors_are_messages(checkpoint, tmp_path, capsys):
    assert main(["eval", str(checkpoint)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), "--hellaswag", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def _mixed_shard_dir(tmp_path):
    """A tokenize output directory: a small val shard beside a larger train shard."""
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "val_000000.bin", np.arange(300) % 500)
    write_shard(shards / "train_000000.bin", (np.arange(3000) * 7) % 500)
    return shards


def test_eval_val_dir_scores_val_shards_only(checkpoint, tmp_path, capsys):
    shards = _mixed_shard_dir(tmp_path)
    assert main(["eval", str(checkpoint), "--val-dir", str(shards)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val_tokens"] == (299 // 64) * 64  # all of the val shard, none of the train one
    assert out["val_shards"] == [str(shards / "val_000000.bin")]
    assert not any(k.startswith("train") for k in out)

    assert main(["eval", str(checkpoint), "--val-dir", str(shards), "--include-train"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert {k: both[k] for k in out} == out  # the val numbers do not change
    assert both["train_tokens"] == (2999 // 64) * 64 and both["train_bpb"] > 0
    assert both["train_shards"] == [str(shards / "train_000000.bin")]


def test_eval_without_val_shards_says_so(checkpoint, tmp_path, capsys):
    only_train = tmp_path / "t"
    only_train.mkdir()
    write_shard(only_train / "train_000000.bin", np.arange(300) % 500)
    assert main(["eval", str(checkpoint), "--val-dir", str(only_train)]) == 2
    err = capsys.readouterr().err
    assert "no val_*.bin shards" in err and "train_000000.bin" in err


def _hgpt(*args, **kw):
    import subprocess
    import sys
    from pathlib import Path

    hgpt = Path(sys.executable).parent / "hgpt"
    return subprocess.run([str(hgpt), *args], capture_output=True, text=True, timeout=300, **kw)


def test_hgpt_eval_reports_progress_on_stderr(checkpoint, tmp_path):
    shards = _mixed_shard_dir(tmp_path)
    proc = _hgpt("eval", str(checkpoint), "--val-dir", str(shards))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["val_tokens"] == 256
    # Not a terminal: plain lines, no bar (no carriage returns); the last one is the total.
    assert "\r" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("eval val: 256/256 tok (100%) | ")


def test_hgpt_sample_help_shows_every_default():
    proc = _hgpt("sample", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for flag, default in [("--max-new-tokens", "64"), ("--temperature", "1.0"),
                          ("--top-k", "None"), ("--top-p", "None"), ("--num-samples", "1"),
                          ("--seed", "None"), ("--device", "cpu")]:
        after = text.split(f"{flag} ")[-1]
        assert f"(default: {default})" in after.split(" --")[0], flag


def test_hgpt_sample_without_seed_draws_and_prints_one(checkpoint):
    run_dir = str(checkpoint.parent.parent)
    common = ["sample", run_dir, "--prompt", "Hello", "--max-new-tokens", "12", "--no-stop"]
    first = _hgpt(*common)
    assert first.returncode == 0, first.stderr
    header, text = first.stdout.split("\n", 1)
    seed, rest = header.removeprefix("--- seed ").split(" ", 1)
    seed = int(seed)  # a real seed, not None
    assert rest == "(12 tokens)"  # --no-stop: all the tokens asked for
    again = _hgpt(*common, "--seed", str(seed))
    assert again.stdout == first.stdout  # the printed seed makes the sample again
    assert "sample: 1/1 sample (100%)" in first.stderr


def test_sample_says_when_it_ended_at_endoftext(checkpoint, capsys, monkeypatch):
    import evaluation.generate as generate_module
    from model.tokenizer import encode_ordinary

    word = encode_ordinary(" Hello")
    monkeypatch.setattr(generate_module, "generate", lambda *a, **kw: [word])  # then EOT
    assert main(["sample", str(checkpoint), "--seed", "5", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == (
        "--- seed 5 (1 token, ended at <|endoftext|> (--no-stop goes on))\n Hello\n")
