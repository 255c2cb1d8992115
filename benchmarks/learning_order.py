"""Does the order we read the data in cost learning? Held-out loss after a fixed budget.

    .venv/bin/python benchmarks/learning_order.py                 # tiny preset, 150 steps
    .venv/bin/python benchmarks/learning_order.py --steps 50 --runs shuffled textbook

Data: one snapshot of the shared docs sample (default snapshot-2026-11-b, the Linux 6.1 kernel
docs: real documentation pages in FineWeb's parquet schema; it is not FineWeb). Before anything
is tokenized, every k-th source file (the page's `file_path`, in sorted order) is held out. The
other pages go through the project's own data stages (pipelines.run.run_pipeline: filters,
dedup, tokenize, whose shards hold the documents in a seeded pseudo-random order). The held-out
pages then go through the same stages as a second snapshot into the same data root, so they are
text of the same kind (the filters' kept pages) and their near-duplicates of training pages are
removed; the first --eval-tokens of their tokens are scored. The training never sees them.

Runs, all from the same init (ours, seed-initialised), the tiny preset's hyper-parameters
(warmup + cosine, AdamW groups, clip), fp32, no dropout, the same token budget:
  llmc_source_order  ours (training.train), llm.c's contiguous order, over the training
                     documents in source order (as the tokenize stage wrote them before it
                     shuffled: the setup the order was first measured in)
  llmc               ours, llm.c's order, over the shards as the stage writes them now
  shuffled           ours, the default order: each sequence a window drawn from a per-epoch
                     permutation of every window of every shard
  textbook           transformers' GPT2LMHeadModel + torch.optim.AdamW, each sequence at a
                     uniformly random position of the training tokens (nanoGPT's get_batch)
Every model is scored by one loop: converted to a GPT2LMHeadModel (ours as `hgpt export-hf`
converts it) and run through evaluation.heldout.evaluate_loss on the same held-out tokens.
Prints one JSON object. Target: `shuffled` within 0.05 nats of `textbook` (not worse by more)
at 150 steps of the tiny preset.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.learning_parity import HFAdapter, hf_twin, textbook_train  # noqa: E402
from benchmarks.machine import cpu_bf16_flags, cpu_name  # noqa: E402
from evaluation.heldout import evaluate_loss  # noqa: E402
from model import GPT  # noqa: E402
from model.checkpoint import load_model  # noqa: E402
from pipelines.shard_format import open_tokens, write_shard  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import find_shards  # noqa: E402
from training.loop import train  # noqa: E402

DOCS = REPO / ".." / "shared" / "data" / "docs-sample"
RUNS = ("llmc_source_order", "llmc", "shuffled", "textbook")
TARGET_NATS = 0.05


def split_snapshot(snapshot: Path, every: int, work: Path) -> tuple[Path, Path, dict]:
    """Hold out every `every`-th source file of `snapshot`: (a snapshot directory with the
    rest, one with the held-out pages, counts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(snapshot.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no parquet files under {snapshot.resolve()}")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    order = sorted(range(table.num_rows), key=lambda i: table["file_path"][i].as_py())
    held = set(order[every - 1 :: every])
    dirs = []
    for part, rows in (("train", [i for i in range(table.num_rows) if i not in held]),
                       ("heldout", sorted(held))):
        dirs.append(work / "inbox" / f"{snapshot.name}-{part}")
        dirs[-1].mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(pa.array(rows)), dirs[-1] / "pages.parquet")
    return dirs[0], dirs[1], {"snapshot": snapshot.name, "pages": table.num_rows,
                              "held_out_pages": len(held), "held_out_every": every}


def data_stages(snapshot_dir: Path, data_root: Path) -> dict:
    """The project's data run on one snapshot directory; every document to train_*.bin (the
    benchmark's scoring text is a snapshot of its own)."""
    from pipelines.run import PipelineConfig, run_pipeline
    from pipelines.sources import local_snapshot
    from pipelines.tokenize import TokenizeConfig

    result = run_pipeline(local_snapshot(snapshot_dir), data_root,
                          PipelineConfig(tokenize=TokenizeConfig(val_fraction=0.0)))
    return {"shards": str(Path(result.tokenize.manifest_path).parent),
            "pages_in": result.filter.docs_in, "pages_kept": result.dedup.kept,
            "tokens": result.tokenize.train_tokens}


def source_order_shard(shard_dir: Path, out_dir: Path) -> Path:
    """The training documents back in input order, one shard: what the tokenize stage wrote
    before it shuffled (pieces put back together through the manifest)."""
    import pyarrow.parquet as pq

    manifest = pq.read_table(shard_dir / "manifest.parquet").to_pylist()
    pieces = sorted((r for r in manifest if r["split"] == "train"),
                    key=lambda r: (r["doc_index"], r["part"]))
    shards = {name: open_tokens(shard_dir / name) for name in {r["shard"] for r in pieces}}
    tokens = np.concatenate([shards[r["shard"]][r["offset"] : r["offset"] + r["n_tokens"]]
                             for r in pieces])
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_shard(out_dir / "train_000000.bin", tokens)


def random_windows(train_files: list[Path], cfg: TrainConfig):
    """nanoGPT's get_batch: micro_batch windows at uniformly random positions, seeded."""
    data = torch.from_numpy(np.concatenate([np.asarray(open_tokens(f)) for f in train_files])
                            .astype(np.int64))
    T, gen = cfg.sequence_length, torch.Generator().manual_seed(cfg.seed)

    def next_batch():
        ix = torch.randint(len(data) - T, (cfg.micro_batch,), generator=gen)
        x = torch.stack([data[i : i + T] for i in ix.tolist()])
        y = torch.stack([data[i + 1 : i + 1 + T] for i in ix.tolist()])
        return x, y

    return next_batch


def score(hf, val_shards: list[Path], cfg: TrainConfig, eval_tokens: int) -> float:
    """The one scoring loop every run goes through."""
    return evaluate_loss(HFAdapter(hf), val_shards, max_tokens=eval_tokens,
                         batch_size=cfg.micro_batch, seq_len=cfg.sequence_length,
                         vocab_size=cfg.model_config().vocab_size).loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps (x 2048 tokens)")
    parser.add_argument("--snapshot", default="snapshot-2026-11-b")
    parser.add_argument("--holdout-every", type=int, default=5,
                        help="hold out every k-th source file of the snapshot")
    parser.add_argument("--eval-tokens", type=int, default=262_144)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--work", type=Path, default=None, help="where data and runs go")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hgpt-learning-order-"))

    t0 = time.perf_counter()
    train_dir, held_dir, data_info = split_snapshot(DOCS / args.snapshot, args.holdout_every, work)
    data_info["train"] = data_stages(train_dir, work / "data")
    data_info["held_out"] = held = data_stages(held_dir, work / "data")  # deduped against train
    val_shards = find_shards([held["shards"]]).train
    eval_tokens = min(args.eval_tokens, held["tokens"] - 1)
    data_info |= {"scored_tokens": eval_tokens, "seconds": round(time.perf_counter() - t0, 1)}
    shard_dir = Path(data_info["train"]["shards"])
    base = TrainConfig.preset("tiny", max_steps=args.steps, eval_every=0, checkpoint_every=0,
                              precision="fp32", device="cpu", data=[str(shard_dir)])
    assert base.model_config().dropout == 0.0

    results: dict[str, dict] = {}
    for run in args.runs:
        t0 = time.perf_counter()
        if run == "textbook":
            hf = hf_twin(GPT(base.model_config(), seed=base.seed))  # the init train() uses
            losses = textbook_train(base, hf, random_windows(find_shards([shard_dir]).train, base))
            final_train = losses[-1]
        else:
            data = shard_dir if run != "llmc_source_order" else \
                source_order_shard(shard_dir, work / "source-order").parent
            cfg = base.replace(data=[str(data)], out=str(work / "runs" / run),
                               data_order="shuffled" if run == "shuffled" else "llmc")
            result = train(cfg)
            hf = hf_twin(load_model(result.checkpoint))
            final_train = result.train_loss
        results[run] = {"val_loss": score(hf, val_shards, base, eval_tokens),
                        "final_train_loss": final_train,
                        "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{run}: {json.dumps(results[run])}", file=sys.stderr, flush=True)  # progress

    loss = {k: v["val_loss"] for k, v in results.items()}
    out = {
        "data": {"source": "shared/data/docs-sample (not FineWeb)", **data_info},
        "preset": "tiny", "steps": args.steps, "token_budget": args.steps * base.batch_tokens,
        "precision": "fp32", "dropout": 0.0,
        "machine": {"cpu": cpu_name(), "cpu_bf16_flags": cpu_bf16_flags(),
                    "torch_threads": torch.get_num_threads()},
        "runs": results,
        "differences": {f"{a}_minus_textbook": loss[a] - loss["textbook"]
                        for a in loss if a != "textbook" and "textbook" in loss},
    }
    if "shuffled" in loss and "textbook" in loss:
        out["target"] = {
            "what": f"shuffled no worse than textbook by more than {TARGET_NATS} nats at 150 "
                    f"steps of the tiny preset",
            "met": loss["shuffled"] - loss["textbook"] <= TARGET_NATS,
            "applies": args.steps == 150,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
