"""A fast English word splitter that follows the shape of spaCy's rule-based tokenizer.

FineWeb's filters (datatrove) count words with spaCy's blank English tokenizer: whitespace
chunks, then punctuation peeled off the front and back, then splits inside a chunk (hyphens
between letters, `a,b`, `x/y`, ...), with contractions as their own tokens. Loading spaCy and
running its pipeline costs more than every filter rule together, so we do the same peeling with
a few precompiled regexes and a fast path for plain words. The result is not token-for-token
identical to spaCy (no exception table of abbreviations and emoticons, a simpler URL rule), but
the filters only look at counts, lengths and repeats, and tests/pipelines/test_filter_agreement.py
checks that keep/reject decisions agree with datatrove's on the samples.

    python -c "from pipelines.words import split_words; print(split_words('Don't (panic), e.g. now...'))"
"""

from __future__ import annotations

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
_URL = regex.compile(r"^(?:(?:https?|ftp)://|www\.)\S+$", regex.IGNORECASE)
# spaCy keeps these abbreviations whole (its exception table); the common ones in web text.
_ABBREVIATIONS = frozenset(
    "e.g. i.e. etc. vs. Mr. Mrs. Ms. Dr. Prof. Inc. Ltd. Co. Jr. Sr. St. a.m. p.m. U.S. Jan. Feb. "
    "Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. No. Nos. approx. Fig. Vol. Mt.".split()
)
_CHUNKS = regex.compile(r"\S+")
# A chunk made of letters and digits only needs no peeling at all: the common case.
_PLAIN = regex.compile(r"^[\p{L}\p{N}]+$")


def _split_chunk(chunk: str, out: list[str]) -> None:
    prefixes: list[str] = []
    suffixes: list[str] = []
    s = chunk
    while s:
        if s in _ABBREVIATIONS or _PLAIN.match(s):
            break
        last = len(s)
        m = _PREFIX.match(s)
        if m:
            prefixes.append(s[: m.end()])
            s = s[m.end():]
        if s:
            m = _SUFFIX.search(s)
            if m:
                suffixes.append(s[m.start():])
                s = s[: m.start()]
        if len(s) == last:
            break
    out.extend(prefixes)
    if s:
        if s in _ABBREVIATIONS or _PLAIN.match(s) or _URL.match(s):
            out.append(s)
        else:
            m = _CONTRACTION.match(s)
            if m:
                out.append(m.group(1))
                out.append(m.group(2))
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


def split_words(text: str) -> list[str]:
    """Word tokens of `text` (whitespace dropped), close to datatrove's `split_into_words`."""
    out: list[str] = []
    plain = _PLAIN.match
    for chunk in _CHUNKS.findall(text):
        if plain(chunk):
            out.append(chunk)
        else:
            _split_chunk(chunk, out)
    return out


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
