"""It learns: our training engine against transformers' GPT-2 + torch AdamW, same everything.

    .venv/bin/python benchmarks/learning_parity.py                  # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/learning_parity.py --steps 200

Data: the shared docs sample (../shared/data/docs-sample, real English documentation text in the
FineWeb parquet schema; it is not FineWeb), tokenized here with the GPT-2 encoding into llm.c
shards: the documents of every file but the last go to train_000000.bin, the last file's
documents to val_000000.bin.

Both sides start from the same weights (ours, seed-initialised, copied into GPT2LMHeadModel),
read the same batches (our ShardLoader, same seed and data order), use the `tiny` preset's hyper-parameters
(warmup + cosine schedule, AdamW betas/eps/weight decay on the same groups, clip 1.0, fp32) for
the same token budget, and are scored by evaluation.heldout.evaluate_loss on the same held-out
tokens. Ours runs through training.train() (fused LM head + loss, our AdamW); the reference is
the textbook loop. Prints JSON with both held-out losses and the difference (acceptance: ours no
worse than the reference by more than 0.02).
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

from evaluation.heldout import evaluate_loss  # noqa: E402
from model import GPT  # noqa: E402
from model.hf_interop import hf_config, to_hf_state_dict  # noqa: E402
from pipelines.shard_format import write_shard  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import ShardLoader, find_shards  # noqa: E402
from training.loop import train  # noqa: E402
from training.optim import param_groups  # noqa: E402
from training.schedule import get_lr  # noqa: E402

DOCS = REPO / ".." / "shared" / "data" / "docs-sample"


def tokenize_docs(out_dir: Path) -> dict:
    """docs-sample parquet -> train/val shards (GPT-2 tokens, <|endoftext|> before each doc)."""
    import pyarrow.parquet as pq

    from model.tokenizer import encode_document

    files = sorted(DOCS.glob("snapshot-*/*.parquet"))
    if not files:
        raise SystemExit(f"no parquet files under {DOCS.resolve()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    split = {"train": [], "val": []}
    for i, path in enumerate(files):
        part = "val" if i == len(files) - 1 else "train"
        for text in pq.read_table(path, columns=["text"]).column("text").to_pylist():
            split[part].extend(encode_document(text))
    for part, tokens in split.items():
        write_shard(out_dir / f"{part}_000000.bin", np.asarray(tokens, dtype=np.uint16))
    return {"train_tokens": len(split["train"]), "val_tokens": len(split["val"]),
            "val_file": files[-1].name}


class HFAdapter(torch.nn.Module):
    """transformers' model behind our forward signature, for evaluate_loss."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, idx, targets=None):
        return self.hf(input_ids=idx).logits, None


def hf_twin(ours: GPT):
    """transformers' GPT2LMHeadModel holding `ours`'s weights (head tied, padding rows dropped)."""
    import transformers

    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{
        k: v for k, v in hf_config(ours.config).items() if k not in ("architectures", "torch_dtype")
    }))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected and all(k.endswith(".attn.bias") or k == "lm_head.weight"
                                  for k in missing), (missing, unexpected)
    hf.tie_weights()
    return hf


def textbook_train(cfg: TrainConfig, hf, next_batch) -> list[float]:
    """The textbook loop on `hf`: torch.optim.AdamW (decay on matrices and embeddings only),
    clip_grad_norm_, the same warmup + cosine schedule; `next_batch()` gives (x, y). Returns
    each step's loss."""
    hf.train()
    named = dict(hf.named_parameters())
    groups = [{"params": [p for p in named.values() if p.dim() >= 2],
               "weight_decay": cfg.weight_decay},
              {"params": [p for p in named.values() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.max_lr, betas=cfg.betas, eps=cfg.eps)
    accum = cfg.grad_accum_steps(1)
    losses = []
    for step in range(cfg.max_steps):
        lr = get_lr(step, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        total = 0.0
        for _ in range(accum):
            x, y = next_batch()
            logits = hf(input_ids=x).logits  # (B, T, V): our targets are already shifted
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()) / accum
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.grad_clip)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
    return losses


def reference_run(cfg: TrainConfig, shards) -> tuple[float, list[float]]:
    """The textbook loop from the very init train() uses, on the very batches it reads (our
    ShardLoader, same seed and data order)."""
    hf = hf_twin(GPT(cfg.model_config(), seed=cfg.seed))
    loader = ShardLoader(shards.train, cfg.micro_batch, cfg.sequence_length, cfg.seed,
                         order=cfg.data_order)
    losses = textbook_train(cfg, hf, loader.next_batch)
    val = evaluate_loss(HFAdapter(hf), shards.val, max_tokens=cfg.eval_tokens,
                        batch_size=cfg.micro_batch, seq_len=cfg.sequence_length).loss
    return val, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps (x 2048 tokens)")
    parser.add_argument("--work", type=Path, default=None, help="where shards and runs go")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hgpt-learning-parity-"))
    data_info = tokenize_docs(work / "shards")
    cfg = TrainConfig.preset("tiny", data=[str(work / "shards")], out=str(work / "ours"),
                             max_steps=args.steps, eval_every=0, checkpoint_every=0,
                             precision="fp32", device="cpu")
    shards = find_shards(cfg.data)

    t0 = time.perf_counter()
    ours = train(cfg)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_val, ref_losses = reference_run(cfg, shards)
    ref_s = time.perf_counter() - t0
    init_val = evaluate_loss(GPT(cfg.model_config(), seed=cfg.seed), shards.val,
                             max_tokens=cfg.eval_tokens, batch_size=cfg.micro_batch,
                             seq_len=cfg.sequence_length).loss
    result = {
        "data": {"source": "shared/data/docs-sample (not FineWeb)", **data_info},
        "token_budget": cfg.max_steps * cfg.batch_tokens,
        "steps": cfg.max_steps, "eval_tokens": cfg.eval_tokens,
        "val_loss_at_init": init_val,
        "ours": {"val_loss": ours.val_loss, "final_train_loss": ours.train_loss,
                 "seconds": round(ours_s, 1)},
        "transformers_torch_adamw": {"val_loss": ref_val, "final_train_loss": ref_losses[-1],
                                     "seconds": round(ref_s, 1)},
        "val_loss_difference": ours.val_loss - ref_val,
        "acceptance_no_worse_by_0_02": ours.val_loss - ref_val <= 0.02,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
