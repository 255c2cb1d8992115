"""KV-cache generation: equal to full recompute and to transformers' greedy decoding; sampling
options; stopping; the padded vocabulary is never sampled."""

import pytest
import torch

from evaluation.generate import generate, sample_next, sample_text
from model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model():
    # Scaled-up weights make the logits spread out like a trained model's, so greedy decoding
    # does not hinge on near-ties between random logits.
    m = GPT(CONFIG, seed=3).eval()
    with torch.no_grad():
        m.transformer.wte.weight.mul_(5)
    return m


def _prompts():
    gen = torch.Generator().manual_seed(0)
    lengths = (5, 9, 5, 1)  # two of the same length share a batch; lone rows run on their own
    return [torch.randint(0, CONFIG.vocab_size, (n,), generator=gen).tolist() for n in lengths]


def test_greedy_with_cache_equals_full_recompute(model):
    prompts = _prompts()
    cached = generate(model, prompts, 30, temperature=0, stop_at_eot=False)
    full = generate(model, prompts, 30, temperature=0, stop_at_eot=False, use_cache=False)
    assert cached == full
    assert all(len(t) == 30 for t in cached)


def test_batched_rows_equal_rows_alone(model):
    prompts = _prompts()
    together = generate(model, prompts, 12, temperature=0, stop_at_eot=False)
    alone = [generate(model, [p], 12, temperature=0, stop_at_eot=False)[0] for p in prompts]
    assert together == alone


def _force_head(monkeypatch, head: str) -> None:
    """Greedy decoding's LM head: the fp16 screen (needs fbgemm, so only where the build has it)
    or the full fp32 product, which builds without fbgemm take; forced either way here."""
    from model import screened_argmax

    if head == "screened" and not screened_argmax.fbgemm_available():
        pytest.skip("this torch build has no fbgemm: only the full product can run here")
    monkeypatch.setattr(screened_argmax, "fbgemm_available", lambda: head == "screened")


@pytest.mark.parametrize("head", ["screened", "full"])
@pytest.mark.parametrize("lookahead", [0, 4])  # one token per pass, and prompt-lookup drafts
def test_greedy_equals_transformers_generate(model, tmp_path, lookahead, head, monkeypatch):
    transformers = pytest.importorskip("transformers")
    _force_head(monkeypatch, head)
    from model.hf_interop import export_hf

    export_hf(model, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    for prompt in _prompts()[:2]:
        ours = generate(model, [prompt], 40, temperature=0, stop_at_eot=False, lookahead=lookahead)[0]
        idx = torch.tensor([prompt])
        with torch.no_grad():
            theirs = hf.generate(
                idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=40,
                min_new_tokens=40, pad_token_id=CONFIG.vocab_size - 1,
            )[0, len(prompt):].tolist()
        assert ours == theirs


def test_fixed_seed_reproducible_and_seed_matters(model):
    prompts = _prompts()[:2]
    kw = dict(temperature=1.0, top_k=200, stop_at_eot=False)
    a = generate(model, prompts, 20, seed=7, **kw)
    torch.manual_seed(123)  # the global RNG must not matter when a seed is given
    b = generate(model, prompts, 20, seed=7, **kw)
    c = generate(model, prompts, 20, seed=8, **kw)
    assert a == b
    assert a != c


@pytest.mark.parametrize("options", [dict(top_k=1), dict(top_p=0.0), dict(top_k=1, top_p=0.5)])
def test_degenerate_sampling_equals_greedy(model, options):
    prompts = _prompts()
    greedy = generate(model, prompts, 20, temperature=0, stop_at_eot=False)
    sampled = generate(model, prompts, 20, temperature=1.3, seed=0, stop_at_eot=False, **options)
    assert sampled == greedy


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    drawn_k = {sample_next(logits, 1.0, top_k=2, generator=gen).item() for _ in range(300)}
    drawn_p = {sample_next(logits, 1.0, top_p=0.75, generator=gen).item() for _ in range(300)}
    drawn_all = {sample_next(logits, 1.0, generator=gen).item() for _ in range(300)}
    assert drawn_k == {0, 1}
    assert drawn_p == {0, 1}  # 0.5 < 0.75, 0.5 + 0.3 reaches it: tokens 0 and 1
    assert drawn_all == {0, 1, 2, 3}


def test_padded_vocabulary_is_never_sampled():
    m = GPT(CONFIG.replace(padded_vocab_size=50304), seed=1).eval()
    with torch.no_grad():
        # Were the padding rows multiplied out, these huge rows would win almost every draw.
        m.transformer.wte.weight[CONFIG.vocab_size:] = torch.randn(47, CONFIG.n_embd) * 1e3
    out = generate(m, [[1, 2, 3]], 60, temperature=2.0, seed=0, stop_at_eot=False)[0]
    assert len(out) == 60
    assert max(out) < CONFIG.vocab_size


def test_stops_at_end_of_text_without_returning_it(model):
    prompts = _prompts()[:2]
    free = generate(model, prompts, 30, temperature=0, stop_at_eot=False)
    stop_token = free[0][10]  # pretend this id is <|endoftext|>: row 0 must stop before it
    first = free[0].index(stop_token)
    stopped = generate(model, prompts, 30, temperature=0, eot_token=stop_token)
    assert stopped[0] == free[0][:first]
    expected_1 = free[1][: free[1].index(stop_token)] if stop_token in free[1] else free[1]
    assert stopped[1] == expected_1


def test_rejects_bad_requests(model):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate(model, [[1] * 60], 10)
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], 10)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 10, top_p=1.5)
    with pytest.raises(ValueError, match="outside"):
        generate(model, [[CONFIG.vocab_size]], 10)
    assert generate(model, [[1, 2]], 0) == [[]]


