"""The Launchpad's training config is TrainConfig's: one field per TrainConfig field (the three the
asset sets itself aside), described by the field's help, settable from a run config into the
TrainConfig the asset builds, and all shown by the retrain jobs' scaffold."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from dagster import build_op_context, validate_run_config
from dagster._config.config_type import ConfigTypeKind
from dagster._core.execution.plan.compute_generator import construct_config_from_context
from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

from pipelines.orchestration.configs import (
    ASSET_OWNED,
    ORCHESTRATION_DEFAULTS,
    TrainingConfig,
    _NONE_MEANS,
    preset_run_config,
    resolved_train_config,
)
from tests.training.train_field_values import FIELD_VALUES
from training.config import TRAIN_PRESETS, TrainConfig, field_specs

TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
LAUNCHPAD_TRAIN_FIELDS = [name for name in TRAIN_FIELDS if name not in ASSET_OWNED]


@pytest.fixture(scope="module")
def defs():
    from pipelines.definitions import defs

    return defs


def _op_config_snap(job):
    """The config type of trained_checkpoint's config in the job's schema (what the UI reads)."""
    snap = job.get_job_snapshot().config_schema_snapshot
    root = snap.get_config_snap(job.get_job_snapshot().mode_def_snaps[0].root_config_key)
    ops = snap.get_config_snap(root.get_field("ops").type_key)
    node = snap.get_config_snap(ops.get_field("trained_checkpoint").type_key)
    return snap, snap.get_config_snap(node.get_field("config").type_key)


def _asset_train_config(job, config: dict) -> TrainConfig:
    """The TrainConfig the asset builds from this trained_checkpoint config: Dagster validates it
    against the job's schema and constructs the Config object the way it does for the asset."""
    processed = validate_run_config(job, {"ops": {"trained_checkpoint": {"config": config}}})
    context = build_op_context(op_config=processed["ops"]["trained_checkpoint"]["config"])
    config_obj = construct_config_from_context(TrainingConfig, context)
    return config_obj.train_config(data=["shards/s1"], out="runs/r1")


def _effective(cfg: TrainConfig) -> dict:
    """A TrainConfig's settings with None resolved to what it stands for (compile_optimizer:
    as compile), so two configs that train the same compare equal."""
    data = cfg.to_dict()
    if data["compile_optimizer"] is None:
        data["compile_optimizer"] = data["compile"]
    return data


def test_the_launchpad_fields_are_train_configs_fields_with_its_help(defs):
    assert set(ASSET_OWNED) == {"data", "out", "resume"} and set(ASSET_OWNED) <= set(TRAIN_FIELDS)
    assert list(TrainingConfig.model_fields) == ["preset", "snapshots", *LAUNCHPAD_TRAIN_FIELDS]
    snap, op_config = _op_config_snap(defs.resolve_job_def("retrain"))
    for spec in field_specs():
        if spec.name in ASSET_OWNED:
            continue
        description = TrainingConfig.model_fields[spec.name].description
        assert description.startswith(spec.help) and "[preset's value:" in description, spec.name
        field = op_config.get_field(spec.name)
        assert field.description == description and not field.is_required, spec.name
        inner = snap.get_config_snap(field.type_key)
        assert inner.kind == ConfigTypeKind.NONEABLE, spec.name  # null: the preset's value
        if spec.choices:  # a drop-down of exactly the Literal's values
            enum = snap.get_config_snap(inner.type_param_keys[0])
            assert enum.kind == ConfigTypeKind.ENUM, spec.name
            assert [v.value for v in enum.enum_values] == list(spec.choices), spec.name
    preset = snap.get_config_snap(op_config.get_field("preset").type_key)
    if preset.kind == ConfigTypeKind.NONEABLE:  # Dagster's wrapping of a field with a default
        preset = snap.get_config_snap(preset.type_param_keys[0])
    assert [v.value for v in preset.enum_values] == list(TRAIN_PRESETS)
    # The descriptions show what Dagster runs use: gpt2 logs every 10 steps there.
    assert "[preset's value: tiny 1, gpt2 10]" in TrainingConfig.model_fields["log_every"].description


