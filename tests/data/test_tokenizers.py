"""Tokenizers: exact round trips (char, BPE), unknown tokens (word), errors, serialisation."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmkit.data.text import builtin_corpus
from lstmkit.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    fit_tokenizer,
    tokenizer_from_dict,
)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.fit(builtin_corpus("shakespeare"), vocab_size=320)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1))
def test_char_round_trip_is_exact(text):
    tokenizer = CharTokenizer.fit(text)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text


def test_char_vocabulary_is_sorted_distinct_characters():
    tokenizer = CharTokenizer.fit("hello\n")
    assert tokenizer.vocab == ["\n", "e", "h", "l", "o"]
    assert tokenizer.encode("hole") == [2, 4, 3, 1]


def test_char_unknown_characters_are_an_error_that_names_them():
    tokenizer = CharTokenizer.fit("abc")
    assert tokenizer.missing("abxz") == ["x", "z"]
    with pytest.raises(
        ValueError, match="the text has 2 character\\(s\\) the vocabulary lacks: 'xz'"
    ):
        tokenizer.encode("abxz")


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_bpe_round_trip_is_exact_for_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_merges_common_sequences(bpe):
    text = builtin_corpus("shakespeare")[:2000]
    ids = bpe.encode(text)
    assert bpe.vocab_size == 320
    assert len(ids) < 0.7 * len(text.encode("utf-8"))  # merges shorten the byte sequence
    assert bpe.missing("日本語 ✓") == []  # every byte is in the vocabulary


def test_word_unknown_words_map_to_unk_and_vocabulary_is_limited():
    text = "the cat sat\nthe cat ran\nthe dog\n"
    tokenizer = WordTokenizer.fit(text, max_vocab=4)  # <unk>, <eos>, the, cat
    assert tokenizer.vocab == ["<unk>", "<eos>", "the", "cat"]
    ids = tokenizer.encode("the dog sat\nthe")
    assert ids == [2, 0, 0, 1, 2]
    assert tokenizer.decode(ids) == "the <unk> <unk>\nthe"
    assert tokenizer.missing("the dog sat") == ["dog", "sat"]


def test_word_min_freq_and_eos_per_newline():
    tokenizer = WordTokenizer.fit("a a b\na c\n", min_freq=2)
    assert tokenizer.vocab == ["<unk>", "<eos>", "a"]
    assert tokenizer.encode("a b\n") == [2, 0, 1]
    assert tokenizer.decode([2, 2, 1, 2]) == "a a\na"


def test_word_round_trip_is_exact_up_to_whitespace():
    text = " = Title = \n a b  c \n"
    tokenizer = WordTokenizer.fit(text)
    assert tokenizer.decode(tokenizer.encode(text)) == "= Title =\na b c\n"


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_serialised_tokenizer_encodes_the_same(kind):
    text = builtin_corpus("shakespeare")
    tokenizer = fit_tokenizer(kind, text, vocab_size=300 if kind == "bpe" else 0)
    rebuilt = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    sample = text[:500]
    assert rebuilt.kind == kind
    assert rebuilt.vocab_size == tokenizer.vocab_size
    assert rebuilt.encode(sample) == tokenizer.encode(sample)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(
        ValueError, match="tokenizer must be one of 'char', 'word', 'bpe'; got 'sp'"
    ):
        fit_tokenizer("sp", "text")
    with pytest.raises(ValueError, match="cannot fit a character tokenizer on empty text"):
        CharTokenizer.fit("")
    with pytest.raises(ValueError, match="cannot fit a word tokenizer on text without words"):
        WordTokenizer.fit(" \n ")
    with pytest.raises(ValueError, match="max_vocab must be 0 \\(all\\) or at least 3, got 2"):
        WordTokenizer.fit("a b", max_vocab=2)
    with pytest.raises(ValueError, match="vocab_size for BPE must be at least 257 .*got 100"):
        BPETokenizer.fit("some text", vocab_size=100)
    with pytest.raises(ValueError, match="token ids must be in \\[0, 3\\) .*got \\[3, -1\\]"):
        CharTokenizer.fit("abc").decode([0, 3, -1])
    with pytest.raises(ValueError, match="must not repeat entries, got \\['a'\\]"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="must contain unk token '<unk>'"):
        WordTokenizer(["<eos>", "a"])
