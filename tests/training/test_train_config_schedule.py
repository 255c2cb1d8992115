import math

import pytest

from training.config import TrainConfig
from training.schedule import get_lr


def test_gpt2_preset_is_the_124m_reproduction():
    cfg = TrainConfig.preset("gpt2", data=["d"], out="o")
    assert (cfg.batch_tokens, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps) == (
        524_288, 6e-4, 6e-5, 715, 19_073)
    assert (cfg.weight_decay, cfg.betas, cfg.grad_clip, cfg.precision, cfg.compile) == (
        0.1, (0.9, 0.95), 1.0, "bf16", True)
    assert cfg.model_config().n_layer == 12 and cfg.sequence_length == 1024
    assert cfg.grad_accum_steps(world_size=8) == 1 and cfg.grad_accum_steps(1) == 8


def test_config_round_trips_and_overrides():
    cfg = TrainConfig.preset("tiny", data=["a", "b"], out="run", max_steps=7)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.max_steps == 7 and again.data == ["a", "b"]


@pytest.mark.parametrize("bad, match", [
    ({"max_steps": 0}, "max_steps"),
    ({"precision": "fp8"}, "precision"),
    ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr"),
    ({"seq_len": 10_000}, "seq_len"),
    ({"model": "gpt5"}, "unknown preset"),
    ({"model_overrides": {"n_head": 3}}, "divisible"),
    ({"betas": (0.9, 1.0)}, "betas"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.preset("tiny", **bad)


def test_unknown_fields_and_indivisible_batch_are_named():
    with pytest.raises(ValueError, match="lr_max"):
        TrainConfig.from_dict({"lr_max": 1})
    cfg = TrainConfig.preset("tiny", batch_tokens=3000)
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        cfg.grad_accum_steps(1)


def test_lr_schedule_matches_its_definition():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert [get_lr(s, **kw) for s in range(3)] == [0.1, 0.2, pytest.approx(0.3)]
    assert get_lr(9, **kw) == 1.0  # warmup ends exactly at max_lr
    assert get_lr(10, **kw) == 1.0  # cosine starts at max_lr
    assert get_lr(60, **kw) == pytest.approx(0.55)  # halfway: (max + min) / 2
    for s in range(10, 111):
        expected = 0.1 + 0.5 * (1 + math.cos(math.pi * (s - 10) / 100)) * 0.9
        assert get_lr(s, **kw) == pytest.approx(expected, abs=1e-12)
    assert get_lr(110, **kw) == pytest.approx(0.1) and get_lr(500, **kw) == 0.1
    decay = [get_lr(s, **kw) for s in range(10, 200)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # never increases after warmup
