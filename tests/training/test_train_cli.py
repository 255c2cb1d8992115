import json

from hgpt.cli import build_parser, main
from tests.training.conftest import SMALL_MODEL
from training.callbacks import read_metrics
from training.cli import config_from_args


def _argv(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--micro-batch", "4",
            "--seq-len", "32", "--batch-tokens", "128", "--eval-tokens", "512",
            "--device", "cpu", "--set", "model_overrides=" + json.dumps(SMALL_MODEL), *extra]


def test_flags_override_the_preset(tmp_path):
    args = build_parser().parse_args([
        "train", "--preset", "gpt2", "--data", "a", "b", "--out", "run", "--resume",
        "--max-steps", "5", "--max-lr", "1e-3", "--no-compile", "--precision", "fp32",
        "--set", "betas=[0.8, 0.9]", "--set", "model_overrides={\"n_layer\": 2}"])
    cfg = config_from_args(args)
    assert cfg.data == ["a", "b"] and cfg.out == "run" and cfg.resume
    assert (cfg.max_steps, cfg.max_lr, cfg.compile, cfg.precision) == (5, 1e-3, False, "fp32")
    assert cfg.betas == (0.8, 0.9) and cfg.model_config().n_layer == 2
    assert cfg.batch_tokens == 524_288 and cfg.warmup_steps == 715  # untouched preset values


def test_hgpt_train_runs_and_resumes(shard_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(shard_dir, out, "--max-steps", "3", "--checkpoint-every", "3")) == 0
    assert main(_argv(shard_dir, out, "--max-steps", "5", "--resume")) == 0
    printed = capsys.readouterr().out
    assert "step 5/5 | loss" in printed and "checkpoint" in printed
    assert sorted(read_metrics(out)) == [1, 2, 3, 4, 5]
    assert read_metrics(out, "start")[3]["resumed_from"].endswith("step_00000003")
    assert json.loads((out / "result.json").read_text())["step"] == 5


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(_argv(tmp_path / "missing", tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "hgpt train: error:" in err and "missing: no such shard directory" in err
    assert main(_argv(tmp_path, tmp_path / "run", "--precision", "fp64")) == 2
    assert "precision must be one of" in capsys.readouterr().err