def test_sample_text_decodes_continuations(model):
    texts = sample_text(model, ["Hello, I'm a language model,", ""], max_new_tokens=8,
                        temperature=0, stop_at_eot=False)
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    again = sample_text(model, ["Hello, I'm a language model,", ""], max_new_tokens=8,
                        temperature=0, stop_at_eot=False)
    assert texts == again


# --- prompt-lookup greedy decoding (batch-1 greedy groups) ------------------------------------

from evaluation.lookup_decoding import find_draft  # noqa: E402


def test_find_draft_uses_the_latest_longest_match():
    assert find_draft([1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3], max_ngram=3, length=2) == [7, 1]
    assert find_draft([5, 6, 1, 2, 5, 1], max_ngram=3, length=4) == [2, 5, 1]  # only "1" matches
    assert find_draft([1, 2, 3], max_ngram=3, length=4) == []
    # The latest "4 4" is followed by one 4 only; an earlier one gives a longer draft.
    assert find_draft([4, 4, 4, 4], max_ngram=2, length=3) == [4, 4]
    assert find_draft([4, 4, 4, 4, 4, 4, 4], max_ngram=3, length=3) == [4, 4, 4]
    assert find_draft([5, 6, 1, 2, 5, 1], max_ngram=3, length=4, min_ngram=2) == []


@pytest.mark.parametrize("lookahead", [1, 4, 7])
def test_lookup_decoding_gives_plain_greedy_tokens(model, lookahead):
    gen = torch.Generator().manual_seed(5)
    motif = torch.randint(0, CONFIG.vocab_size, (4,), generator=gen).tolist()
    # Prompts that repeat themselves (drafts found, some accepted, some not) and one that
    # does not; several lengths so the cache capacity edge is reached.
    prompts = [motif * 4, _prompts()[1], [7, 7, 7, 7, 7]]
    for prompt in prompts:
        for n in (1, 2, 17, 40):
            plain = generate(model, [prompt], n, temperature=0, stop_at_eot=False, lookahead=0)
            fast = generate(model, [prompt], n, temperature=0, stop_at_eot=False, lookahead=lookahead)
            assert fast == plain, (prompt, n)
            assert len(fast[0]) == n


def test_lookup_decoding_stops_at_end_of_text(model):
    prompt = _prompts()[0]
    free = generate(model, [prompt], 30, temperature=0, stop_at_eot=False, lookahead=0)[0]
    stop_token = free[12]
    expected = free[: free.index(stop_token)]
    for lookahead in (0, 4):
        assert generate(model, [prompt], 30, temperature=0, eot_token=stop_token,
                        lookahead=lookahead)[0] == expected


def test_lookup_decoding_rewinds_the_cache_after_partly_wrong_drafts(model, monkeypatch):
    import evaluation.lookup_decoding as lookup

    prompt = _prompts()[1]
    plain = generate(model, [prompt], 30, temperature=0, stop_at_eot=False, lookahead=0)[0]
    accepted = []

    def oracle_with_errors(seq, max_ngram, length, min_ngram=1):
        # The true continuation with its third token wrong (its first, every third call):
        # drafts are accepted in part, and the rejected positions must be undone.
        done = len(seq) - len(prompt)
        draft = list(plain[done : done + length])
        wrong = 0 if len(accepted) % 3 == 0 else 2
        if len(draft) > wrong:
            draft[wrong] = (draft[wrong] + 1) % CONFIG.vocab_size
        accepted.append(min(wrong, len(draft)))
        return draft

    monkeypatch.setattr(lookup, "find_draft", oracle_with_errors)
    fast = generate(model, [prompt], 30, temperature=0, stop_at_eot=False, lookahead=4)[0]
    assert fast == plain
    assert 2 in accepted and 0 in accepted  # drafts partly and wholly rejected
