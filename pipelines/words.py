"""A fast English word splitter that follows the shape of spaCy's rule-based tokenizer.

FineWeb's filters (datatrove) count words with spaCy's blank English tokenizer: whitespace
chunks, then punctuation peeled off the front and back, then splits inside a chunk (hyphens
between letters, `a,b`, `x/y`, ...), with contractions as their own tokens. Loading spaCy and
running its pipeline costs more than every filter rule together, so we do the same peeling with
a few precompiled regexes (behind cheap tests that rule most of them out), a fast path for plain
words and a cache of the split of each distinct whitespace chunk. The result is not token-for-token
identical to spaCy (a small exception table instead of spaCy's thousands of entries, a simpler URL
rule, no units after decimals), but the filters only look at counts, lengths and repeats, and
tests/pipelines/test_data_filter_agreement.py checks that keep/reject decisions agree with
datatrove's on the samples (>= 99.5% per filter).

    python -c "from pipelines.words import split_words; print(split_words('Don't (panic), e.g. now...'))"
"""

from __future__ import annotations

import re
from itertools import chain

import regex

# Character classes, written out from the lists spaCy documents for its tokenizer.
_PUNCT = r"…,:;!?¿؟¡()\[\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = r"'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_CURRENCY = r"$£€¥฿₽﷼₴₠-₿"
_ICONS = r"\u00A6\u00A9\u00AE\u00B0\u2100-\u214F\u2190-\u21FF\u2300-\u23FF\u2500-\u27BF\u2800-\u28FF\u2B00-\u2BFF\U0001F000-\U0001FAFF"
_HYPHENS = r"(?:-|–|—|--|---|——|~)"
_UNITS = (
    "km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|"
    "m/s|km/h|kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%"
)

_PREFIX = regex.compile(
    rf"^(?:[§%=—–]|\+(?![0-9])|[{_PUNCT}]|\.\.+|…|[{_QUOTES}]|US\$|C\$|A\$|[{_CURRENCY}]|[{_ICONS}])"
)
# spaCy searches for the leftmost suffix that reaches the end of the chunk.
_SUFFIX = regex.compile(
    rf"(?:[{_PUNCT}]|\.\.+|…|[{_QUOTES}]|[{_ICONS}]|'s|'S|’s|’S|—|–"
    rf"|(?<=[0-9])\+|(?<=°[FfCcKk])\.|(?<=[0-9])(?:US\$|C\$|A\$|[{_CURRENCY}])|(?<=[0-9])(?:{_UNITS})"
    rf"|(?<=[0-9\p{{Ll}}%²\-+{_PUNCT}{_QUOTES}])\.|(?<=\p{{Lu}}\p{{Lu}})\.)$"
)
_INFIX = regex.compile(
    rf"\.\.+|…|[{_ICONS}]|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[\p{{Ll}}{_QUOTES}])\.(?=[\p{{Lu}}{_QUOTES}])"
    rf"|(?<=\p{{L}}),(?=\p{{L}})|(?<=[\p{{L}}0-9]){_HYPHENS}(?=\p{{L}})|(?<=[\p{{L}}0-9])[:<>=/](?=\p{{L}})"
)
# English contractions spaCy's exception table splits: "don't" -> "do" "n't", "I'm" -> "I" "'m".
_CONTRACTION = regex.compile(r"^(\p{L}+?)(n['’]t|['’](?:m|re|ve|ll|d|s|S|M|RE|VE|LL|D))$", regex.IGNORECASE)
# URLs and e-mail addresses stay whole: optional scheme and user, dotted host ending in a
# lowercase top-level label, optional port and path.
_URL = regex.compile(
    r"^(?:[\w+.-]{2,}://)?(?:\S+@)?(?:[\p{L}\p{N}](?:[\p{L}\p{N}_-]*[\p{L}\p{N}])?\.)+\p{Ll}{2,63}"
    r"(?::\d{2,5})?(?:[/?#]\S*)?$"
)
# spaCy keeps these abbreviations whole (its exception table); the common ones in web text.
_ABBREVIATIONS = frozenset(
    "e.g. E.g. i.e. I.e. vs. Rev. Corp. and/or w/o Mr. Mrs. Ms. Dr. Prof. Inc. Ltd. Co. Jr. Sr. St. a.m. p.m. U.S. Jan. Feb. "
    "Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. Nos. approx. Fig. Vol. Mt.".split()
)
# Emoticons spaCy keeps whole (they would otherwise lose their punctuation to the rules above).
_EMOTICONS = frozenset(":) :( (: ): :-) :-( ;) ;-) :D :P :p :/ =) (= 8) :') :'( <3 xD XD ^_^ -_- :o :O".split())
_EXCEPTIONS = _ABBREVIATIONS | _EMOTICONS
# Contractions written without the apostrophe, which spaCy also splits.
_SPLIT_WORDS = {
    "cannot": ("can", "not"), "Cannot": ("Can", "not"), "id": ("i", "d"), "Id": ("I", "d"),
    "im": ("i", "m"), "Im": ("I", "m"), "ive": ("i", "ve"), "Ive": ("I", "ve"), "cant": ("ca", "nt"),
    "wont": ("wo", "nt"), "dont": ("do", "nt"), "Dont": ("Do", "nt"), "doesnt": ("does", "nt"),
    "didnt": ("did", "nt"), "isnt": ("is", "nt"), "arent": ("are", "nt"), "wasnt": ("was", "nt"),
    "couldnt": ("could", "nt"), "wouldnt": ("would", "nt"), "shouldnt": ("should", "nt"),
    "whats": ("what", "s"), "thats": ("that", "s"), "hes": ("he", "s"), "shes": ("she", "s"),
    "gonna": ("gon", "na"), "gotta": ("got", "ta"),
}
_NUMBER_UNIT = regex.compile(rf"^([0-9]+)({_UNITS})$")
_TRAILING_DOTS = regex.compile(r"\.\.+$")


