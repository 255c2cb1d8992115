"""HellaSwag validation accuracy, completion style, as llm.c and build-nanogpt score it.

    hgpt eval CHECKPOINT --val-dir DATA/val --hellaswag hellaswag_val.jsonl
    hgpt eval CHECKPOINT --hellaswag download      # fetch the official file when the network allows

Each example is rendered as 4 rows, context + " " + ending, and the model's cross-entropy is
summed over the ending tokens only. `acc` picks the ending with the lowest summed loss, `acc_norm`
the one with the lowest mean loss per ending token. OpenAI's GPT-2 124M scores acc 0.2859 /
acc_norm 0.2955 on the 10,042 validation examples this way; reproduce with (needs the weights
and the data file, which this project's machines cannot download):

    # a transformers GPT-2 directory with config.json + model.safetensors, e.g. from
    # huggingface.co/openai-community/gpt2
    hgpt import-hf gpt2-hf/ ckpt/gpt2-124m
    hgpt eval ckpt/gpt2-124m --hellaswag hellaswag_val.jsonl
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from model.checkpoint import unwrap_model

HELLASWAG_VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
HELLASWAG_VAL_EXAMPLES = 10_042
# sha256 of the official hellaswag_val.jsonl. Not pinned yet: no machine of this project could
# fetch the file. Pin it here (or set HGPT_HELLASWAG_SHA256) once a download is checked; until
# then a file called hellaswag_val.jsonl is at least checked to hold exactly 10,042 examples.
HELLASWAG_VAL_SHA256: str | None = os.environ.get("HGPT_HELLASWAG_SHA256") or None


class HellaSwagError(ValueError):
    """A HellaSwag file that is missing, unreachable, malformed or not the expected one."""


@dataclass(frozen=True)
class Example:
    ctx: str
    endings: tuple[str, ...]
    label: int


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_hellaswag(dest: str | os.PathLike, url: str = HELLASWAG_VAL_URL, timeout: float = 30) -> Path:
    """Fetch the official validation file to `dest` (atomically) and verify it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise HellaSwagError(
            f"cannot download {url} ({exc}); without network access, copy hellaswag_val.jsonl "
            f"onto this machine and pass its path instead"
        ) from None
    os.replace(tmp, dest)
    load_hellaswag(dest)  # verify before anyone relies on it
    return dest


def load_hellaswag(
    path: str | os.PathLike, limit: int | None = None, expected_sha256: str | None = None
) -> list[Example]:
    """Examples of a file in the official hellaswag_val.jsonl format (one JSON object per line
    with at least `ctx`, `endings` (4 strings) and `label` (0-3)).

    The checksum is verified when one is known: `expected_sha256`, else HELLASWAG_VAL_SHA256 for
    a file named hellaswag_val.jsonl."""
    path = Path(path)
    if not path.is_file():
        raise HellaSwagError(f"{path}: HellaSwag file not found")
    official = path.name == "hellaswag_val.jsonl"
    expected = expected_sha256 or (HELLASWAG_VAL_SHA256 if official else None)
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected.lower():
            raise HellaSwagError(f"{path}: sha256 {actual} differs from the expected {expected}")
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            examples.append(_parse(line, f"{path}:{lineno}"))
    if official and expected is None and len(examples) != HELLASWAG_VAL_EXAMPLES:
        raise HellaSwagError(
            f"{path}: {len(examples)} examples, the official validation file has "
            f"{HELLASWAG_VAL_EXAMPLES}; truncated or a different file"
        )
    return examples[:limit] if limit is not None else examples


def _parse(line: str, where: str) -> Example:
    try:
        item = json.loads(line)
        ctx, endings, label = item["ctx"], item["endings"], item["label"]
    except json.JSONDecodeError as exc:
        raise HellaSwagError(f"{where}: invalid JSON ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise HellaSwagError(f"{where}: missing field {exc}") from None
    if not isinstance(ctx, str) or not isinstance(endings, list) or len(endings) != 4 or not all(
        isinstance(e, str) for e in endings
    ):
        raise HellaSwagError(f"{where}: expected a string ctx and 4 string endings")
    if isinstance(label, str) and label.isdigit():  # the HF datasets copy stores "0".."3"
        label = int(label)
    if not isinstance(label, int) or not 0 <= label < 4:
        raise HellaSwagError(f"{where}: label must be 0-3, got {label!r}")
    return Example(ctx=ctx, endings=tuple(endings), label=label)


def render(example: Example, max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, T) tokens and (4, T) mask (1 on ending tokens) for one example, right-padded with 0.

    Padding sits after every real token, so with causal attention it cannot change any scored
    position. A row longer than `max_len` (the model's context) loses tokens from the left:
    the ending is always scored whole."""
    from model.tokenizer import encode_ordinary

    ctx = encode_ordinary(example.ctx)
    rows, masks = [], []
    for ending in example.endings:
        end = encode_ordinary(" " + ending)  # GPT-2 BPE folds the space into the first word
        row, mask = ctx + end, [0] * len(ctx) + [1] * len(end)
        if max_len is not None and len(row) > max_len:
            row, mask = row[-max_len:], mask[-max_len:]
        rows.append(row)
        masks.append(mask)
    width = max(len(r) for r in rows)
    tokens = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros(4, width, dtype=torch.long)
    for i, (row, m) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(m)] = torch.tensor(m)
    return tokens, mask


def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
    """Summed and mean cross-entropy over the ending tokens of each row: (4,), (4,)."""
    shift_logits = logits[:, :-1, :].float()  # position t predicts token t + 1
    shift_tokens, shift_mask = tokens[:, 1:], mask[:, 1:].float()
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_tokens.reshape(-1), reduction="none"
    ).view(shift_tokens.shape)
    summed = (losses * shift_mask).sum(dim=1)
    return summed, summed / shift_mask.sum(dim=1)


@torch.no_grad()
def evaluate_hellaswag(
    model: torch.nn.Module,
    path: str | os.PathLike,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    expected_sha256: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """{"acc", "acc_norm", "n"} over the first `limit` examples (all by default).
    `progress(done, total)`, if given, is called once with 0 at the start, then after each
    example this rank scores.

    Under torch.distributed rank r scores examples r, r + world, ... and the integer counts are
    summed, so every rank returns the single-process numbers."""
    examples = load_hellaswag(path, limit=limit, expected_sha256=expected_sha256)
    if not examples:
        raise HellaSwagError(f"{path}: no examples to score")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    # Any callable idx -> (logits, ...) scores; a GPT (possibly compiled) also bounds the rows.
    config = getattr(unwrap_model(model), "config", None)
    max_len = getattr(config, "block_size", None)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    was_training = model.training
    model.eval()
    device_type = torch.device(device).type
    counts = torch.zeros(3, dtype=torch.long, device=device)  # n, correct, correct_norm
    if progress is not None:
        progress(0, len(examples))
    try:
        for i, example in enumerate(examples):
            if i % world != rank:
                continue
            tokens, mask = render(example, max_len)
            tokens, mask = tokens.to(device), mask.to(device)
            with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                out = model(tokens)
            logits = out[0] if isinstance(out, tuple) else out
            summed, mean = ending_losses(logits, tokens, mask)
            counts[0] += 1
            counts[1] += int(summed.argmin().item() == example.label)
            counts[2] += int(mean.argmin().item() == example.label)
            if progress is not None:
                progress(i + 1, len(examples))
    finally:
        model.train(was_training)
    if world > 1:
        torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.SUM)
    n, correct, correct_norm = counts.tolist()
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": n}
