"""Greedy decoding with prompt-lookup drafts: several tokens per pass over the weights, the
same tokens as one-at-a-time greedy decoding.

    generate(model, [prompt], 128, temperature=0)               # used for batch-1 greedy groups
    generate(model, [prompt], 128, temperature=0, lookahead=0)  # plain one-token steps

Why: at batch 1 on a CPU a decoding step is bound by reading every weight once (the 124M model's
500 MB); a pass that checks k + 1 positions costs about the same as a pass for one. The draft is
free: the tokens that followed the latest earlier occurrence of the sequence's last n-gram (as
in "prompt lookup decoding", transformers' `prompt_lookup_num_tokens`). The model checks all
drafts in one forward; the longest prefix that matches its own greedy choices is kept, plus the
model's token after it, and the KV cache is rewound past the rejected positions. The output is
greedy decoding's by construction; only how many passes it takes depends on how repetitive the
text is (free-running text from a trained model repeats less than a random-weight model does).
"""

from __future__ import annotations

import torch

from model.decode_step import DecodeStep
from model.screened_argmax import head_argmax


MAX_PAUSE = 16  # longest pause in drafting after drafts keep failing (steps)


def find_draft(seq: list[int], max_ngram: int, length: int, min_ngram: int = 1) -> list[int]:
    """Up to `length` tokens that followed the latest earlier occurrence of seq's last n-gram
    (longest n first, min_ngram <= n <= max_ngram); [] when nothing matches."""
    for n in range(min(max_ngram, len(seq) - 1), min_ngram - 1, -1):
        tail, best = seq[-n:], []
        # Scan backwards: the most recent match is the best guess for what comes next, but one
        # right before the end has few tokens after it (in "x x x x" the latest "x x" is
        # followed by one x): take the latest match with a full-length continuation, else the
        # longest continuation seen.
        for start in range(len(seq) - n - 1, -1, -1):
            if seq[start : start + n] == tail:
                follow = seq[start + n : start + n + length]
                if len(follow) == length:
                    return follow
                if len(follow) > len(best):
                    best = follow
        if best:
            return best
    return []


def greedy_lookup(gpt, prompt: list[int], max_new_tokens: int, eot: int | None,
                  lookahead: int, max_ngram: int = 3, min_ngram: int = 2) -> list[int]:
    """Greedy continuation of one prompt (inference mode, eval mode: the caller's job).

    Wrong drafts are not free: a pass over k + 1 positions costs little more than one position
    for small k, but measurably more for k >= 4 on CPU (the matmuls leave the matrix-vector
    kernels; measured here, a 2-position pass of the 124M model costs ~1.4x a 1-position one).
    So a draft needs a match of at least `min_ngram` tokens; its length adapts (doubles up to
    `lookahead` after a fully accepted draft, falls back to what was accepted after a
    rejection); and after a draft whose first token is wrong, drafting pauses for 1, 2, 4 ...
    up to MAX_PAUSE steps, so text whose drafts keep failing costs about plain decoding."""
    device = gpt.transformer.wte.weight.device
    cache = gpt.new_cache(1, len(prompt) + max_new_tokens)
    step = DecodeStep(gpt)

    def pick(h):  # each position's argmax over the real vocabulary only, as GPT.forward
        return head_argmax(h, gpt.lm_head.weight, gpt.config.vocab_size)

    hidden = gpt.hidden_states(torch.tensor([prompt], device=device), cache)
    out = [int(pick(hidden[0, -1:])[0])]
    seq = prompt + out
    k, pause, backoff = lookahead, 0, 1
    while len(out) < max_new_tokens and not (eot is not None and out[-1] == eot):
        # Feed the last emitted token plus up to k drafts; the cache holds every position but
        # the last emitted token's, so pos + 1 + k stays within the cache's capacity.
        draft = []
        if pause:
            pause -= 1
        else:
            draft = find_draft(seq, max_ngram, min(k, max_new_tokens - len(out) - 1), min_ngram)
        start = cache.pos
        if draft:
            hidden = gpt.hidden_states(torch.tensor([[out[-1], *draft]], device=device), cache)
            choices = pick(hidden[0]).tolist()  # greedy after each input
        else:  # a plain step: the module-free one
            choices = step.greedy(torch.tensor([out[-1]], device=device), cache).tolist()
        accepted = 0
        while accepted < len(draft) and draft[accepted] == choices[accepted]:
            accepted += 1
        if draft:
            k = min(lookahead, 2 * k) if accepted == len(draft) else max(1, accepted)
            if accepted == 0:
                pause, backoff = backoff, min(2 * backoff, MAX_PAUSE)
            else:
                backoff = 1
        new = draft[:accepted] + [choices[accepted]]
        if eot is not None and eot in new:
            new = new[: new.index(eot) + 1]
        out.extend(new)
        seq.extend(new)
        # Keys/values of rejected drafts stay in the buffer but beyond pos, where the next
        # write overwrites them and no read reaches.
        cache.rewind(start + 1 + accepted)
    out = out[:max_new_tokens]
    if eot is not None and eot in out:
        out = out[: out.index(eot)]
    return out
