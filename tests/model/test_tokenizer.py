import os

import tiktoken

from model.tokenizer import EOT_TOKEN, decode, encode_document, get_encoding

SHARED_CACHE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "tiktoken-cache")


def test_encoding_is_gpt2():
    enc = get_encoding()
    assert enc.n_vocab == 50257
    assert enc.eot_token == EOT_TOKEN == 50256
    assert enc.encode_ordinary("Hello world") == [15496, 995]  # OpenAI's GPT-2 ids


def test_literal_endoftext_in_a_document_stays_text():
    text = "a page that mentions <|endoftext|> in its body"
    tokens = encode_document(text)
    assert tokens[0] == EOT_TOKEN
    assert EOT_TOKEN not in tokens[1:]
    assert decode(tokens[1:]) == text


def test_matches_tiktoken_reference_files_byte_for_byte(monkeypatch):
    # The shared cache holds OpenAI's files under tiktoken's cache names: the same encoding
    # tiktoken.get_encoding("gpt2") downloads. Our offline loader must agree on every token.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", os.path.abspath(SHARED_CACHE))
    reference = tiktoken.get_encoding("gpt2")
    text = "Ünïcödé, numbers 12345, code `x = f(y)`\n\n  indented\ttabs 's 're 've emoji 🙂"
    assert get_encoding().encode_ordinary(text) == reference.encode_ordinary(text)
    assert get_encoding()._mergeable_ranks == reference._mergeable_ranks
