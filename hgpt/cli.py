"""`hgpt` command line. Each package registers its own subcommands; this file only dispatches.

    hgpt --help
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Packages that contribute subcommands through a `register(subparsers)` function. Imported
# lazily by name so `hgpt export-hf` does not pay for importing dagster or mlflow.
_COMMAND_MODULES = ("model.cli", "training.cli", "pipelines.cli", "evaluation.cli")


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
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