# Cheap tests that rule the costly regexes out for most chunks (the general path runs on every
# distinct punctuated chunk, so its regexes are most of the splitter's time). Each is implied
# by the regex it guards: it only skips searches that could not match.
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ASCII_DIGITS = frozenset("0123456789")
# Every infix contains one of these, or a character outside ASCII (icons, dashes, "…").
_MAY_HAVE_INFIX = re.compile(r"[.+\-*^,~:<>=/\x80-\U0010ffff]")


def _may_end_in_suffix(s: str) -> bool:
    """False when no `_SUFFIX` can match: a chunk ending in an ASCII digit, or in an ASCII letter
    that closes neither "'s" nor a unit after a number ("16km")."""
    last = s[-1]
    if last not in _ASCII_ALNUM:
        return True
    if last in _ASCII_DIGITS:
        return False
    if last in "sS" and s[-2:-1] in ("'", "’"):
        return True
    return not _ASCII_DIGITS.isdisjoint(s[-6:-1])


def _split_chunk(chunk: str, out: list[str]) -> None:
    prefixes: list[str] = []
    suffixes: list[str] = []
    s = chunk
    while s:
        if s in _EXCEPTIONS or s.isalnum():
            break
        last = len(s)
        m = _PREFIX.match(s)
        if m:
            prefixes.append(s[: m.end()])
            s = s[m.end():]
            if s in _EXCEPTIONS:
                break
        if s:
            # Suffixes are short except a run of dots, so only the tail needs searching.
            if s.endswith(".."):
                m = _TRAILING_DOTS.search(s)
            elif _may_end_in_suffix(s):
                m = _SUFFIX.search(s, max(0, len(s) - 6))
            else:
                m = None
            if m:
                suffixes.append(s[m.start():])
                s = s[: m.start()]
                if s in _EXCEPTIONS:
                    break
        if len(s) == last:
            break
    out.extend(prefixes)
    if s:
        if s in _SPLIT_WORDS:
            out.extend(_SPLIT_WORDS[s])
        elif s in _EXCEPTIONS or s.isalnum() or ("." in s and _URL.match(s)):
            out.append(s)
        else:
            m = ("'" in s or "’" in s) and _CONTRACTION.match(s)
            if m:
                out.append(m.group(1))
                out.append(m.group(2))
            elif not _MAY_HAVE_INFIX.search(s):
                out.append(s)
            else:
                start = 0
                for inf in _INFIX.finditer(s):
                    if inf.start() > start:
                        out.append(s[start:inf.start()])
                    if inf.end() > inf.start():
                        out.append(inf.group())
                    start = inf.end()
                if start < len(s):
                    out.append(s[start:])
    out.extend(reversed(suffixes))


