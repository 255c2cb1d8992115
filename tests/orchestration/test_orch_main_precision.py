"""The main job's precision is chosen by the machine (bf16 where the CPU multiplies bf16
natively, else TrainConfig's "auto"): both branches are forced here, whatever CPU runs them, and
each gives a run config that TrainConfig accepts."""

from __future__ import annotations

import pytest

from pipelines.orchestration.configs import preset_run_config
from pipelines.orchestration.main_job import MAIN_TINY_OVERRIDES, main_precision
from training.config import TrainConfig


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "auto")])
def test_each_branch_gives_a_valid_tiny_run(native, expected):
    precision = main_precision(cpu_has_native_bf16=native)
    assert precision == expected
    run_config = preset_run_config("tiny", **MAIN_TINY_OVERRIDES, precision=precision)
    fields = run_config["ops"]["trained_checkpoint"]["config"]
    assert fields["precision"] == expected and fields["max_steps"] == MAIN_TINY_OVERRIDES["max_steps"]
    cfg = TrainConfig.preset("tiny", data=["shards"], out="run", **MAIN_TINY_OVERRIDES, precision=precision)
    assert cfg.precision == expected


def test_unforced_choice_follows_the_detector(monkeypatch):
    import training.fused_loss as fused_loss

    for native in (True, False):
        monkeypatch.setattr(fused_loss, "native_bf16_matmul", lambda device_type="cpu", n=native: n)
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        assert main_precision() == ("bf16" if native else "auto")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert main_precision() == "auto"  # a GPU: "auto" picks its own mixed precision
