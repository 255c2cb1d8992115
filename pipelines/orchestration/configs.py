"""Dagster `Config` classes: what a user can edit in the Launchpad, with the `tiny` and `gpt2` presets.

The training config names a preset of training.TrainConfig and overrides single fields; every
field left null keeps the preset's value. Run configs for the two presets are ready-made here and
attached to the `retrain` (tiny) and `retrain_gpt2` jobs, so the Launchpad opens pre-filled.
"""


from enum import Enum

from dagster import Config
from pydantic import Field

PRESETS = ("tiny", "gpt2")


# Enums (not Literal): Dagster's config system shows them as drop-downs in the Launchpad.
class Preset(str, Enum):
    tiny = "tiny"
    gpt2 = "gpt2"


class PrecisionChoice(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class FilterAssetConfig(Config):
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


class TokenizeAssetConfig(Config):
    """The tokenize stage of one snapshot."""

    val_fraction: float | None = Field(
        default=None, description="Fraction of documents held out as val shards (null: pipeline default)."
    )
    shard_tokens: int | None = Field(default=None, description="Tokens per shard (null: pipeline default).")
    force: bool = Field(default=False, description="Recompute even if an identical output exists.")


class TrainingConfig(Config):
    """One training run: a preset of training.TrainConfig plus any overrides."""

    preset: Preset = Field(
        default=Preset.tiny, description="tiny: 2-core CPU, minutes. gpt2: GPT-2 124M on GPUs."
    )
    snapshots: list[str] | None = Field(
        default=None,
        description="Snapshot keys to train on (null: every snapshot whose token_shards are materialized).",
    )
    max_steps: int | None = None
    batch_tokens: int | None = None
    micro_batch: int | None = None
    seq_len: int | None = None
    max_lr: float | None = None
    min_lr: float | None = None
    warmup_steps: int | None = None
    precision: PrecisionChoice | None = None
    compile: bool | None = None
    compile_optimizer: bool | None = None
    device: DeviceChoice | None = None
    seed: int | None = None
    eval_every: int | None = None
    eval_tokens: int | None = None
    checkpoint_every: int | None = None
    log_every: int | None = None
    n_layer: int | None = Field(default=None, description="Model override (smaller tiny model).")
    n_embd: int | None = Field(default=None, description="Model override.")
    n_head: int | None = Field(default=None, description="Model override.")

    def overrides(self) -> dict:
        names = ("max_steps", "batch_tokens", "micro_batch", "seq_len", "max_lr", "min_lr",
                 "warmup_steps", "precision", "compile", "compile_optimizer", "device", "seed", "eval_every",
                 "eval_tokens", "checkpoint_every", "log_every")
        out = {n: _plain(getattr(self, n)) for n in names if getattr(self, n) is not None}
        model = {n: getattr(self, n) for n in ("n_layer", "n_embd", "n_head") if getattr(self, n) is not None}
        if model:
            out["model_overrides"] = model
        return out

    def train_config(self, data: list[str], out: str):
        """The training.TrainConfig of this run (validated there)."""
        from training.config import TRAIN_PRESETS, TrainConfig

        overrides = self.overrides()
        if "model_overrides" in overrides:
            base = dict(TRAIN_PRESETS[_plain(self.preset)].get("model_overrides", {}))
            overrides["model_overrides"] = {**base, **overrides["model_overrides"]}
        preset = _plain(self.preset)
        if preset == "gpt2":
            overrides.setdefault("log_every", 10)
        return TrainConfig.preset(preset, data=list(data), out=out, **overrides)


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


def preset_run_config(preset: str, **training_overrides) -> dict:
    """Run config for the retrain jobs (what the Launchpad shows pre-filled)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"ops": {"trained_checkpoint": {"config": {"preset": preset, **training_overrides}}}}