# The next most common shape: single punctuation characters around a plain word, "(word),"
# (underscores inside the word are no split point for spaCy: "snake_case" stays whole).
# Each of them is a token of its own in spaCy. Runs of dots ("word...") take the slow path.
_SIMPLE_PRE = "([{\"'“‘«"
_SIMPLE_SUF = ")]}\"'”’»,;:!?."
_SIMPLE = regex.compile(
    rf"^([{regex.escape(_SIMPLE_PRE)}]*)([\p{{L}}\p{{N}}](?:[\p{{L}}\p{{N}}_]*[\p{{L}}\p{{N}}])?)([{regex.escape(_SIMPLE_SUF)}]*)$"
)


def _split_simple(chunk: str, out: list[str]) -> bool:
    m = _SIMPLE.match(chunk)
    if m is None:
        return False
    pre, core, suf = m.groups()
    if core in _SPLIT_WORDS or core[0].isdigit() and not core.isdigit():
        return False
    if suf[:1] == "." and core + "." in _ABBREVIATIONS:
        return False
    if suf:
        if ".." in suf or "'" in suf[:1] or "’" in suf[:1]:
            return False  # ellipsis, or "'s"-like suffix rules: let the general path decide
        # spaCy only peels a final "." after a lowercase letter or digit, or two capitals.
        if suf[0] == "." and not (core[-1].islower() or core[-1].isdigit() or (len(core) > 1 and core[-2:].isalpha() and core[-2:].isupper())):
            return False
    out.extend(pre)
    out.append(core)
    out.extend(suf)
    return True


# Web text repeats its chunks ("the", "the,", "(see", "e.g.") endlessly: splitting each distinct
# one once and then looking it up is most of the speed. Cleared when large (bounded memory);
# results never depend on it.
_CACHE: dict[str, tuple[str, ...]] = {}
_CACHE_MAX = 200_000


def _split_one(chunk: str) -> tuple[str, ...]:
    if chunk.isalnum():
        if chunk in _SPLIT_WORDS:
            return _SPLIT_WORDS[chunk]
        if chunk[0].isdigit() and not chunk.isdigit() and (m := _NUMBER_UNIT.match(chunk)):
            return m.groups()  # "16MB" -> "16" "MB"
        return (chunk,)
    if len(chunk) == 1:  # one character: nothing to split
        return (chunk,)
    out: list[str] = []
    if not _split_simple(chunk, out):
        _split_chunk(chunk, out)
    return tuple(out)


def split_words(text: str) -> list[str]:
    """Word tokens of `text` (whitespace dropped), close to datatrove's `split_into_words`."""
    chunks = text.split()
    # Set and dict operations run in C: only chunks never seen before reach Python code.
    missing = set(chunks).difference(_CACHE)
    if missing:
        if len(_CACHE) + len(missing) > _CACHE_MAX:
            _CACHE.clear()
            missing = set(chunks)
        for chunk in missing:
            _CACHE[chunk] = _split_one(chunk)
    return list(chain.from_iterable(map(_CACHE.__getitem__, chunks)))


_STERM = regex.compile(r"^\p{Sentence_Terminal}$")
_PUNCT_ONLY = regex.compile(r"^\p{P}+$")


def count_sentences(line: str) -> int:
    """Sentences in one line as spaCy's sentencizer splits them: a new sentence starts at the
    first non-punctuation token after a sentence-terminal character (Unicode's STerm set, which
    is what spaCy's and datatrove's lists of terminal punctuation are drawn from)."""
    words = split_words(line)
    if not words:
        return 0
    n, seen_end = 1, False
    for w in words:
        is_end = len(w) == 1 and _STERM.match(w) is not None
        if seen_end and not is_end and not _PUNCT_ONLY.match(w):
            n += 1
            seen_end = False
        elif is_end:
            seen_end = True
    return n
