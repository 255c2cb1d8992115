"""Each FineWeb filter rule on hand-made documents, the word splitter, and the chain."""

from __future__ import annotations

import pytest

from pipelines import filters as F
from pipelines.words import count_sentences, split_words
from pipeline_helpers import doc, prose


def test_prose_passes_every_filter():
    text = prose()
    decision = F.apply_filters(doc(text))
    assert decision.keep, decision
    assert decision.text == text


def test_split_words_follows_spacy_shapes():
    assert split_words("Don't (panic), e.g. now... 16MB foo/bar linux-doc@vger.kernel.org cannot") == [
        "Do", "n't", "(", "panic", ")", ",", "e.g.", "now", "...", "16", "MB", "foo", "/", "bar",
        "linux-doc@vger.kernel.org", "can", "not",
    ]
    assert split_words("  \n ") == []


def test_count_sentences():
    assert count_sentences("One here. Two there! Three? four") == 4
    assert count_sentences("no end") == 1
    assert count_sentences("") == 0


@pytest.mark.parametrize(
    "text, rule",
    [
        ("same line here\n" * 30 + prose(5), "dup_line_frac"),
        ("\n\n".join(["A repeated paragraph with several words in it."] * 8 + [prose(3)]), "dup_para_frac"),
        ("buy cheap pills " * 200, "top_2_gram"),
    ],
)
def test_gopher_repetition_rules(text, rule):
    v = F.gopher_repetition(text)
    assert not v.keep and v.rule == rule, v


def test_gopher_repetition_counts_duplicated_ngrams():
    base = prose(30, seed=1)
    block = " ".join(base.split()[:40])
    text = base + "\n" + block + " " + block + " " + block
    v = F.gopher_repetition(text)
    assert not v.keep and v.rule.startswith(("duplicated_", "top_")), v


@pytest.mark.parametrize(
    "text, rule",
    [
        ("too short to be a page", "gopher_short_doc"),
        ("a " * 60 + "the and of", "gopher_below_avg_threshold"),
        (" ".join(["#tag"] * 30 + prose(3).split()), "gopher_too_many_hashes"),
        ("\n".join(f"- item number {i} of the list with the words" for i in range(60)), "gopher_too_many_bullets"),
        ("1234 5678 9012 " * 40 + prose(2), "gopher_below_alpha_threshold"),
        (" ".join(["quick brown fox jumps over lazy dog"] * 10), "gopher_enough_stop_words"),
    ],
)
def test_gopher_quality_rules(text, rule):
    v = F.gopher_quality(text)
    assert not v.keep and v.rule == rule, v


def test_c4_rules_and_line_removal():
    assert F.c4_quality(prose() + "\nLorem ipsum dolor sit amet, consectetur.")[0].rule == "lorem_ipsum"
    assert F.c4_quality(prose() + "\nif (x) { return the value; }")[0].rule == "curly_bracket"
    assert F.c4_quality("One sentence only here.\nAnd a second one here.")[0].rule == "too_few_sentences"
    text = prose(10) + "\nPlease enable JavaScript to view this page.\nRead our privacy policy for more.\nok"
    verdict, kept = F.c4_quality(text)
    assert verdict.keep
    assert "JavaScript" not in kept and "privacy policy" not in kept and not kept.endswith("ok")
    # FineWeb's setting: lines without terminal punctuation are kept
    assert "no final punctuation here at all" in F.c4_quality(prose(10) + "\nno final punctuation here at all")[1]


@pytest.mark.parametrize(
    "text, rule",
    [
        ("\n".join(f"heading number {i} without a stop" for i in range(20)), "line_punct_ratio"),
        ("\n".join(["Short line."] * 5 + [f"Tiny {i}." for i in range(20)]), "short_line_ratio"),
        (prose(20) + "\n" + "\n".join(["This exact line is repeated again and again."] * 5), "char_dup_ratio"),
        ("\n".join(f"Extraordinarily_{i}_magnificent constellations_{i}_everywhere" + ("." if i % 4 == 0 else "")
                   for i in range(24)), "list_ratio"),
    ],
)
def test_fineweb_quality_rules(text, rule):
    v = F.fineweb_quality(text)
    assert not v.keep and v.rule == rule, v


@pytest.mark.parametrize(
    "row, rule",
    [
        (doc(None), "null_text"),
        (doc(""), "empty_text"),
        (doc(" \n\t "), "whitespace_text"),
        (doc("x" * 1_000_001), "too_long"),
        (doc(prose(), language="de"), "language"),
        (doc(prose(), language_score=0.5), "language_score"),
        ({**doc(None), "input_error": "invalid_utf8: f.jsonl:3: byte 5"}, "invalid_utf8"),
    ],
)
def test_bad_documents_are_counted_rejections(row, rule):
    d = F.apply_filters(row)
    assert (d.keep, d.filter, d.rule) == (False, "input", rule)


def test_language_score_kept_at_threshold_and_ignored_when_null():
    assert F.apply_filters(doc(prose(), language_score=0.65, language="en")).keep
    assert F.apply_filters(doc(prose(), language_score=None, language=None)).keep


def test_chain_reports_first_rejecting_filter():
    d = F.apply_filters(doc("same line here\n" * 60))
    assert (d.filter, d.rule) == ("gopher_repetition", "dup_line_frac")


def test_filters_can_be_switched_off_and_configured():
    text = "\n".join(f"heading number {i} without a stop" for i in range(60))
    assert not F.apply_filters(doc(text)).keep
    cfg = F.FilterConfig(gopher_repetition=None, gopher_quality=None, c4_quality=None, fineweb_quality=None)
    assert F.apply_filters(doc(text), cfg).keep
    assert F.FilterConfig.from_dict(F.FilterConfig().to_dict()) == F.FilterConfig()


@pytest.mark.parametrize(
    "make",
    [
        lambda: F.GopherRepetitionConfig(dup_line_frac=1.5),
        lambda: F.GopherQualityConfig(min_doc_words=10, max_doc_words=5),
        lambda: F.FineWebQualityConfig(short_line_thr=-0.1),
        lambda: F.InputConfig(max_doc_chars=0),
    ],
)
def test_config_validation(make):
    with pytest.raises(ValueError):
        make()
