"""`hgpt sample` and `hgpt eval`: read what a checkpoint writes, and measure it.

    hgpt sample CHECKPOINT --prompt "Hello, I'm a language model," --num-samples 3 --seed 0
    hgpt eval CHECKPOINT --val-dir DATA/shards [--max-tokens 10485760] [--hellaswag PATH|download]

CHECKPOINT is a checkpoint directory or a training run directory (its newest valid checkpoint).
`hgpt eval --val-dir` scores the validation shards (val_*.bin) only; --include-train scores the
training shards of the same directory as well, reported apart under train_* keys. Every loss
comes with what it was computed on (split, shards, token count) and its bits per byte.
Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise); the result
is JSON (eval) or text (sample) on stdout. Exit codes: 0 done, 2 a user error in one line.
Heavy modules are imported inside the commands so `hgpt --help` stays fast.
"""

from __future__ import annotations

import argparse
import json

def register(subparsers) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter  # every flag's help shows its default
    p = subparsers.add_parser("sample", help="generate text from a checkpoint (KV-cache decoding)",
                              description="Generate text from a checkpoint. Without --seed a seed "
                              "is drawn and printed, so any sample can be made again.",
                              formatter_class=fmt)
    p.add_argument("checkpoint", help="checkpoint directory or training run directory")
    p.add_argument("--prompt", action="append", default=None,
                   help="prompt text; repeat for several (none: the empty prompt, i.e. <|endoftext|>)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="tokens to generate per sample (prompt + these must fit the context)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divides the logits before sampling; 0 = greedy (argmax)")
    p.add_argument("--top-k", type=int, default=None,
                   help="sample only among the k most likely tokens (none: all of them)")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus sampling: the smallest set of tokens holding this probability "
                   "(none: no cut)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the first sample (sample i uses seed + i); none: one is drawn "
                   "and printed")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--no-stop", action="store_true",
                   help="keep going past <|endoftext|> (default: a sample ends there)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of text")
    p.set_defaults(func=_sample)

    p = subparsers.add_parser("eval", help="held-out loss, bits per byte (and HellaSwag) of a checkpoint",
                              description="Held-out loss and bits per byte on the validation "
                              "shards (val_*.bin) of --val-dir, and HellaSwag.", formatter_class=fmt)
    p.add_argument("checkpoint", help="checkpoint directory or training run directory")
    p.add_argument("--val-dir", default=None,
                   help="shard directory; its val_*.bin shards are scored (none: no held-out loss)")
    p.add_argument("--include-train", action="store_true",
                   help="also score the train_*.bin shards of --val-dir, reported as train_loss "
                   "(the training data: not a held-out number)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="tokens to score per split (none: llm.c's 10,485,760)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="window length (none: the model's block_size)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--hellaswag", default=None,
                   help="path to hellaswag_val.jsonl, or 'download' to fetch the official file")
    p.add_argument("--hellaswag-limit", type=int, default=None,
                   help="score only the first N examples (none: all)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.set_defaults(func=_eval)


def _load(checkpoint: str, device: str):
    from model.checkpoint import load_model, resolve_checkpoint

    return load_model(resolve_checkpoint(checkpoint), device=device).eval()


def draw_seed() -> int:
    """A fresh seed from the OS, small enough to type back as --seed."""
    import secrets

    return secrets.randbelow(2**31)


def _sample(args) -> int:
    from evaluation.generate import encode_prompt, generate
    from evaluation.progress import Progress
    from model.tokenizer import decode

    model = _load(args.checkpoint, args.device)
    prompts = args.prompt or [""]
    first_seed = draw_seed() if args.seed is None else args.seed
    records = []
    with Progress("sample", total=len(prompts) * args.num_samples, unit="sample") as progress:
        for prompt in prompts:
            for i in range(args.num_samples):
                seed = first_seed + i
                (tokens,) = generate(
                    model, [encode_prompt(prompt)], args.max_new_tokens,
                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed,
                    stop_at_eot=not args.no_stop,
                )
                # Fewer tokens than asked for: the model drew <|endoftext|> (the end of a
                # document), which stops a sample unless --no-stop.
                ended = "max_new_tokens" if len(tokens) == args.max_new_tokens else "endoftext"
                records.append({"prompt": prompt, "seed": seed, "text": decode(tokens),
                                "tokens": len(tokens), "ended_at": ended})
                progress.update()
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            why = ("" if r["ended_at"] == "max_new_tokens"
                   else ", ended at <|endoftext|> (--no-stop goes on)")
            print(f"--- seed {r['seed']} ({r['tokens']} token{'' if r['tokens'] == 1 else 's'}{why})")
            print(r["prompt"] + r["text"])
    return 0


def _score(model, split: str, shards, args) -> dict:
    """One split's loss, bpb and what they were computed on, under `split`_* keys."""
    from evaluation.heldout import LLMC_VAL_TOKENS, evaluate_loss
    from evaluation.progress import Progress

    max_tokens = args.max_tokens or LLMC_VAL_TOKENS
    with Progress(f"eval {split}", total=0, unit="tok") as progress:
        held = evaluate_loss(model, shards, max_tokens=max_tokens, batch_size=args.batch_size,
                             seq_len=args.seq_len, device=args.device, progress=progress.update_to)
    return {f"{split}_loss": held.loss, f"{split}_bpb": held.bpb,
            f"{split}_perplexity": held.perplexity, f"{split}_tokens": held.tokens,
            f"{split}_bytes": held.bytes, f"{split}_shards": [str(p) for p in shards]}


def _eval(args) -> int:
    from pathlib import Path

    from evaluation.hellaswag import download_hellaswag, evaluate_hellaswag
    from evaluation.progress import Progress

    if args.val_dir is None and args.hellaswag is None:
        raise ValueError("nothing to evaluate: give --val-dir and/or --hellaswag")
    if args.include_train and args.val_dir is None:
        raise ValueError("--include-train scores the train_*.bin shards of --val-dir: give --val-dir")
    splits = {}
    if args.val_dir is not None:
        directory = Path(args.val_dir)
        if not directory.is_dir():
            raise ValueError(f"--val-dir {directory}: not a directory")
        splits["val"] = sorted(directory.glob("val_*.bin"))
        if not splits["val"]:
            others = sorted(p.name for p in directory.glob("*.bin"))
            raise ValueError(f"{directory}: no val_*.bin shards"
                             + (f" (it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
                                if others else ""))
        if args.include_train:
            splits["train"] = sorted(directory.glob("train_*.bin"))
            if not splits["train"]:
                raise ValueError(f"{directory}: no train_*.bin shards for --include-train")
    model = _load(args.checkpoint, args.device)
    result = {"checkpoint": args.checkpoint}
    for split, shards in splits.items():
        result.update(_score(model, split, shards, args))
    if args.hellaswag is not None:
        path = args.hellaswag
        if path == "download":  # fetched once, then reused (and re-verified on load)
            path = Path.home() / ".cache" / "hgpt" / "hellaswag_val.jsonl"
            if not path.exists():
                download_hellaswag(path)
        with Progress("eval hellaswag", total=0, unit="example") as progress:
            hs = evaluate_hellaswag(model, path, limit=args.hellaswag_limit, device=args.device,
                                    progress=progress.update_to)
        result.update({"hellaswag_acc": hs["acc"], "hellaswag_acc_norm": hs["acc_norm"],
                       "hellaswag_n": hs["n"]})
    print(json.dumps(result, indent=2))
    return 0
