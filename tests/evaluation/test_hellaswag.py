"""HellaSwag scoring against a hand-computed result on a fixture in the official format.

The fixture is scored by a stub "model" whose logits are the same at every position: 0 for
every token except " the" (id 262), whose logit is 5. With V = 50257 tokens that makes
    CE(" the") = L - 5,  CE(any other token) = L,  L = ln(e^5 + V - 1) ~= 10.83,
so each ending's summed and mean loss follow from its token counts alone (shown per example).
"""

import json
import math

import pytest
import torch

from evaluation.hellaswag import (
    HellaSwagError,
    download_hellaswag,
    ending_losses,
    evaluate_hellaswag,
    load_hellaswag,
    render,
)
from model import GPT, GPTConfig

THE, V, BOOST = 262, 50257, 5.0
L = math.log(math.exp(BOOST) + V - 1)

# ending token counts: "the the the the" = 4 x " the"; "dog", "mat", "the" = 1 token;
# "cat sat", "the dog" = 2 tokens (the latter one " the").
FIXTURE = [
    # sums [4L-20, L, 2L, 2L-5] -> acc picks 1 (wrong); means [L-5, L, L, L-2.5] -> 0 (right)
    dict(ctx="A man sits on a roof.", endings=["the the the the", "dog", "cat sat", "the dog"], label=0),
    # sums [L, L-5, 2L, L] -> 1 (right); means [L, L-5, L, L] -> 1 (right)
    dict(ctx="She opens the door and", endings=["dog", "the", "cat sat", "mat"], label=1),
    # sums [2L, 4L-20, L, 2L-5] -> 2 (right); means [L, L-5, L, L-2.5] -> 1 (wrong)
    dict(ctx="The dog", endings=["cat sat", "the the the the", "dog", "the dog"], label=2),
    # sums [2L, 2L-5, 4L-20, L] -> 3 (wrong); means [L, L-2.5, L-5, L] -> 2 (right)
    dict(ctx="Then", endings=["cat sat", "the dog", "the the the the", "dog"], label=2),
]
EXPECTED = {"acc": 2 / 4, "acc_norm": 3 / 4, "n": 4}


class BoostTheStub(torch.nn.Module):
    """Stands in for a GPT: same logits at every position, returns (logits, None)."""

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, V)
        logits[..., THE] = BOOST
        return logits, None


def _write(path, items):
    with open(path, "w") as f:
        for i, item in enumerate(items):
            full = {"ind": i, "activity_label": "test", "ctx_a": item["ctx"], "ctx_b": "",
                    "split": "val", "split_type": "indomain", "source_id": f"t~{i}", **item}
            f.write(json.dumps(full) + "\n")
    return path


def test_stub_losses_and_accuracies_match_hand_computation(tmp_path):
    path = _write(tmp_path / "fixture.jsonl", FIXTURE)
    tokens, mask = render(load_hellaswag(path)[0])
    assert mask.sum(dim=1).tolist() == [4, 1, 2, 2]  # ending tokens, as counted above
    summed, mean = ending_losses(BoostTheStub()(tokens)[0], tokens, mask)
    assert summed.tolist() == pytest.approx([4 * L - 20, L, 2 * L, 2 * L - 5], abs=1e-4)
    assert mean.tolist() == pytest.approx([L - 5, L, L, L - 2.5], abs=1e-4)
    assert evaluate_hellaswag(BoostTheStub(), path) == EXPECTED
    assert evaluate_hellaswag(BoostTheStub(), path, limit=1) == {"acc": 0.0, "acc_norm": 1.0, "n": 1}


def test_real_model_twice_identical_and_padding_changes_nothing(tmp_path):
    path = _write(tmp_path / "fixture.jsonl", FIXTURE)
    model = GPT(GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=32), seed=0)
    first = evaluate_hellaswag(model, path)
    assert evaluate_hellaswag(model, path) == first
    assert first["n"] == 4
    # Right-padding a row (to the longest ending) must not change its loss: score each
    # ending alone, unpadded, and compare.
    example = load_hellaswag(path)[1]
    tokens, mask = render(example)
    with torch.no_grad():
        summed, _ = ending_losses(model(tokens)[0], tokens, mask)
        for i in range(4):
            n = int(mask[i].nonzero().max()) + 1
            alone, _ = ending_losses(model(tokens[i : i + 1, :n])[0], tokens[i : i + 1, :n], mask[i : i + 1, :n])
            assert alone.item() == pytest.approx(summed[i].item(), abs=1e-4)


def test_rows_longer_than_the_context_keep_the_whole_ending(tmp_path):
    example = load_hellaswag(_write(tmp_path / "f.jsonl", FIXTURE))[0]
    tokens, mask = render(example, max_len=5)
    assert tokens.shape[1] == 5
    assert mask.sum(dim=1).tolist() == [4, 1, 2, 2]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"ctx": "a", "endings": ["a", "b", "c", "d"]}), "missing field"),
        (json.dumps({"ctx": "a", "endings": ["a", "b"], "label": 0}), "expected a string ctx and 4 string endings"),
        (json.dumps({"ctx": "a", "endings": ["a", "b", "c", "d"], "label": 4}), "label must be 0-3"),
    ],
)
def test_malformed_lines_are_reported_with_their_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"ctx": "a", "endings": ["a", "b", "c", "d"], "label": 0}) + "\n" + line + "\n")
    with pytest.raises(HellaSwagError, match=f"bad.jsonl:2: {message}"):
        load_hellaswag(path)


def test_checksum_and_official_size_are_verified(tmp_path):
    path = _write(tmp_path / "fixture.jsonl", FIXTURE)
    with pytest.raises(HellaSwagError, match="sha256"):
        load_hellaswag(path, expected_sha256="0" * 64)
    import hashlib

    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(load_hellaswag(path, expected_sha256=good)) == 4
    # A file under the official name must hold all 10,042 examples.
    official = _write(tmp_path / "hellaswag_val.jsonl", FIXTURE)
    with pytest.raises(HellaSwagError, match="10042"):
        load_hellaswag(official)
    with pytest.raises(HellaSwagError, match="not found"):
        load_hellaswag(tmp_path / "missing.jsonl")


def test_download_without_network_is_a_clear_error(tmp_path):
    # Port 9 (discard) on localhost: connection refused, the same path as an unreachable host.
    with pytest.raises(HellaSwagError, match="cannot download .* pass its path instead"):
        download_hellaswag(tmp_path / "hellaswag_val.jsonl", url="http://127.0.0.1:9/x", timeout=5)
    assert not list(tmp_path.iterdir())  # no partial file left behind
