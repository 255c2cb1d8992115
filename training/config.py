"""Typed, validated training configuration and its presets.

    from training.config import TrainConfig
    cfg = TrainConfig.preset("tiny", data=["data/shards"], out="runs/tiny", max_steps=50)

The model's shape lives in model.GPTConfig (named by `model` plus optional `model_overrides`);
everything about *how* it is trained lives here (GUIDE lesson 4). A config round-trips through
JSON (`to_dict`/`from_dict`), which is how a checkpoint remembers what it was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from model.config import PRESETS as MODEL_PRESETS
from model.config import ConfigSerialisation, GPTConfig

Precision = Literal["fp32", "bf16", "fp16", "auto"]
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DataOrder = Literal["shuffled", "llmc"]
DATA_ORDERS = ("shuffled", "llmc")


@dataclass
class TrainConfig(ConfigSerialisation):
    """Everything a training run needs besides the data on disk.

    Attributes:
        model: name of a model.GPTConfig preset ("tiny", "gpt2", ...).
        model_overrides: GPTConfig fields replacing the preset's (e.g. {"n_layer": 2}).
        data: shard directories (or explicit .bin files); `train_*.bin` are trained on,
            `val_*.bin` give the held-out loss.
        out: the run directory (metrics.jsonl, checkpoints/, result.json).
        batch_tokens: tokens per optimizer step across all ranks (GPT-2 reproductions: 524,288).
            Must be a multiple of micro_batch * seq_len * world_size; the quotient is the number
            of gradient-accumulation micro-steps.
        micro_batch: sequences per forward/backward on one rank.
        seq_len: tokens per sequence (<= the model's block_size; None means block_size).
        max_lr, min_lr: peak and final learning rate of the warmup + cosine schedule.
        warmup_steps: linear warmup length in optimizer steps.
        max_steps: optimizer steps to run; the cosine reaches min_lr here.
        weight_decay: decoupled AdamW weight decay, applied to matrices and embeddings only.
        betas, eps: AdamW moment decay rates and denominator epsilon.
        grad_clip: global gradient-norm clip threshold (0 disables clipping, the norm is still
            reported).
        precision: "fp32", "bf16" (autocast, fp32 master weights), "fp16" (autocast + loss
            scaling; CUDA only) or "auto" (bf16 where the device supports it, else fp16 on
            CUDA, else fp32).
        compile: torch.compile the model and the optimizer update.
        compile_optimizer: torch.compile just the AdamW update (None: as `compile`). On CPU in
            fp32 the compiled model is no faster than eager, but the compiled update (one fused
            pass over param, grad and moments) is ~4x faster than the foreach one; compiling
            costs ~10 s once, so it pays off on runs longer than a few hundred steps.
        fused_loss: chunked LM head + cross-entropy that never materialises all logits (see
            training/fused_loss.py); same loss, less memory traffic.
        seed: seeds model init, data order and every RNG.
        data_order: how micro-batches read the shards (training/data.py): "shuffled" (each
            sequence a window drawn from a per-epoch permutation of every window of every
            shard) or "llmc" (llm.c's order: one contiguous span per micro-batch, shards front
            to back, right only for shards whose documents are already shuffled).
        eval_every: steps between held-out evaluations (0: only at the end; needs val shards).
        eval_tokens: validation tokens per evaluation.
        checkpoint_every: steps between checkpoints (0: only at the end).
        keep_last: checkpoints kept on disk (older ones are deleted after a new one is written).
        resume: continue from the newest valid checkpoint under out/checkpoints, if any.
        device: "auto" (cuda:LOCAL_RANK if available, else cpu), "cpu" or "cuda".
        log_every: steps between stdout lines of the logging callback (metrics.jsonl gets all).
    """

    model: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    out: str = "runs/default"
    batch_tokens: int = 4096
    micro_batch: int = 8
    seq_len: int | None = None
    max_lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 10
    max_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: Precision = "fp32"
    compile: bool = False
    compile_optimizer: bool | None = None
    fused_loss: bool = True
    seed: int = 1337
    data_order: DataOrder = "shuffled"
    eval_every: int = 0
    eval_tokens: int = 65536
    checkpoint_every: int = 0
    keep_last: int = 2
    resume: bool = False
    device: str = "auto"
    log_every: int = 1

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
        if self.device not in ("auto", "cpu", "cuda"):
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
