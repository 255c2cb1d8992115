"""`hgpt data ...`: every stage of the data pipeline from the command line, with progress bars.

    hgpt data snapshots --inbox ../shared/data/docs-sample
    hgpt data run --input ../shared/data/docs-sample/snapshot-2026-11-a --data-root /tmp/hgpt
    hgpt data filter --input DIR --out OUT_DIR [--on-error skip]
    hgpt data dedup --kept OUT_DIR/kept.parquet --out DEDUP_DIR [--index INDEX_DIR]
    hgpt data tokenize --docs DEDUP_DIR/kept.parquet --out SHARD_DIR [--shard-tokens N]
    hgpt data stats --run-dir DATA_ROOT/<snapshot-key>
    hgpt data hub --name sample-10BT --data-root /tmp/hgpt   # needs network
    hgpt data run ... --executor ray [--ray-address auto]     # the stages' tasks on Ray ([ray] extra)

Each command prints its result as JSON on stdout; progress goes to stderr.

Exit codes: 0 done; 1 the documents do not balance across stages (conservation); 2 a user error,
one line on stderr, "hgpt data: error: ...", saying what and where: an unreadable file or bad row
(name and row; the line then points to `--on-error skip`), a bad argument, a missing input, a full
disk, or another live process writing the same output (the lock's path and its holder: pid,
host, since when).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


ERROR = "hgpt data: error:"


class InputMissing(ValueError):
    """--input is not a snapshot directory: nothing was read, so --on-error cannot help."""


def _bar(name: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="doc", file=sys.stderr, dynamic_ncols=True, leave=False)


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _filter_cfg(args):
    from pipelines.filtering import FilterStageConfig
    from pipelines.sources import ReadConfig

    cfg = FilterStageConfig(read=ReadConfig(on_error=args.on_error, limit_docs=args.limit_docs),
                            executor=args.executor, ray_address=args.ray_address)
    return replace(cfg, workers=args.workers) if args.workers else cfg


def _tokenize_cfg(args):
    from pipelines.tokenize import TokenizeConfig

    cfg = TokenizeConfig(shard_tokens=args.shard_tokens, val_fraction=args.val_fraction,
                         val_min_tokens=args.val_min_tokens, val_max_share=args.val_max_share,
                         executor=args.executor, ray_address=args.ray_address)
    return replace(cfg, workers=args.workers) if args.workers else cfg


def _stats_cfg(args):
    from pipelines.stats import StatsConfig

    cfg = StatsConfig(executor=args.executor, ray_address=args.ray_address)
    return replace(cfg, workers=args.workers) if args.workers else cfg


def _snapshot(args):
    from pipelines.sources import SourceError, local_snapshot

    try:
        return local_snapshot(args.input)
    except SourceError as exc:
        raise InputMissing(f"--input {exc}") from None


def cmd_snapshots(args) -> int:
    from pipelines.sources import discover_local_snapshots

    _print([s.to_dict() for s in discover_local_snapshots(args.inbox)])
    return 0


def cmd_filter(args) -> int:
    from pipelines.filtering import filter_snapshot

    with _bar("filter") as bar:  # closed (and cleared) before an error is printed
        result = filter_snapshot(_snapshot(args), args.out, _filter_cfg(args), progress=bar)
    _print(result.to_dict())
    return 0


def _dedup_cfg(args, cross_snapshot: bool):
    from pipelines.dedup import DedupConfig
    from pipelines.filtering import default_workers

    return DedupConfig(cross_snapshot=cross_snapshot, workers=args.workers or default_workers(),
                       executor=args.executor, ray_address=args.ray_address)


def cmd_dedup(args) -> int:
    from pipelines.dedup import dedup_snapshot

    cfg = _dedup_cfg(args, cross_snapshot=args.index is not None)
    with _bar("dedup") as bar:  # closed (and cleared) before an error is printed
        result = dedup_snapshot(args.kept, args.out, args.index, cfg, snapshot_key=args.key, progress=bar)
    _print(result.to_dict())
    return 0


def cmd_tokenize(args) -> int:
    from pipelines.tokenize import tokenize_documents

    with _bar("tokenize") as bar:  # closed (and cleared) before an error is printed
        result = tokenize_documents(args.docs, args.out, _tokenize_cfg(args), progress=bar)
    _say_val_note(result.val_note)
    _print(result.to_dict())
    return 0


def cmd_stats(args) -> int:
    from pipelines.stats import compute_statistics

    run = Path(args.run_dir)
    result = compute_statistics(run / "dedup" / "kept.parquet", run / "filtered" / "rejected.parquet",
                                run / "dedup" / "duplicates.parquet", run / "shards" / "manifest.parquet",
                                args.out or run / "stats", snapshot_key=run.name, cfg=_stats_cfg(args))
    _print(result.to_dict())
    return 0


def _run(snapshot, args) -> int:
    from pipelines.run import ConservationError, PipelineConfig, run_pipeline

    cfg = PipelineConfig(filter=_filter_cfg(args), tokenize=_tokenize_cfg(args), stats=_stats_cfg(args),
                         dedup=_dedup_cfg(args, cross_snapshot=args.cross_snapshot_dedup))
    try:
        result = run_pipeline(snapshot, args.data_root, cfg, progress_factory=_bar)
    except ConservationError as exc:
        print(f"{ERROR} {exc}", file=sys.stderr)
        return 1
    c = result.conservation
    print(
        f"{snapshot.key}: {c['documents_in']} documents in = {c['kept']} kept + {c['rejected']} rejected "
        f"+ {c['duplicates']} duplicates; {c['tokens']} tokens; skipped files: {len(c['skipped_files'])}",
        file=sys.stderr,
    )
    _say_val_note(result.tokenize.val_note)
    _print(result.to_dict())
    return 0


def cmd_run(args) -> int:
    return _run(_snapshot(args), args)


def cmd_hub(args) -> int:
    from pipelines.sources import HubUnreachableError, hub_snapshot

    try:
        snapshot = hub_snapshot(args.name, revision=args.revision, limit=args.limit_docs, max_files=args.max_files)
    except HubUnreachableError as exc:
        print(f"{ERROR} {exc}", file=sys.stderr)
        return 2
    return _run(snapshot, args)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="an unreadable file or a row with a value of the wrong type stops the run (raise), "
                   "or the file is recorded and skipped and the row rejected as input/<reason> (skip)")
    p.add_argument("--limit-docs", type=int, default=None, help="read at most this many documents")
    _executor_args(p)


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the stages' tasks run: processes here (local) or a Ray cluster "
                   "(needs the [ray] extra); the output is the same")
    p.add_argument("--ray-address", default=None,
                   help="with --executor ray: the cluster (e.g. ray://head:10001 or auto; default: a local one)")


def _dedup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cross-snapshot-dedup", action="store_true",
                   help="also remove documents duplicating a snapshot deduplicated earlier under DATA_ROOT "
                   "(default: each snapshot on its own, as FineWeb deduplicated each dump)")


def _tokenize_args(p: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from pipelines.tokenize import TokenizeConfig

    p.add_argument("--shard-tokens", type=int, default=TokenizeConfig.shard_tokens)
    for f in fields(TokenizeConfig):  # the validation split's settings, as the dataclass has them
        if f.name.startswith("val_"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                           help=f"{f.metadata['help']} (default {f.default:g})")


def _say_val_note(val_note: str) -> None:
    """The tokenize stage's note that validation holds fewer than --val-min-tokens, on stderr
    (the JSON on stdout carries it too, as val_note)."""
    if val_note:
        print(f"hgpt data: note: {val_note}", file=sys.stderr)


def _guarded(func):
    """Turn the pipeline's expected failures into one clear line and exit code 2."""

    def run(args) -> int:
        from pipelines.locking import LockHeld
        from pipelines.shard_format import ShardError
        from pipelines.sources import SourceError

        try:
            return func(args)
        except (SourceError, ShardError, LockHeld, OSError, ValueError) as exc:
            # The skip hint only where it applies: a file or row that could not be read, by a
            # command that reads with --on-error raise.
            hint = (isinstance(exc, SourceError) and getattr(args, "on_error", None) == "raise")
            print(f"{ERROR} {exc}" + ("; `--on-error skip` records unreadable files, rejects bad "
                                      "rows and processes the rest" if hint else ""),
                  file=sys.stderr)
            return 2

    run.__name__ = func.__name__
    return run


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="data pipeline: filter, dedup, tokenize, statistics",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("snapshots", help="list the local snapshots under an inbox directory")
    p.add_argument("--inbox", required=True)
    p.set_defaults(func=_guarded(cmd_snapshots))

    p = sub.add_parser("filter", help="apply FineWeb's quality filters to a local snapshot")
    p.add_argument("--input", required=True, help="directory of parquet/jsonl(.gz) files")
    p.add_argument("--out", required=True)
    _source_args(p)
    p.set_defaults(func=_guarded(cmd_filter))

    p = sub.add_parser("dedup", help="exact + MinHash dedup of a snapshot (with --index: and against earlier ones)")
    p.add_argument("--kept", required=True, help="kept.parquet from `hgpt data filter`")
    p.add_argument("--out", required=True)
    p.add_argument("--index", default=None, help="directory of the cross-snapshot dedup index: compare with the "
                   "snapshots registered there before this one, then register it (default: this snapshot alone)")
    _executor_args(p)
    p.add_argument("--key", default=None, help="snapshot key (default: taken from the path)")
    p.set_defaults(func=_guarded(cmd_dedup))

    p = sub.add_parser("tokenize", help="GPT-2 tokens into llm.c shards + manifest")
    p.add_argument("--docs", required=True, help="parquet with text, id, source_file columns")
    p.add_argument("--out", required=True)
    _executor_args(p)
    _tokenize_args(p)
    p.set_defaults(func=_guarded(cmd_tokenize))

    p = sub.add_parser("stats", help="DuckDB statistics and plots of a processed snapshot")
    p.add_argument("--run-dir", required=True, help="DATA_ROOT/<snapshot-key> written by `hgpt data run`")
    p.add_argument("--out", default=None)
    _executor_args(p)
    p.set_defaults(func=_guarded(cmd_stats))

    p = sub.add_parser("run", help="every stage for one local snapshot")
    p.add_argument("--input", required=True)
    p.add_argument("--data-root", required=True)
    _source_args(p)
    _dedup_args(p)
    _tokenize_args(p)
    p.set_defaults(func=_guarded(cmd_run))

    p = sub.add_parser("hub", help="every stage for FineWeb from the Hugging Face hub (network)")
    p.add_argument("--name", required=True, help="a config (sample-10BT) or a dump (CC-MAIN-2024-10)")
    p.add_argument("--revision", default=None)
    p.add_argument("--max-files", type=int, default=1)
    p.add_argument("--data-root", required=True)
    _source_args(p)
    _dedup_args(p)
    _tokenize_args(p)
    p.set_defaults(func=_guarded(cmd_hub))
