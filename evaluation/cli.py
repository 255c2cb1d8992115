"""`hgpt sample` and `hgpt eval`: read what a checkpoint writes, and measure it.

    hgpt sample CHECKPOINT --prompt "Hello, I'm a language model," --num-samples 3 --seed 0
    hgpt eval CHECKPOINT --val-dir DATA/val [--max-tokens 10485760] [--hellaswag PATH|download]

CHECKPOINT is a checkpoint directory or a training run directory (its newest valid checkpoint).
Heavy modules are imported inside the commands so `hgpt --help` stays fast.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text from a checkpoint (KV-cache decoding)")
    p.add_argument("checkpoint", help="checkpoint directory or training run directory")
    p.add_argument("--prompt", action="append", default=None,
                   help="prompt text; repeat for several (default: the empty prompt, i.e. <|endoftext|>)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="fixed seed: reproducible samples")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--no-stop", action="store_true", help="do not stop at <|endoftext|>")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON records instead of text")
    p.set_defaults(func=_sample)

    p = subparsers.add_parser("eval", help="held-out loss (and HellaSwag) of a checkpoint")
    p.add_argument("checkpoint", help="checkpoint directory or training run directory")
    p.add_argument("--val-dir", default=None, help="directory of validation .bin token shards")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="validation tokens to score (default: llm.c's 10,485,760)")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: block_size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hellaswag", default=None,
                   help="path to hellaswag_val.jsonl, or 'download' to fetch the official file")
    p.add_argument("--hellaswag-limit", type=int, default=None, help="score only the first N examples")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)


def _load(checkpoint: str, device: str):
    from model.checkpoint import load_model, resolve_checkpoint

    return load_model(resolve_checkpoint(checkpoint), device=device).eval()


def _sample(args) -> int:
    from evaluation.generate import sample_text

    model = _load(args.checkpoint, args.device)
    prompts = args.prompt or [""]
    records = []
    for prompt in prompts:
        for i in range(args.num_samples):
            seed = None if args.seed is None else args.seed + i
            (text,) = sample_text(
                model, [prompt], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=seed, stop_at_eot=not args.no_stop,
            )
            records.append({"prompt": prompt, "seed": seed, "text": text})
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            print(f"--- seed {r['seed']}")
            print(r["prompt"] + r["text"])
    return 0


def _eval(args) -> int:
    from pathlib import Path

    from evaluation.heldout import LLMC_VAL_TOKENS, evaluate_loss
    from evaluation.hellaswag import download_hellaswag, evaluate_hellaswag

    if args.val_dir is None and args.hellaswag is None:
        raise ValueError("nothing to evaluate: give --val-dir and/or --hellaswag")
    model = _load(args.checkpoint, args.device)
    result = {"checkpoint": args.checkpoint}
    if args.val_dir is not None:
        shards = sorted(Path(args.val_dir).glob("*.bin"))
        if not shards:
            raise ValueError(f"{args.val_dir}: no .bin token shards")
        heldout = evaluate_loss(
            model, shards, max_tokens=args.max_tokens or LLMC_VAL_TOKENS,
            batch_size=args.batch_size, seq_len=args.seq_len, device=args.device,
        )
        result.update({"val_loss": heldout.loss, "val_perplexity": heldout.perplexity,
                       "val_tokens": heldout.tokens})
    if args.hellaswag is not None:
        path = args.hellaswag
        if path == "download":  # fetched once, then reused (and re-verified on load)
            path = Path.home() / ".cache" / "hgpt" / "hellaswag_val.jsonl"
            if not path.exists():
                download_hellaswag(path)
        hs = evaluate_hellaswag(model, path, limit=args.hellaswag_limit, device=args.device)
        result.update({"hellaswag_acc": hs["acc"], "hellaswag_acc_norm": hs["acc_norm"],
                       "hellaswag_n": hs["n"]})
    print(json.dumps(result, indent=2))
    return 0
