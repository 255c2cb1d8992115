"""Dagster `Config` classes: what a user can edit in the Launchpad.

The training config is generated from training.TrainConfig's fields (their help texts are the
descriptions): it names one of TrainConfig's presets and has a field per TrainConfig field, where
null keeps the preset's value. The `retrain` (tiny) and `retrain_gpt2` jobs carry the run config
of `preset_run_config`, every field filled in with its preset's value, so the Launchpad opens (and
"Scaffold all default config" fills in) the whole training config, not just the preset.
"""


import dataclasses
from enum import Enum
from typing import Any

from dagster import Config
from pydantic import Field, create_model

from model.config import GPTConfig
from pipelines.executors import EXECUTORS
from pipelines.tokenize import TokenizeConfig
from training.config import TRAIN_PRESETS, TrainConfig, field_specs, preset_values


# An Enum (not Literal): the Launchpad shows it as a drop-down. The values are the executors'.
StageExecutor = Enum("StageExecutor", {name: name for name in EXECUTORS}, type=str)


class TaskStageConfig(Config):
    """Where a stage run as tasks (filter, dedup, tokenize, statistics) runs them; never changes
    its output."""

    executor: StageExecutor = Field(
        default="local", description="local: this step's processes; ray: the cluster of the `ray` "
        "resource (its address, or a local cluster on 127.0.0.1).")

    max_task_steps: int = Field(
        default=16, ge=1, description="With the stages fanned out over Dagster steps (fanout "
        "definitions): at most this many steps per task list of the stage, each running a run of "
        "consecutive tasks; the output does not depend on it.")

    def executor_name(self) -> str:
        return _plain(self.executor)


class FilterAssetConfig(TaskStageConfig):
    """The filter stage of one snapshot."""

    limit_docs: int | None = Field(
        default=None, description="Read at most this many documents of the snapshot (null: all)."
    )
    filter_overrides_json: str = Field(
        default="{}",
        description="JSON merged into the data pipeline's FilterConfig (e.g. "
        '{"gopher_quality": {"min_doc_words": 30}}); {} keeps FineWeb\'s settings.',
    )
    force: bool = Field(default=False, description="Recompute even if an identical output exists.")


class StageConfig(Config):
    """Dedup / tokenize / statistics stages."""

    force: bool = Field(default=False, description="Recompute even if an identical output exists.")


class StatsAssetConfig(StageConfig, TaskStageConfig):
    """The statistics stage of one snapshot."""


def _tokenize_setting(name: str):
    """A Launchpad field for TokenizeConfig's `name`: null keeps the stage's default, and the
    description is the dataclass's help text with that default."""
    spec = next(f for f in dataclasses.fields(TokenizeConfig) if f.name == name)
    return Field(default=None, description=f"{spec.metadata['help'][0].upper()}{spec.metadata['help'][1:]} "
                 f"(null: the stage's default, {spec.default!r}).")


class TokenizeAssetConfig(TaskStageConfig):
    """The tokenize stage of one snapshot."""

    val_fraction: float | None = _tokenize_setting("val_fraction")
    val_min_tokens: int | None = _tokenize_setting("val_min_tokens")
    val_max_share: float | None = _tokenize_setting("val_max_share")
    shard_tokens: int | None = Field(default=None, description="Tokens per shard (null: pipeline default).")
    force: bool = Field(default=False, description="Recompute even if an identical output exists.")

    def tokenize_overrides(self) -> dict:
        """The TokenizeConfig settings this run config sets (not null)."""
        return {name: getattr(self, name) for name in ("val_fraction", "val_min_tokens", "val_max_share",
                                                       "shard_tokens") if getattr(self, name) is not None}


class EvaluationConfig(Config):
    """Held-out loss (and HellaSwag when a file is given); the champion decision."""

    max_tokens: int = Field(default=65_536, description="Validation tokens to score.")
    batch_size: int = Field(default=8)
    hellaswag_path: str | None = Field(
        default=None, description="HellaSwag jsonl (validation split); null skips it (offline)."
    )
    hellaswag_limit: int | None = Field(default=200)
    device: str = Field(default="auto")


class SamplesConfig(Config):
    prompts: list[str] = Field(
        default=["The module", "In computer science,", "This function returns"],
        description="Prompts to continue.",
    )
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    seed: int = 1337


def _plain(value):
    return value.value if isinstance(value, Enum) else value


# ---- training: generated from training.TrainConfig's fields ---------------------------------

# TrainConfig fields the asset sets itself, so the Launchpad does not offer them.
ASSET_OWNED = {
    "data": "the token shards of the snapshots named in `snapshots`",
    "out": "a new run directory per Dagster run, under the workspace's runs/",
    "resume": "each Dagster run trains in its own new run directory: nothing to resume",
}

