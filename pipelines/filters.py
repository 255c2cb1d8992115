"""FineWeb's heuristic quality filters, written for speed: each is a plain function from a
document's text to a `Verdict` (keep, or reject with the rule that fired).

The recipe is datatrove's `examples/fineweb.py`, in its order: Gopher repetition, Gopher quality,
C4 quality (FineWeb's settings: the terminal-punctuation line rule off), FineWeb quality, plus
FineWeb's `language_score >= 0.65` where the column is filled. Thresholds default to datatrove
0.10.1's. Words are split once per document by `pipelines.words` and shared by every filter
(datatrove runs spaCy three times per document), and n-gram repeats are counted with numpy.

Known differences by design (named in tests/pipelines/test_filter_agreement.py):
- words come from our spaCy-like splitter, not spaCy: decisions can differ for documents that sit
  on a threshold;
- terminal punctuation is Unicode's Sentence_Terminal set (datatrove's list is an older copy);
- Gopher's duplicated n-grams are compared as word tuples, not as words glued without spaces
  (datatrove counts "ab"+"c" and "a"+"bc" as the same 2-gram).

    python -m pipelines.filters path/to/file.txt   # prints the verdict of every filter
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import regex

from pipelines.words import count_sentences, split_words


class Verdict(NamedTuple):
    """A filter's decision: `keep`, else the `rule` that fired and a short `detail`."""

    keep: bool
    rule: str | None = None
    detail: str | None = None


KEEP = Verdict(True)


def _reject(rule: str, value: float | int | str, threshold: float | int | str = "") -> Verdict:
    if isinstance(value, float):
        value = f"{value:.4f}"
    return Verdict(False, rule, f"{value} vs {threshold}" if threshold != "" else str(value))