def test_every_field_set_in_a_run_config_reaches_the_train_config(defs):
    job = defs.resolve_job_def("retrain")
    tiny = _effective(_asset_train_config(job, {"preset": "tiny"}))
    assert tiny == _effective(TrainConfig.preset("tiny", data=["shards/s1"], out="runs/r1"))
    for name in LAUNCHPAD_TRAIN_FIELDS:
        value = FIELD_VALUES[name]
        for config in ({"preset": "tiny", name: list(value) if isinstance(value, tuple) else value},
                       preset_run_config("tiny", **{name: value})["ops"]["trained_checkpoint"]["config"]):
            cfg = _asset_train_config(job, config)
            assert getattr(cfg, name) == value, name
            # The rest as if that one field were set on the preset in Python.
            assert _effective(cfg) == _effective(TrainConfig.preset(
                "tiny", data=["shards/s1"], out="runs/r1", **{name: value})), name
    # All at once.
    config = {"preset": "tiny", **{name: FIELD_VALUES[name] for name in LAUNCHPAD_TRAIN_FIELDS}}
    config["betas"] = list(config["betas"])
    cfg = _asset_train_config(job, config)
    assert {name: getattr(cfg, name) for name in LAUNCHPAD_TRAIN_FIELDS} == \
        {name: FIELD_VALUES[name] for name in LAUNCHPAD_TRAIN_FIELDS}
    assert (cfg.data, cfg.out, cfg.resume) == (["shards/s1"], "runs/r1", False)  # the asset's


def test_a_bad_value_is_refused_by_the_launchpad_or_by_train_config(defs):
    from dagster import DagsterInvalidConfigError

    job = defs.resolve_job_def("retrain")
    for bad in ({"precision": "fp64"}, {"data_order": "random"}, {"preset": "gpt3"},
                {"max_steps": "many"}, {"data": ["elsewhere"]}):
        with pytest.raises(DagsterInvalidConfigError):
            validate_run_config(job, {"ops": {"trained_checkpoint": {"config": {"preset": "tiny", **bad}}}})
    with pytest.raises(ValueError, match="min_lr"):
        _asset_train_config(job, {"preset": "tiny", "min_lr": 1.0})
    with pytest.raises(ValueError, match="not fields of the training config: data"):
        preset_run_config("tiny", data=["elsewhere"])


@pytest.mark.parametrize("job_name, preset", [("retrain", "tiny"), ("retrain_gpt2", "gpt2")])
def test_the_scaffold_shows_every_field_with_the_presets_value(defs, job_name, preset):
    job = defs.resolve_job_def(job_name)
    snap = job.get_job_snapshot()
    schema = snap.config_schema_snapshot
    # What the webserver's RunConfigSchema.rootDefaultYaml returns: the Launchpad opens with it
    # and "Scaffold all default config" merges it into the editor.
    scaffold = yaml.safe_load(default_values_yaml_from_type_snap(
        schema, schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)))
    shown = scaffold["ops"]["trained_checkpoint"]["config"]
    assert set(shown) == {"preset", *LAUNCHPAD_TRAIN_FIELDS}  # snapshots: null, all of them
    # A null is never scaffolded, so every field that may be None has the value it stands for.
    assert {spec.name for spec in field_specs() if spec.optional} <= set(_NONE_MEANS)
    assert shown["preset"] == preset
    # Launching the scaffold as it stands trains with the preset (plus the Dagster defaults).
    cfg = _asset_train_config(job, shown)
    expected = TrainConfig.preset(preset, data=["shards/s1"], out="runs/r1",
                                  **ORCHESTRATION_DEFAULTS.get(preset, {}))
    assert _effective(cfg) == _effective(expected)
    assert _effective(cfg) == _effective(resolved_train_config(preset).replace(
        data=["shards/s1"], out="runs/r1"))
