"""`hgpt train` / `python -m training`: train from the command line, under torchrun too.

    hgpt train --preset tiny --data data/shards --out runs/tiny
    hgpt train --preset tiny --data data/shards --out runs/tiny --resume --max-steps 400
    torchrun --nproc-per-node 2 -m training --preset tiny --data data/shards --out runs/ddp

Flags override the preset's values; --set KEY=VALUE sets any other TrainConfig field (the value
is parsed as JSON when it parses, e.g. --set model_overrides='{"n_layer": 2}'). Exit codes: 0 done,
2 bad input or a non-finite loss, 128 + signal number when cancelled (SIGTERM 143, SIGINT 130).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# flag -> (TrainConfig field, type)
_FLAGS = {
    "--max-steps": ("max_steps", int),
    "--batch-tokens": ("batch_tokens", int),
    "--micro-batch": ("micro_batch", int),
    "--seq-len": ("seq_len", int),
    "--max-lr": ("max_lr", float),
    "--min-lr": ("min_lr", float),
    "--warmup-steps": ("warmup_steps", int),
    "--weight-decay": ("weight_decay", float),
    "--grad-clip": ("grad_clip", float),
    "--precision": ("precision", str),
    "--seed": ("seed", int),
    "--data-order": ("data_order", str),
    "--eval-every": ("eval_every", int),
    "--eval-tokens": ("eval_tokens", int),
    "--checkpoint-every": ("checkpoint_every", int),
    "--keep-last": ("keep_last", int),
    "--device": ("device", str),
    "--log-every": ("log_every", int),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="training preset (tiny, gpt2)")
    parser.add_argument("--config", help="JSON file with TrainConfig fields (applied after the "
                        "preset, before flags)")
    parser.add_argument("--data", nargs="+", required=True, metavar="SHARD_DIR",
                        help="shard directories or .bin files (train_*.bin, val_*.bin)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest valid checkpoint in RUN_DIR, if any")
    for flag, (name, kind) in _FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"TrainConfig.{name}")
    parser.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction,
                        default=None, help="torch.compile the model and optimizer")
    parser.add_argument("--compile-optimizer", dest="compile_optimizer",
                        action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile just the AdamW update (default: as --compile)")
    parser.add_argument("--fused-loss", dest="fused_loss", action=argparse.BooleanOptionalAction,
                        default=None, help="chunked LM head + cross-entropy")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig field, value as JSON or a plain string")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a GPT-2 on token shards",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from training.config import TrainConfig

    overrides: dict = {}
    if args.config:
        with open(args.config) as f:
            overrides.update(json.load(f))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    for name, _ in [*_FLAGS.values(), ("compile", bool), ("compile_optimizer", bool),
                    ("fused_loss", bool)]:
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    overrides.update(data=args.data, out=args.out, resume=args.resume)
    return TrainConfig.preset(args.preset, **overrides)


def run(args: argparse.Namespace) -> int:
    from training.callbacks import JsonlLogger
    from training.loop import TrainingInterrupted, train

    cfg = config_from_args(args)
    rank = int(os.environ.get("RANK", "0"))
    callbacks = [JsonlLogger(cfg.out, print_every=cfg.log_every)] if rank == 0 else []
    try:
        train(cfg, callbacks)
    except TrainingInterrupted as exc:
        print(f"train: {exc}; the last complete checkpoint is intact", file=sys.stderr)
        return 128 + exc.signum
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError, RuntimeError) as exc:
        if os.environ.get("HGPT_DEBUG"):
            raise
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