# What a run config that leaves a field null gets on top of the preset under Dagster. Every log
# line becomes an event in the run's log: one per step of gpt2's 19k steps would bury the rest.
ORCHESTRATION_DEFAULTS: dict[str, dict] = {"gpt2": {"log_every": 10}}

# A Launchpad scaffold leaves out every null, so a field whose preset value is None would not be
# shown: the pre-filled run config gives the value that None stands for instead.
_NONE_MEANS = {
    "compile_optimizer": lambda cfg: cfg.compile,
    "seq_len": lambda cfg: cfg.sequence_length,
}

# Enums (not Literal): Dagster's config system shows them as drop-downs in the Launchpad.
Preset = Enum("Preset", {name: name for name in TRAIN_PRESETS}, type=str)
TRAIN_FIELDS = tuple(spec for spec in field_specs() if spec.name not in ASSET_OWNED)


def _launchpad_type(spec):
    if spec.choices:
        camel = "".join(part.title() for part in spec.name.split("_"))
        return Enum(f"{camel}Choice", {c: c for c in spec.choices}, type=str)
    if spec.kind in (list, tuple):
        return list[spec.item]  # Dagster config has no tuples; TrainConfig checks the length
    if spec.kind is dict:
        return dict[str, Any]
    return spec.kind


def resolved_train_config(preset: str) -> TrainConfig:
    """What a run config naming only this preset trains with (data and out left empty)."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    return TrainConfig.preset(preset, **ORCHESTRATION_DEFAULTS.get(preset, {}))


class _TrainingConfigBase(Config):
    preset: Preset = Field(
        default="tiny",
        description="The training preset a null field takes its value from (tiny: 2-core CPU, "
        "minutes; gpt2: GPT-2 124M on GPUs). The retrain and retrain_gpt2 jobs pre-fill every "
        "field with their preset's values, so choosing another preset here changes only the "
        "fields you clear.",
    )
    snapshots: list[str] | None = Field(
        default=None,
        description="Snapshot keys to train on (null: every snapshot whose token_shards are materialized).",
    )

    def overrides(self) -> dict:
        """The fields set in this run config (not null), as TrainConfig values."""
        return {spec.name: _plain(getattr(self, spec.name)) for spec in TRAIN_FIELDS
                if getattr(self, spec.name) is not None}

    def train_config(self, data: list[str], out: str) -> TrainConfig:
        """The training.TrainConfig of this run (validated there)."""
        preset = _plain(self.preset)
        overrides = {**ORCHESTRATION_DEFAULTS.get(preset, {}), **self.overrides()}
        return TrainConfig.preset(preset, data=list(data), out=out, **overrides)


def _training_fields() -> dict:
    values = preset_values(**ORCHESTRATION_DEFAULTS)
    return {
        spec.name: (_launchpad_type(spec) | None, Field(
            default=None, description=spec.describe(values[spec.name]) + " Null: the preset's value."))
        for spec in TRAIN_FIELDS
    }


TrainingConfig = create_model(
    "TrainingConfig", __base__=_TrainingConfigBase, __module__=__name__,
    __doc__="One training run: a preset of training.TrainConfig and a field per TrainConfig field "
    "(null keeps the preset's value) but data, out and resume, which the asset sets; the field "
    "descriptions are TrainConfig's help texts.",
    **_training_fields(),
)


def preset_run_config(preset: str, **overrides) -> dict:
    """The retrain jobs' run config: every field of the training config, with the preset's value
    (what the Launchpad shows pre-filled) unless `overrides` names it. GPTConfig field names
    (n_layer=2) are merged into model_overrides."""
    base = resolved_train_config(preset)
    model_names = {f.name for f in dataclasses.fields(GPTConfig)}
    model = {k: overrides.pop(k) for k in list(overrides) if k in model_names}
    unknown = sorted(set(overrides) - {spec.name for spec in TRAIN_FIELDS})
    if unknown:
        raise ValueError(f"not fields of the training config: {', '.join(unknown)}")
    values = {**{spec.name: getattr(base, spec.name) for spec in TRAIN_FIELDS}, **overrides}
    if model:
        values["model_overrides"] = {**values["model_overrides"], **model}
    # None (given, or the preset's) becomes the value it stands for in this very config.
    cfg = TrainConfig.preset(preset, **{k: v for k, v in values.items() if v is not None})
    config = {"preset": preset}
    for spec in TRAIN_FIELDS:
        value = getattr(cfg, spec.name)
        if value is None:
            value = _NONE_MEANS[spec.name](cfg)
        config[spec.name] = list(value) if isinstance(value, tuple) else value
    return {"ops": {"trained_checkpoint": {"config": config}}}
