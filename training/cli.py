"""`hgpt train` / `python -m training`: train from the command line, under torchrun too.

    hgpt train --preset tiny --data data/shards --out runs/tiny
    hgpt train --preset tiny --data data/shards --out runs/tiny --resume --max-steps 400
    torchrun --nproc-per-node 2 -m training --preset tiny --data data/shards --out runs/ddp

Flags override the preset's values; --set KEY=VALUE sets any other TrainConfig field (the value
is parsed as JSON when it parses, e.g. --set model_overrides='{"n_layer": 2}').

One run at a time per RUN_DIR: a second one stops at once, naming the holder of RUN_DIR/.lock.

Exit codes:
  0         done (also when --resume finds the run already at --max-steps)
  1         an internal error (a bug): Python's traceback. torchrun itself exits 1 when any
            rank fails, whatever the rank's own code; each rank's line says why.
  2         a user error, in one line "error: ...": bad flags or config; missing, malformed or
            out-of-vocabulary shards, or shards changed since the checkpoint a --resume
            continues from; a corrupted checkpoint; RUN_DIR in use by another run; a full disk
            (or another write error) while writing a checkpoint, which leaves the previous
            checkpoint intact and nothing half written, so --resume continues once there is
            room; a non-finite loss or gradient norm; out of memory
  128+N     cancelled by signal N (SIGTERM 143, SIGINT 130); the last complete checkpoint is
            intact
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
