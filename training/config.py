"""Typed, validated training configuration and its presets.

    from training.config import TrainConfig
    cfg = TrainConfig.preset("tiny", data=["data/shards"], out="runs/tiny", max_steps=50)

The model's shape lives in model.GPTConfig (named by `model` plus optional `model_overrides`);
everything about *how* it is trained lives here. A config round-trips through JSON
(`to_dict`/`from_dict`), which is how a checkpoint remembers what it was trained with.

TrainConfig is the one description of a training run's settings: `hgpt train`'s flags and the
Dagster Launchpad's training config are both generated from `field_specs()`, so each field's
`help` below is its flag's help and its Launchpad description, and a new field appears in both.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from model.config import PRESETS as MODEL_PRESETS
from model.config import ConfigSerialisation, GPTConfig

Precision = Literal["fp32", "bf16", "fp16", "auto"]
PRECISIONS = get_args(Precision)
DataOrder = Literal["shuffled", "llmc"]
DATA_ORDERS = get_args(DataOrder)
Device = Literal["auto", "cpu", "cuda"]
DEVICES = get_args(Device)


def _field(default: Any = MISSING, *, help: str, factory: Any = MISSING,
           choices: tuple[str, ...] | None = None):
    """A dataclass field carrying its own help text (and, for a plain str, its allowed values)."""
    metadata = {"help": help, **({"choices": choices} if choices else {})}
    return field(default=default, default_factory=factory, metadata=metadata)


@dataclass
class TrainConfig(ConfigSerialisation):
    """Everything a training run needs besides the data on disk (each field's help is its
    metadata: `hgpt train --help` prints it)."""

    model: str = _field("tiny", choices=tuple(MODEL_PRESETS),
                        help="name of a model.GPTConfig preset (tiny, gpt2, ...).")
    model_overrides: dict = _field(factory=dict, help=(
        'GPTConfig fields replacing the preset\'s, as a JSON object (e.g. {"n_layer": 2}).'))
    data: list[str] = _field(factory=list, help=(
        "shard directories (or explicit .bin files); train_*.bin are trained on, val_*.bin give "
        "the held-out loss."))
    out: str = _field("runs/default", help=(
        "the run directory (metrics.jsonl, checkpoints/, result.json)."))
    batch_tokens: int = _field(4096, help=(
        "tokens per optimizer step across all ranks (GPT-2 reproductions: 524,288). Must be a "
        "multiple of micro_batch * seq_len * world_size; the quotient is the number of "
        "gradient-accumulation micro-steps."))
    micro_batch: int = _field(8, help="sequences per forward/backward on one rank.")
    seq_len: int | None = _field(None, help=(
        "tokens per sequence (<= the model's block_size; None means block_size)."))
    max_lr: float = _field(6e-4, help="peak learning rate of the warmup + cosine schedule.")
    min_lr: float = _field(6e-5, help="final learning rate of the warmup + cosine schedule.")
    warmup_steps: int = _field(10, help="linear warmup length in optimizer steps.")
    max_steps: int = _field(100, help="optimizer steps to run; the cosine reaches min_lr here.")
    weight_decay: float = _field(0.1, help=(
        "decoupled AdamW weight decay, applied to matrices and embeddings only."))
    betas: tuple[float, float] = _field((0.9, 0.95), help="AdamW's two moment decay rates.")
    eps: float = _field(1e-8, help="AdamW's denominator epsilon.")
    grad_clip: float = _field(1.0, help=(
        "global gradient-norm clip threshold (0 disables clipping, the norm is still reported)."))
    precision: Precision = _field("fp32", help=(
        "fp32, bf16 (autocast, fp32 master weights), fp16 (autocast + loss scaling; CUDA only) "
        "or auto (bf16 where the device supports it, else fp16 on CUDA, else fp32)."))
    compile: bool = _field(False, help="torch.compile the model and the optimizer update.")
    compile_optimizer: bool | None = _field(None, help=(
        "torch.compile just the AdamW update (None: as compile). On CPU in fp32 the compiled "
        "model is no faster than eager, but the compiled update (one fused pass over param, "
        "grad and moments) is ~4x faster than the foreach one; compiling costs ~10 s once, so "
        "it pays off on runs longer than a few hundred steps."))
    fused_loss: bool = _field(True, help=(
        "chunked LM head + cross-entropy that never materialises all logits (see "
        "training/fused_loss.py); same loss, less memory traffic."))
    seed: int = _field(1337, help="seeds model init, data order and every RNG.")
    data_order: DataOrder = _field("shuffled", help=(
        "how micro-batches read the shards (training/data.py): shuffled (each sequence a "
        "window drawn from a per-epoch permutation of every window of every shard) or llmc "
        "(llm.c's order: one contiguous span per micro-batch, shards front to back, right only "
        "for shards whose documents are already shuffled)."))
    eval_every: int = _field(0, help=(
        "steps between held-out evaluations (0: only at the end; needs val shards)."))
    eval_tokens: int = _field(65536, help="validation tokens per evaluation.")
    checkpoint_every: int = _field(0, help="steps between checkpoints (0: only at the end).")
    keep_last: int = _field(2, help=(
        "checkpoints kept on disk (older ones are deleted after a new one is written)."))
    resume: bool = _field(False, help=(
        "continue from the newest valid checkpoint under out/checkpoints, if any."))
    device: Device = _field("auto", help=(
        "auto (cuda:LOCAL_RANK if available, else cpu), cpu or cuda."))
    log_every: int = _field(1, help=(
        "steps between stdout lines of the logging callback (metrics.jsonl gets all)."))

    def __post_init__(self) -> None:
        self.data = [str(d) for d in self.data]
        self.out = str(self.out)
        self.betas = tuple(float(b) for b in self.betas)
        self.model_overrides = dict(self.model_overrides)
        self.validate()

    # ---- derived values -------------------------------------------------------------------

    def model_config(self) -> GPTConfig:
        return GPTConfig.preset(self.model, **self.model_overrides)

    @property
    def sequence_length(self) -> int:
        return self.seq_len or self.model_config().block_size

    def grad_accum_steps(self, world_size: int = 1) -> int:
        per_micro = self.micro_batch * self.sequence_length * world_size
        if self.batch_tokens % per_micro:
            raise ValueError(
                f"batch_tokens ({self.batch_tokens}) must be a multiple of micro_batch * seq_len "
                f"* world_size = {self.micro_batch} * {self.sequence_length} * {world_size} "
                f"= {per_micro}"
            )
        return self.batch_tokens // per_micro

    # ---- validation ---------------------------------------------------------------------

    def validate(self) -> None:
        if self.model not in MODEL_PRESETS:
            raise ValueError(
                f"TrainConfig.model: unknown preset {self.model!r}; choose one of "
                f"{', '.join(MODEL_PRESETS)}"
            )
        model_cfg = self.model_config()  # raises on bad overrides
        positive = ("batch_tokens", "micro_batch", "max_steps", "eval_tokens", "keep_last",
                    "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        if self.seq_len is not None and not 0 < self.seq_len <= model_cfg.block_size:
            raise ValueError(
                f"TrainConfig.seq_len ({self.seq_len}) must be in [1, block_size="
                f"{model_cfg.block_size}]"
            )
        for name in ("max_lr", "min_lr", "eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.min_lr > self.max_lr:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr}) exceeds max_lr ({self.max_lr})")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig.weight_decay and grad_clip must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, got "
                f"{self.precision!r}"
            )
        if self.data_order not in DATA_ORDERS:
            raise ValueError(
                f"TrainConfig.data_order must be one of {', '.join(DATA_ORDERS)}, got "
                f"{self.data_order!r}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")

    # ---- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        try:
            base = TRAIN_PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown training preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}"
            ) from None
        return cls.from_dict({**base, **overrides})


TRAIN_PRESETS: dict[str, dict] = {
    # A few minutes on a 2-core CPU: 4-layer, 256-wide model, 8 x 256-token sequences per step
    # (2,048 tokens), 200 steps (~410k tokens).
    "tiny": dict(
        model="tiny", batch_tokens=2048, micro_batch=8, seq_len=256, max_lr=1e-3, min_lr=1e-4,
        warmup_steps=20, max_steps=200, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8,
        grad_clip=1.0, precision="fp32", compile=False, eval_every=50, eval_tokens=32768,
        checkpoint_every=50, keep_last=2,
    ),
    # GPT-2 124M as in build-nanogpt / llm.c: 0.5M tokens per step, 19,073 steps = 10B tokens.
    "gpt2": dict(
        model="gpt2", model_overrides={"padded_vocab_size": 50304}, batch_tokens=524_288,
        micro_batch=64, seq_len=1024, max_lr=6e-4, min_lr=6e-5, warmup_steps=715,
        max_steps=19_073, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, grad_clip=1.0,
        precision="bf16", compile=True, eval_every=250, eval_tokens=10_485_760,
        checkpoint_every=1000, keep_last=3,
    ),
}


# ---- the field table that the CLI and the Dagster config are generated from -----------------

@dataclass(frozen=True)
class FieldSpec:
    """One TrainConfig field as a front end (command line, Launchpad) presents it.

    kind is int, float, str, bool, dict, list (of `item`) or tuple (`length` x `item`); a str
    with `choices` takes one of them; `optional` fields also take None.
    """

    name: str
    help: str
    kind: type
    optional: bool = False
    choices: tuple[str, ...] | None = None
    item: type | None = None
    length: int | None = None

    def describe(self, values: dict[str, Any]) -> str:
        """The help text with this field's value in each preset (`values`: preset -> value)."""
        shown = {name: _show(value) for name, value in values.items()}
        if len(set(shown.values())) == 1:
            return f"{self.help} [preset's value: {next(iter(shown.values()))}]"
        return f"{self.help} [preset's value: " + ", ".join(
            f"{name} {text}" for name, text in shown.items()) + "]"


