"""`hgpt` command line. Each package registers its own subcommands; this file only dispatches.

    hgpt --help
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Packages that contribute subcommands through a `register(subparsers)` function. Their command
# implementations import heavy modules lazily, so `hgpt export-hf` does not pay for dagster.
_COMMAND_MODULES = (
    "model.cli",
    "training.cli",
    "pipelines.cli",
    "evaluation.cli",
    "pipelines.orchestration.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hgpt", description="Homebrew GPT-2")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that package has no CLI (yet)
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as exc:
        # Errors about the user's input (bad checkpoint, unreadable file, invalid config) carry
        # a message naming what was wrong; a traceback would bury it. HGPT_DEBUG=1 shows it.
        if os.environ.get("HGPT_DEBUG"):
            raise
        # One write per line: `hgpt train` under torchrun reports from every rank into one stream,
        # and print's separate newline write lets two ranks' lines interleave.
        sys.stderr.write(f"hgpt {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
