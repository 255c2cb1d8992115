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
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == out


def test_eval_errors_are_messages(checkpoint, tmp_path, capsys):
    assert main(["eval", str(checkpoint)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), "--hellaswag", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
