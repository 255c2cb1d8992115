"""Samples for fixed prompts and seeds: reproducible records and safe markdown."""

import torch

from evaluation.samples import samples_markdown, write_samples
from model import GPT, GPTConfig


def test_records_are_reproducible_and_independent_of_the_other_requests():
    model = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32), seed=0)
    records = write_samples(model, ["Hello", "The sky"], seeds=[0, 1], max_new_tokens=6)
    assert [(r["prompt"], r["seed"]) for r in records] == [
        ("Hello", 0), ("Hello", 1), ("The sky", 0), ("The sky", 1)
    ]
    assert all(isinstance(r["text"], str) for r in records)
    torch.manual_seed(99)
    assert write_samples(model, ["Hello", "The sky"], seeds=[0, 1], max_new_tokens=6) == records
    # One (prompt, seed) asked for alone gives the same text as within the full set.
    assert write_samples(model, ["The sky"], seeds=[1], max_new_tokens=6) == records[3:]


def test_markdown_quotes_model_text_without_interpreting_it():
    md = samples_markdown(
        [{"prompt": "Hi", "seed": 0, "text": " # not a heading\n<b>x</b> *y*"},
         {"prompt": "Empty", "seed": 3, "text": ""}],
        title="step 100",
    )
    assert md.startswith("### step 100\n")
    assert "**Hi** _(seed 0)_" in md
    assert ">  \\# not a heading\n> \\<b\\>x\\</b\\> \\*y\\*" in md
    assert "> _(empty: the model ended the text at once)_" in md
