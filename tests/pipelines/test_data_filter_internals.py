"""The speed-ups inside the filters against the plain definitions they replace: n-gram counting
against `collections.Counter`, the word splitter's regex guards against the regexes, and C4's
count of removed words against splitting the shortened page again."""

from __future__ import annotations

import random
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipelines import filters as F
from pipelines import words as W
from pipeline_helpers import SNAPSHOT_A, SNAPSHOT_B, prose, require_samples


def _reference_top_ngram_chars(words: list[str], n: int) -> int:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    gram, count = Counter(grams).most_common(1)[0]
    return len(" ".join(gram)) * count


def _reference_duplicate_chars(words: list[str], n: int) -> int:
    seen: set[tuple[str, ...]] = set()
    total, i = 0, 0
    while i <= len(words) - n:
        gram = tuple(words[i : i + n])
        if gram in seen:
            total += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return total


def _repetitive_words(rng: random.Random) -> list[str]:
    vocab = [rng.choice("abcdefg") * rng.randint(1, 4) for _ in range(rng.randint(2, 12))]
    words = [rng.choice(vocab) for _ in range(rng.randint(1, 300))]
    for _ in range(rng.randint(0, 4)):  # paste copies of a stretch elsewhere
        i, j = sorted(rng.sample(range(len(words) + 1), 2)) if len(words) > 1 else (0, 1)
        k = rng.randint(0, len(words))
        words[k:k] = words[i:j]
    return words


@pytest.mark.parametrize("seed", range(40))
def test_ngram_counts_equal_counter_definitions(seed):
    words = _repetitive_words(random.Random(seed))
    ng = F._Ngrams(words)
    for n in range(1, 11):
        if len(words) < n:
            continue
        assert F._top_ngram_chars(ng, n) == _reference_top_ngram_chars(words, n), n
        # Its contract is the comparison with the limit (it may stop early either way).
        exact = _reference_duplicate_chars(words, n)
        for limit in {0, max(0, exact - 1), exact, exact + 1, 2 * exact}:
            assert (F._all_duplicate_chars(ng, n, limit) > limit) == (exact > limit), (n, limit)


def _sample_chunks() -> list[str]:
    require_samples()
    chunks: set[str] = set()
    for snapshot in (SNAPSHOT_A, SNAPSHOT_B):
        for f in sorted(snapshot.glob("*.parquet")):
            for text in pq.read_table(f, columns=["text"])["text"].to_pylist():
                chunks.update((text or "").split())
    return sorted(chunks)


def test_splitter_guards_only_skip_regexes_that_cannot_match():
    tricky = ["16km", "3km/h", "it's", "IT'S", "cats’s", "5mph", "a...", "U.S.", "x1", "AB.", "°F.", "10%"]
    chunks = _sample_chunks() + tricky
    for s in chunks:
        if not W._may_end_in_suffix(s):
            assert W._SUFFIX.search(s, max(0, len(s) - 6)) is None, s
        if not W._MAY_HAVE_INFIX.search(s):
            assert W._INFIX.search(s) is None, s
        if "." not in s:
            assert W._URL.match(s) is None, s
        if "'" not in s and "’" not in s:
            assert W._CONTRACTION.match(s) is None, s


def test_split_words_is_the_same_with_a_cold_or_warm_cache():
    text = "Don't (panic), e.g. now... 16MB foo/bar [1] x.y=z " + prose(5)
    W._CACHE.clear()
    cold = W.split_words(text)
    assert W.split_words(text) == cold
    assert W.split_words(text.replace(" ", "\n")) == cold  # line breaks are whitespace too


def test_c4_counts_the_words_it_removes():
    texts = [
        prose(8) + "\nshort line\nsee javascript here please now\nA cited claim [1] holds [citation needed] here.",
        prose(8) + "\n" + "x" * 1200 + " long word line\nWe use cookies on this site, see the privacy policy.",
        prose(8),
    ]
    require_samples()
    texts += [t for f in sorted(SNAPSHOT_A.glob("*.parquet")) for t in pq.read_table(f, columns=["text"])["text"].to_pylist()][:150]
    checked = 0
    for text in texts:
        verdict, kept, removed = F._c4_quality(text, F.C4QualityConfig(), count_words=True)
        if verdict.keep:
            assert len(W.split_words(text)) - removed == len(W.split_words(kept))
            checked += 1
    assert checked >= 3