def _show(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def field_specs(config_class: type | None = None) -> tuple[FieldSpec, ...]:
    """Every field of TrainConfig (or another dataclass built with `_field`), in declaration
    order, from its type hint and `help` metadata.

    Raises TypeError for a field without help or with a type no front end can express, so a new
    field cannot reach the CLI or the Launchpad undocumented.
    """
    config_class = config_class or TrainConfig
    hints = get_type_hints(config_class)
    specs = []
    for f in fields(config_class):
        help_text = f.metadata.get("help")
        if not help_text or not help_text.strip():
            raise TypeError(f"{config_class.__name__}.{f.name} has no help metadata")
        hint, optional = hints[f.name], False
        if get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint):
            (hint,) = [a for a in get_args(hint) if a is not type(None)]
            optional = True
        origin, args = get_origin(hint), get_args(hint)
        spec = dict(name=f.name, help=help_text, optional=optional,
                    choices=f.metadata.get("choices"))
        if origin is Literal:
            spec.update(kind=str, choices=tuple(args))
        elif hint in (int, float, str, bool, dict):
            spec.update(kind=hint)
        elif origin is list and len(args) == 1:
            spec.update(kind=list, item=args[0])
        elif origin is tuple and args and Ellipsis not in args and len(set(args)) == 1:
            spec.update(kind=tuple, item=args[0], length=len(args))
        else:
            raise TypeError(f"{config_class.__name__}.{f.name}: no front end for type {hint!r}")
        specs.append(FieldSpec(**spec))
    return tuple(specs)


def preset_values(**overrides_by_preset: dict) -> dict[str, dict[str, Any]]:
    """Field -> {preset: value} over every training preset (each optionally with overrides)."""
    configs = {name: TrainConfig.preset(name, **overrides_by_preset.get(name, {}))
               for name in TRAIN_PRESETS}
    return {f.name: {name: getattr(cfg, f.name) for name, cfg in configs.items()}
            for f in fields(TrainConfig)}