# ---------------------------------------------------------------------------------------------
# Configs


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class GopherRepetitionConfig:
    """Gopher (Rae et al. 2021, table A1) repetition thresholds; None switches a rule off."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10),
    )

    def __post_init__(self) -> None:
        for name in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            _check_fraction(name, getattr(self, name))
        for n, frac in (*self.top_n_grams, *self.dup_n_grams):
            if n < 1:
                raise ValueError(f"n-gram size must be >= 1, got {n}")
            _check_fraction(f"{n}-gram fraction", frac)


@dataclass(frozen=True)
class GopherQualityConfig:
    """Gopher quality thresholds (datatrove's defaults, as FineWeb used them)."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")

    def __post_init__(self) -> None:
        if self.min_doc_words and self.max_doc_words and self.min_doc_words > self.max_doc_words:
            raise ValueError("min_doc_words must not exceed max_doc_words")
        for name in ("max_bullet_lines_ratio", "max_ellipsis_lines_ratio", "max_non_alpha_words_ratio"):
            _check_fraction(name, getattr(self, name))


@dataclass(frozen=True)
class C4QualityConfig:
    """C4's line and page rules. FineWeb turned `filter_no_terminal_punct` off."""

    filter_no_terminal_punct: bool = False
    min_num_sentences: int = 5  # -1 disables
    min_words_per_line: int = 3  # -1 disables
    max_word_length: int = 1000  # -1 disables
    remove_citations: bool = True
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@dataclass(frozen=True)
class FineWebQualityConfig:
    """The FineWeb authors' own rules (datatrove `FineWebQualityFilter` defaults)."""

    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3

    def __post_init__(self) -> None:
        for name in ("line_punct_thr", "short_line_thr", "char_duplicates_ratio"):
            _check_fraction(name, getattr(self, name))


@dataclass(frozen=True)
class InputConfig:
    """Checks every document passes before the quality filters (bad input is rejected, counted)."""

    # A 10 MB page is not prose; FineWeb's longest documents are far below 1M characters.
    max_doc_chars: int = 1_000_000
    min_language_score: float | None = 0.65  # FineWeb's threshold; ignored where null
    languages: tuple[str, ...] | None = ("en",)  # ignored where the column is null

    def __post_init__(self) -> None:
        if self.max_doc_chars < 1:
            raise ValueError(f"max_doc_chars must be >= 1, got {self.max_doc_chars}")
        _check_fraction("min_language_score", self.min_language_score)


@dataclass(frozen=True)
class FilterConfig:
    """Which filters run, in FineWeb's order, and their thresholds."""

    input: InputConfig = field(default_factory=InputConfig)
    gopher_repetition: GopherRepetitionConfig | None = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig | None = field(default_factory=GopherQualityConfig)
    c4_quality: C4QualityConfig | None = field(default_factory=C4QualityConfig)
    fineweb_quality: FineWebQualityConfig | None = field(default_factory=FineWebQualityConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FilterConfig":
        def build(kind, value):
            if value is None:
                return None
            value = dict(value)
            for k, v in value.items():  # JSON turns tuples into lists
                if isinstance(v, list):
                    value[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            return kind(**value)

        return cls(
            input=build(InputConfig, d.get("input", {})),
            gopher_repetition=build(GopherRepetitionConfig, d.get("gopher_repetition", {})),
            gopher_quality=build(GopherQualityConfig, d.get("gopher_quality", {})),
            c4_quality=build(C4QualityConfig, d.get("c4_quality", {})),
            fineweb_quality=build(FineWebQualityConfig, d.get("fineweb_quality", {})),
        )


# ---------------------------------------------------------------------------------------------
# Helpers

_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")


def _split_lines(text: str) -> list[str]:
    """`re.split(r"\\n+", text)` (what datatrove does), at the speed of `str.split`: runs of
    newlines leave empty strings behind, dropped except at either end."""
    parts = text.split("\n")
    if len(parts) < 3:
        return parts
    inner = list(filter(None, parts[1:-1]))
    return [parts[0], *inner, parts[-1]]


# Characters that make a "word" a symbol (datatrove's PUNCTUATION plus terminal punctuation).
_SYMBOL_CHARS = (
    "!/—”:％１〈&(、━\\\\【#%「」，】；+^\\]~“《„';’{|∶´\\[=\\-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    "\\x00-\\x08\\x0b\\x0c\\x0d-\\x1f\\x7f-\\x9f\\p{Sentence_Terminal}"
)
_SYMBOL_LINES = regex.compile(f"^[{_SYMBOL_CHARS}]+$", regex.MULTILINE)
_NO_ALPHA_LINES = regex.compile(r"^[^\p{L}\n]+$", regex.MULTILINE)
_TERMINAL_CHAR = regex.compile(r"\p{Sentence_Terminal}")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_C4_END_PUNCT = (".", "?", "!", '"', "'")


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in them), first occurrences not counted."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


class _Ngrams:
    """Word n-grams grouped exactly with numpy: words get dense ids in order of first appearance,
    and the n-grams at level n are keyed by (group of the (n-1)-gram, id of the n-th word).

    Only an n-gram whose (n-1)-gram prefix repeats can repeat, so level n groups just the
    positions that sat in a repeated group at level n-1: on prose that is a small and
    shrinking subset, which is where most of the speed over datatrove's Counter comes from."""

    def __init__(self, words: list[str]):
        # dict.fromkeys keeps first-appearance order and runs in C; so does the id lookup.
        index = {w: i for i, w in enumerate(dict.fromkeys(words))}
        self.ids = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
        self.n_distinct = len(index)
        self.csum = np.concatenate(([0], np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)))))
        self.n_words = len(words)
        self._levels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def level(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate positions in increasing order, group of each, size of each group); every
        n-gram occurring more than once has all its positions among the candidates."""
        if n in self._levels:
            return self._levels[n]
        m = max(0, self.n_words - n + 1)
        if n == 1:  # the ids are the groups already: no sort
            pos, inverse = np.arange(m), self.ids
            counts = np.bincount(inverse, minlength=self.n_distinct)
        else:
            prev, prev_inverse, prev_counts = self.level(n - 1)
            keep = (prev_counts[prev_inverse] >= 2) & (prev < m)
            pos = prev[keep]
            # Exact key: fewer than n_words groups times n_distinct ids fits in int64.
            keys = prev_inverse[keep] * self.n_distinct + self.ids[pos + n - 1]
            if pos.size:
                _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
                inverse = inverse.ravel()
            else:
                inverse = counts = np.empty(0, dtype=np.int64)
        self._levels[n] = (pos, inverse, counts)
        return self._levels[n]

    def chars(self, n: int, pos) -> np.ndarray:
        """Characters of the words of the n-grams at `pos` (without separators)."""
        return self.csum[pos + n] - self.csum[pos]


def _top_ngram_chars(ng: _Ngrams, n: int) -> int:
    """Characters of the most frequent n-gram (joined with spaces) times its count; ties go to
    the n-gram seen first, as `Counter.most_common(1)` does."""
    pos, inverse, counts = ng.level(n)
    if pos.size and counts.max() >= 2:
        best = int(counts.max())
        where = int(pos[counts[inverse] == best][0])  # positions increase: the first one seen
    else:  # every n-gram is unique: the first one wins the tie
        best, where = 1, 0
    return int((ng.chars(n, where) + n - 1) * best)


def _all_duplicate_chars(ng: _Ngrams, n: int, limit: float) -> int:
    """Characters covered by repeated n-grams, scanning left to right and jumping over a repeat
    (Gopher's definition). Only the comparison with `limit` matters, so it returns early: with
    a cheap upper bound when that is below `limit`, or as soon as the count passes `limit`."""
    pos, inverse, counts = ng.level(n)
    if not pos.size:
        return 0
    # Every occurrence but a group's first, ignoring overlaps: an upper bound of the count.
    group_chars = np.zeros(counts.size, dtype=np.int64)
    group_chars[inverse] = ng.chars(n, pos)  # equal for every member of a group
    bound = int(((counts - 1) * group_chars).sum())
    if bound <= limit:  # every counted repeat is one of these: the bound is enough
        return bound
    # Positions outside `pos` are unique n-grams: visiting them never counts, so walk `pos` only.
    chars = ng.chars(n, pos).tolist()
    seen: set[int] = set()
    total, nxt = 0, 0
    for p, g, c in zip(pos.tolist(), inverse.tolist(), chars):
        if p < nxt:  # jumped over by the previous repeat
            continue
        if g in seen:
            total += c
            if total > limit:
                return total
            nxt = p + n
        else:
            seen.add(g)
            nxt = p + 1
    return total


# ---------------------------------------------------------------------------------------------
# Filters


def gopher_repetition(text: str, cfg: GopherRepetitionConfig = GopherRepetitionConfig(), words: list[str] | None = None) -> Verdict:
    """Reject pages made of repeated lines, paragraphs or n-grams."""
    v = gopher_repeated_lines(text, cfg)
    if not v.keep:
        return v
    return gopher_repeated_ngrams(text, cfg, split_words(text) if words is None else words)


def gopher_repeated_lines(text: str, cfg: GopherRepetitionConfig = GopherRepetitionConfig()) -> Verdict:
    """Gopher repetition's paragraph and line rules: they need no words, so a page they reject
    is never split into words."""
    if not text:
        return _reject("empty", 0)
    n_chars = len(text)
    paragraphs = _PARAGRAPH_SPLIT.split(text.strip())
    n_dup, dup_chars = _find_duplicates(paragraphs)
    if cfg.dup_para_frac and n_dup / len(paragraphs) > cfg.dup_para_frac:
        return _reject("dup_para_frac", n_dup / len(paragraphs), cfg.dup_para_frac)
    if cfg.dup_para_char_frac and dup_chars / n_chars > cfg.dup_para_char_frac:
        return _reject("dup_para_char_frac", dup_chars / n_chars, cfg.dup_para_char_frac)
    lines = _split_lines(text)
    n_dup, dup_chars = _find_duplicates(lines)
    if cfg.dup_line_frac and n_dup / len(lines) > cfg.dup_line_frac:
        return _reject("dup_line_frac", n_dup / len(lines), cfg.dup_line_frac)
    if cfg.dup_line_char_frac and dup_chars / n_chars > cfg.dup_line_char_frac:
        return _reject("dup_line_char_frac", dup_chars / n_chars, cfg.dup_line_char_frac)
    return KEEP


def gopher_repeated_ngrams(text: str, cfg: GopherRepetitionConfig, words: list[str]) -> Verdict:
    """Gopher repetition's n-gram rules over the page's `words`."""
    n_chars = len(text)
    ng = _Ngrams(words)
    for n, frac in cfg.top_n_grams:
        if len(words) < n:
            continue
        ratio = _top_ngram_chars(ng, n) / n_chars
        if ratio > frac:
            return _reject(f"top_{n}_gram", ratio, frac)
    for n, frac in cfg.dup_n_grams:
        if len(words) < n:
            continue
        ratio = _all_duplicate_chars(ng, n, frac * n_chars) / n_chars
        if ratio > frac:
            return _reject(f"duplicated_{n}_n_grams", ratio, frac)
    return KEEP


def gopher_quality(text: str, cfg: GopherQualityConfig = GopherQualityConfig(), words: list[str] | None = None) -> Verdict:
    """Reject pages whose words do not look like prose (length, symbols, bullets, stop words)."""
    words = split_words(text) if words is None else words
    n_words = len(words)
    # One regex pass over the words, one per line, instead of a Python test per word.
    joined = "\n".join(words)
    symbol_words = _SYMBOL_LINES.findall(joined)
    n_content = n_words - len(symbol_words)
    if cfg.min_doc_words and n_content < cfg.min_doc_words:
        return _reject("gopher_short_doc", n_content, cfg.min_doc_words)
    if cfg.max_doc_words and n_content > cfg.max_doc_words:
        return _reject("gopher_long_doc", n_content, cfg.max_doc_words)
    content_chars = len(joined) - (n_words - 1) - sum(map(len, symbol_words))
    avg = content_chars / n_content if n_content else math.nan
    if cfg.min_avg_word_length and avg < cfg.min_avg_word_length:
        return _reject("gopher_below_avg_threshold", avg, cfg.min_avg_word_length)
    if cfg.max_avg_word_length and avg > cfg.max_avg_word_length:
        return _reject("gopher_above_avg_threshold", avg, cfg.max_avg_word_length)
    if n_words == 0:
        return _reject("gopher_short_doc", 0, cfg.min_doc_words or 0)
    if cfg.max_symbol_word_ratio:
        ratio = text.count("#") / n_words
        if ratio > cfg.max_symbol_word_ratio:
            return _reject("gopher_too_many_hashes", ratio, cfg.max_symbol_word_ratio)
        ratio = (text.count("...") + text.count("…")) / n_words
        if ratio > cfg.max_symbol_word_ratio:
            return _reject("gopher_too_many_ellipsis", ratio, cfg.max_symbol_word_ratio)
    lines = text.splitlines()
    if lines and cfg.max_bullet_lines_ratio:
        ratio = sum(1 for s in lines if s.lstrip().startswith(("•", "-"))) / len(lines)
        if ratio > cfg.max_bullet_lines_ratio:
            return _reject("gopher_too_many_bullets", ratio, cfg.max_bullet_lines_ratio)
    if lines and cfg.max_ellipsis_lines_ratio:
        ratio = sum(1 for s in lines if s.rstrip().endswith(("...", "…"))) / len(lines)
        if ratio > cfg.max_ellipsis_lines_ratio:
            return _reject("gopher_too_many_end_ellipsis", ratio, cfg.max_ellipsis_lines_ratio)
    if cfg.max_non_alpha_words_ratio:
        ratio = (n_words - len(_NO_ALPHA_LINES.findall(joined))) / n_words
        if ratio < cfg.max_non_alpha_words_ratio:
            return _reject("gopher_below_alpha_threshold", ratio, cfg.max_non_alpha_words_ratio)
    if cfg.min_stop_words:
        found = len(set(cfg.stop_words).intersection(words))
        if found < cfg.min_stop_words:
            return _reject("gopher_enough_stop_words", found, cfg.min_stop_words)
    return KEEP


def c4_quality(text: str, cfg: C4QualityConfig = C4QualityConfig()) -> tuple[Verdict, str]:
    """C4's rules. Returns the verdict and the text with C4's dropped lines removed (FineWeb
    kept that shortened text; the later filters see it)."""
    verdict, kept, _ = _c4_quality(text, cfg, count_words=False)
    return verdict, kept


def _c4_quality(text: str, cfg: C4QualityConfig, count_words: bool) -> tuple[Verdict, str, int]:
    """`c4_quality`, also returning (when `count_words`) how many fewer words the kept text has
    than `text`: the words of the dropped lines and of removed citations. Counting only what
    was removed spares splitting the shortened page into words again."""
    n_sentences = removed_words = 0
    kept: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if cfg.max_word_length != -1 and any(len(w) > cfg.max_word_length for w in words):
            removed_words += count_words and len(split_words(line))
            continue
        if cfg.remove_citations and "[" in line:
            cited, line = line, _CITATION.sub("", line)
            if count_words and line != cited:
                removed_words += len(split_words(cited)) - len(split_words(line))
        if (cfg.filter_no_terminal_punct and (not line.endswith(_C4_END_PUNCT) or line.endswith("..."))) or (
            len(words) < cfg.min_words_per_line
        ):
            removed_words += count_words and len(split_words(line))
            continue
        lower = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            return _reject("lorem_ipsum", "lorem ipsum"), text, 0
        if cfg.filter_javascript and "javascript" in lower:
            removed_words += count_words and len(split_words(line))
            continue
        if cfg.filter_curly_bracket and "{" in line:
            return _reject("curly_bracket", "{"), text, 0
        if cfg.filter_policy and any(p in lower for p in _POLICY):
            removed_words += count_words and len(split_words(line))
            continue
        # Counting stops once the page has enough: the rest only needs the page-level rules.
        if cfg.min_num_sentences != -1 and n_sentences < cfg.min_num_sentences:
            n_sentences += count_sentences(line)
        kept.append(line)
    if n_sentences < cfg.min_num_sentences:
        return _reject("too_few_sentences", n_sentences, cfg.min_num_sentences), text, 0
    return KEEP, "\n".join(kept).strip(), removed_words


def fineweb_quality(text: str, cfg: FineWebQualityConfig = FineWebQualityConfig(), n_words: int | None = None) -> Verdict:
    """FineWeb's rules: too few lines ending in punctuation, too many short lines, duplicated
    lines, list-like pages."""
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return _reject("empty", 0)
    ratio = sum(1 for line in lines if _TERMINAL_CHAR.fullmatch(line[-1])) / len(lines)
    if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
        return _reject("line_punct_ratio", ratio, cfg.line_punct_thr)
    ratio = sum(1 for line in lines if len(line) <= cfg.short_line_length) / len(lines)
    if ratio > cfg.short_line_thr:
        return _reject("short_line_ratio", ratio, cfg.short_line_thr)
    ratio = _find_duplicates(lines)[1] / max(1, len(text) - text.count("\n"))
    if ratio > cfg.char_duplicates_ratio:
        return _reject("char_dup_ratio", ratio, cfg.char_duplicates_ratio)
    n_words = len(split_words(text)) if n_words is None else n_words
    ratio = text.count("\n") / max(1, n_words)
    if ratio > cfg.new_line_ratio:
        return _reject("list_ratio", ratio, cfg.new_line_ratio)
    return KEEP


def input_check(doc: dict, cfg: InputConfig = InputConfig()) -> Verdict:
    """Bad documents: no text, only whitespace, absurdly long, or not the wanted language."""
    error = doc.get("input_error")
    if error:
        return Verdict(False, error.split(":", 1)[0], error)
    text = doc.get("text")
    if text is None:
        return _reject("null_text", "text is null")
    if not isinstance(text, str):
        return _reject("not_a_string", type(text).__name__)
    if text == "":
        return _reject("empty_text", "text is empty")
    if text.isspace():
        return _reject("whitespace_text", f"{len(text)} whitespace characters")
    if len(text) > cfg.max_doc_chars:
        return _reject("too_long", len(text), cfg.max_doc_chars)
    language = doc.get("language")
    if cfg.languages is not None and language is not None and language not in cfg.languages:
        return _reject("language", language, "|".join(cfg.languages))
    score = doc.get("language_score")
    if cfg.min_language_score is not None and score is not None and not math.isnan(score):
        if score < cfg.min_language_score:
            return _reject("language_score", float(score), cfg.min_language_score)
    return KEEP


class Decision(NamedTuple):
    """The outcome of the whole chain for one document."""

    keep: bool
    text: str | None  # the text to keep (C4 drops some lines); None when rejected
    filter: str | None = None
    rule: str | None = None
    detail: str | None = None


def apply_filters(doc: dict, cfg: FilterConfig = FilterConfig()) -> Decision:
    """Run the FineWeb chain on one document (a dict with at least `text`); first rejection wins."""
    v = input_check(doc, cfg.input)
    if not v.keep:
        return Decision(False, None, "input", v.rule, v.detail)
    text: str = doc["text"]
    if cfg.gopher_repetition is not None:
        v = gopher_repeated_lines(text, cfg.gopher_repetition)
        if not v.keep:
            return Decision(False, None, "gopher_repetition", v.rule, v.detail)
    words = split_words(text)
    n_words = len(words)
    if cfg.gopher_repetition is not None:
        v = gopher_repeated_ngrams(text, cfg.gopher_repetition, words)
        if not v.keep:
            return Decision(False, None, "gopher_repetition", v.rule, v.detail)
    if cfg.gopher_quality is not None:
        v = gopher_quality(text, cfg.gopher_quality, words)
        if not v.keep:
            return Decision(False, None, "gopher_quality", v.rule, v.detail)
    if cfg.c4_quality is not None:
        v, text, removed_words = _c4_quality(text, cfg.c4_quality, count_words=True)
        if not v.keep:
            return Decision(False, None, "c4_quality", v.rule, v.detail)
        n_words -= removed_words
    if cfg.fineweb_quality is not None:
        v = fineweb_quality(text, cfg.fineweb_quality, n_words)
        if not v.keep:
            return Decision(False, None, "fineweb_quality", v.rule, v.detail)
    if not text.strip():  # C4 may have dropped every line
        return Decision(False, None, "c4_quality", "no_lines_left", "every line was dropped")
    return Decision(True, text)


FILTER_NAMES = ("input", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


def main(argv: list[str]) -> int:
    text = open(argv[0], encoding="utf-8").read()
    words = split_words(text)
    print("gopher_repetition", gopher_repetition(text, words=words))
    print("gopher_quality", gopher_quality(text, words=words))
    print("c4_quality", c4_quality(text)[0])
    print("fineweb_quality", fineweb_quality(text, n_words=len(words)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
