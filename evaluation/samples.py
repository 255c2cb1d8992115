"""A handful of samples for fixed prompts and seeds, as records and as markdown.

    from evaluation.samples import write_samples, samples_markdown
    records = write_samples(model, ["Hello, I'm a language model,"], seeds=[0, 1])
    print(samples_markdown(records))

Each (prompt, seed) pair is generated on its own with a private generator, so one sample never
depends on which other prompts or seeds were asked for: the same checkpoint always writes the
same text, and samples of two checkpoints line up for reading side by side.
"""

from __future__ import annotations

from typing import Sequence

import torch

from evaluation.generate import sample_text

DEFAULT_PROMPTS = (
    "Hello, I'm a language model,",
    "The meaning of life is",
    "In a shocking finding, scientists discovered",
)
DEFAULT_SEEDS = (0, 1)


def write_samples(
    model: torch.nn.Module,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float | None = None,
) -> list[dict]:
    """[{"prompt", "seed", "text"}] for every prompt x seed, prompts outer, seeds inner."""
    records = []
    for prompt in prompts:
        for seed in seeds:
            (text,) = sample_text(
                model, [prompt], max_new_tokens=max_new_tokens, temperature=temperature,
                top_k=top_k, top_p=top_p, seed=seed,
            )
            records.append({"prompt": prompt, "seed": seed, "text": text})
    return records


def samples_markdown(records: Sequence[dict], title: str | None = None) -> str:
    """Markdown for Dagster metadata (MetadataValue.md) or an MLflow text artifact: the prompt
    in bold, the continuation as a quote (its own markdown is not interpreted)."""
    lines = [f"### {title}", ""] if title else []
    for r in records:
        lines.append(f"**{_escape(r['prompt'])}** _(seed {r['seed']})_")
        lines.append("")
        body = _escape(r["text"]).strip("\n") or "_(empty: the model ended the text at once)_"
        lines.extend("> " + line if line else ">" for line in body.split("\n"))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _escape(text: str) -> str:
    # Model output is arbitrary web text: keep it from becoming headings, HTML, links or emphasis.
    for ch in "\\`*_{}[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text
