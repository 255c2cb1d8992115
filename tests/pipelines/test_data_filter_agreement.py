"""Our filters against datatrove 0.10.1's (same thresholds, spaCy installed for its word
tokenizer) on both docs-sample snapshots: at least 99% of keep/reject decisions agree, per filter.

Where we differ by design, a test below names the case and shows both decisions.
Needs: pip install "datatrove==0.10.1" spacy
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pyarrow.parquet as pq
import pytest

from pipelines import filters as ours
from pipeline_helpers import SNAPSHOT_A, SNAPSHOT_B, require_samples

pytest.importorskip("datatrove", reason="datatrove==0.10.1 is the reference these tests compare with")
pytest.importorskip("spacy", reason="datatrove's English word tokenizer needs spacy")

FILTERS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


def _datatrove_filters():
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    return {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4_quality": C4QualityFilter(filter_no_terminal_punct=False),  # FineWeb's setting
        "fineweb_quality": FineWebQualityFilter(),
    }


def _keep(result) -> bool:
    return result is True or (isinstance(result, tuple) and bool(result[0]))


def _texts(snapshot) -> list[str]:
    return [t for f in sorted(snapshot.glob("*.parquet")) for t in pq.read_table(f, columns=["text"])["text"].to_pylist()]


def _datatrove_decisions(texts: list[str]) -> dict[str, list[bool]]:
    import functools

    from datatrove.data import Document
    from datatrove.pipeline.filters import fineweb_quality_filter, gopher_quality_filter, gopher_repetition_filter

    # Three of the filters split the same text into words with spaCy; caching that call (the
    # filters only read the list) changes no decision and saves a third of the time.
    cached = functools.lru_cache(maxsize=4)(gopher_quality_filter.split_into_words)
    for module in (fineweb_quality_filter, gopher_quality_filter, gopher_repetition_filter):
        module.split_into_words = cached

    filters = _datatrove_filters()
    out: dict[str, list[bool]] = {name: [] for name in filters}
    for i, t in enumerate(texts):  # document-major, so the cache sees each text three times in a row
        for name, f in filters.items():
            out[name].append(_keep(f.filter(Document(text=t, id=str(i)))))
    return out


def _our_decisions(snapshot) -> dict[str, list[bool]]:
    texts = _texts(snapshot)
    return {
        "gopher_repetition": [ours.gopher_repetition(t).keep for t in texts],
        "gopher_quality": [ours.gopher_quality(t).keep for t in texts],
        "c4_quality": [ours.c4_quality(t)[0].keep for t in texts],
        "fineweb_quality": [ours.fineweb_quality(t).keep for t in texts],
    }


@pytest.fixture(scope="module")
def reference():
    require_samples()
    # datatrove takes minutes here: every other document goes to a second process
    snapshots = (SNAPSHOT_A, SNAPSHOT_B)
    texts = [(s.name, t) for s in snapshots for t in _texts(s)]
    with ProcessPoolExecutor(2) as pool:
        halves = list(pool.map(_datatrove_decisions, [[t for _, t in texts[i::2]] for i in (0, 1)]))
    merged: dict[str, dict[str, list[bool]]] = {s.name: {name: [] for name in FILTERS} for s in snapshots}
    for i, (snap, _) in enumerate(texts):
        for name in FILTERS:
            merged[snap][name].append(halves[i % 2][name][i // 2])
    return merged


@pytest.mark.slow
@pytest.mark.parametrize("snapshot", [SNAPSHOT_A, SNAPSHOT_B], ids=["snapshot-a", "snapshot-b"])
def test_agreement_per_filter_at_least_99_percent(reference, snapshot):
    theirs = reference[snapshot.name]
    mine = _our_decisions(snapshot)
    report = {}
    for name in FILTERS:
        agree = sum(a == b for a, b in zip(theirs[name], mine[name]))
        report[name] = agree / len(mine[name])
        # each filter rejects something here, so agreement is not a trivial "keep everything"
        assert 0 < sum(mine[name]) < len(mine[name])
    assert all(v >= 0.99 for v in report.values()), report


# --- where we differ by design -----------------------------------------------------------------


def test_by_design_repeated_ngrams_are_word_tuples_not_glued_strings():
    """datatrove joins an n-gram's words without spaces before comparing, so "ab c" and "a bc"
    count as the same 2-gram; we compare the words themselves."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

    words = ["ab", "c", "a", "bc"] * 1
    assert find_all_duplicate(words, 2) == 3  # datatrove: "a"+"bc" repeats "ab"+"c"
    ng = ours._Ngrams(words)
    assert ours._all_duplicate_chars(ng, 2, limit=-1) == 0  # ours: different words, no repeat


def test_by_design_terminal_punctuation_is_unicodes_sentence_terminal_set():
    """FineWeb's line-punctuation rule: we use Unicode's Sentence_Terminal property; datatrove
    ships an older hand-copied list without, e.g., U+2E61 (added in Unicode 16)."""
    from datatrove.utils.text import TERMINAL_PUNCTUATION

    assert "\u2e61" not in TERMINAL_PUNCTUATION
    assert ours._TERMINAL_CHAR.fullmatch("\u2e61")
    assert all(ours._TERMINAL_CHAR.fullmatch(c) for c in ".!?。")
