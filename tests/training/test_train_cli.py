import dataclasses
import json

import pytest

from hgpt.cli import build_parser, main
from tests.training.conftest import SMALL_MODEL
from tests.training.train_field_values import FIELD_VALUES
from training.callbacks import read_metrics
from training.cli import config_from_args
from training.config import TrainConfig, field_specs


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


def _flag(name: str, value) -> list[str]:
    """The command-line words that set one field (booleans as --x / --no-x, sequences as words,
    dicts as JSON)."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    if isinstance(value, dict):
        return [flag, json.dumps(value)]
    return [flag, str(value)]


def test_every_field_is_a_flag_that_round_trips():
    assert set(FIELD_VALUES) == {f.name for f in dataclasses.fields(TrainConfig)}
    for name, value in FIELD_VALUES.items():
        base = [word for required in ("data", "out") if required != name
                for word in _flag(required, FIELD_VALUES[required])]
        for parser in (build_parser(), _module_parser()):
            argv = ["train"] if parser.prog == "hgpt" else []
            cfg = config_from_args(parser.parse_args([*argv, *base, *_flag(name, value)]))
            assert getattr(cfg, name) == value, name
            # Every other field keeps the preset's value.
            tiny = TrainConfig.preset("tiny", data=cfg.data, out=cfg.out).to_dict()
            assert {k: v for k, v in cfg.to_dict().items() if k != name} == \
                {k: v for k, v in tiny.items() if k != name}, name
    # All of them at once, as one command line.
    argv = [word for name, value in FIELD_VALUES.items() for word in _flag(name, value)]
    cfg = config_from_args(build_parser().parse_args(["train", *argv]))
    assert {name: getattr(cfg, name) for name in FIELD_VALUES} == FIELD_VALUES


def _module_parser():
    import argparse

    from training.cli import add_arguments

    parser = argparse.ArgumentParser(prog="python -m training")
    add_arguments(parser)
    return parser


def test_flag_forms_and_help_come_from_the_field(capsys):
    parse = build_parser().parse_args
    base = ["train", "--data", "d", "--out", "o"]
    cfg = config_from_args(parse([*base, "--no-fused-loss", "--betas", "0.9", "0.99",
                                  "--model-overrides", '{"n_layer": 2}', "--data-order", "llmc"]))
    assert (cfg.fused_loss, cfg.betas, cfg.model_overrides, cfg.data_order) == \
        (False, (0.9, 0.99), {"n_layer": 2}, "llmc")
    assert config_from_args(parse([*base, "--fused-loss"])).fused_loss is True
    assert config_from_args(parse(base)).resume is False
    with pytest.raises(SystemExit):
        parse([*base, "--model-overrides", "[2]"])
    assert "expected a JSON object" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse([*base, "--betas", "0.9"])  # two numbers
    capsys.readouterr()

    with pytest.raises(SystemExit):
        parse(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    unwrapped = "".join(text.split())  # argparse re-wraps, also after a hyphen
    for spec in field_specs():
        assert "".join(spec.help.split()) in unwrapped, spec.name
    assert "--data-order {shuffled,llmc}" in text and "--precision {fp32,bf16,fp16,auto}" in text
    assert "--fused-loss, --no-fused-loss" in text and "--betas X X" in text
    assert "[preset's value: tiny 200, gpt2 19073]" in text  # max_steps, from TRAIN_PRESETS
    assert "Exit codes:" in text and "128+N cancelled by signal N" in text


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        steps: int = dataclasses.field(default=1, metadata={"help": "steps to run."})
        lr: float = 0.1

    with pytest.raises(TypeError, match="Undocumented.lr has no help"):
        field_specs(Undocumented)
    assert all(spec.help.strip() for spec in field_specs())


def test_a_bad_choice_is_one_clear_line(tmp_path, capsys):
    assert main(_argv(tmp_path, tmp_path / "run", "--data-order", "random")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_order must be one of shuffled, llmc" in err[0], err
