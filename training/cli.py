"""`hgpt train` / `python -m training`: train from the command line, under torchrun too.

    hgpt train --preset tiny --data data/shards --out runs/tiny
    hgpt train --preset tiny --data data/shards --out runs/tiny --resume --max-steps 400
    torchrun --nproc-per-node 2 -m training --preset tiny --data data/shards --out runs/ddp

Every TrainConfig field is a flag (--max-steps 400, --no-fused-loss, --betas 0.9 0.95,
--model-overrides '{"n_layer": 2}'), its help the field's own; flags override the preset's values.
--set KEY=VALUE sets a field too (the value parsed as JSON when it parses).

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

# How the flags that name the run differ from the generated rest: required, with a metavar the
# usage line reads well with.
_FLAG_SHAPE = {
    "data": dict(required=True, metavar="SHARD_DIR"),
    "out": dict(required=True, metavar="RUN_DIR"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.config import TRAIN_PRESETS, field_specs, preset_values

    parser.add_argument("--preset", default="tiny", metavar="{" + ",".join(TRAIN_PRESETS) + "}",
                        help="training preset whose values every flag below overrides "
                        "(default: tiny)")
    parser.add_argument("--config", help="JSON file with TrainConfig fields (applied after the "
                        "preset, before flags)")
    fields_group = parser.add_argument_group(
        "TrainConfig fields", "one flag per field; a flag left out keeps the preset's value")
    values = preset_values()
    for spec in field_specs():
        shape = {**_argparse_kind(spec), **_FLAG_SHAPE.get(spec.name, {})}
        text = spec.help if shape.get("required") else spec.describe(values[spec.name])
        fields_group.add_argument("--" + spec.name.replace("_", "-"), dest=spec.name,
                                  default=None, help=text.replace("%", "%%"), **shape)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig field, value as JSON or a plain string")


def _argparse_kind(spec) -> dict:
    """add_argument's type/nargs/action for a field of this kind."""
    if spec.kind is bool:
        return dict(action=argparse.BooleanOptionalAction)
    if spec.choices:
        # Shown, not enforced by argparse: TrainConfig's own check gives the one-line error.
        return dict(metavar="{" + ",".join(spec.choices) + "}")
    if spec.kind is dict:
        return dict(type=_json_object, metavar="JSON")
    if spec.kind is list:
        return dict(type=spec.item, nargs="+", metavar=_METAVARS[spec.item])
    if spec.kind is tuple:
        return dict(type=spec.item, nargs=spec.length, metavar=(_METAVARS[spec.item],) * spec.length)
    return dict(type=spec.kind, metavar=_METAVARS[spec.kind])


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a GPT-2 on token shards",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from training.config import TrainConfig, field_specs

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
    for spec in field_specs():
        if getattr(args, spec.name) is not None:
            overrides[spec.name] = getattr(args, spec.name)
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
        # One write per line (print writes the newline apart): under torchrun every rank reports
        # the same error into one stream, and two writes per rank interleave mid-line.
        sys.stderr.write(f"train: error: {exc}\n")
        return 2
