"""Tokenizers for language modelling: characters, words, and byte-level BPE.

Every tokenizer maps text to ids and back and serialises to a JSON-able dict, which is stored
inside each checkpoint (no pickle), so a trained model always travels with its vocabulary:

    kind    unit                            unknown input                     round trip
    char    one Unicode character           ValueError naming the characters  exact
    word    whitespace-separated word;      the unknown token ``<unk>``       up to whitespace
            each newline is ``<eos>``
    bpe     byte-level BPE (HF tokenizers)  none: every byte is in the vocab  exact

``fit_tokenizer(kind, text, ...)`` learns a vocabulary from a corpus; ``tokenizer_from_dict``
rebuilds one from ``tokenizer.to_dict()``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from lstmkit.nn.validation import check_choice, check_nonnegative_int, check_positive_int

log = logging.getLogger(__name__)

TOKENIZER_KINDS = ("char", "word", "bpe")
UNK = "<unk>"
EOS = "<eos>"
MIN_BPE_VOCAB = 257  # the 256 byte symbols plus at least one merge


class Tokenizer(Protocol):
    """What every tokenizer offers."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def missing(self, text: str) -> list[str]:
        """The units of ``text`` the vocabulary lacks (encoded as unknown, or rejected)."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"token ids must be in [0, {vocab_size}) for this vocabulary, got {bad[:5]}"
        )
    return out


def _check_vocab(vocab: Sequence[str], what: str) -> list[str]:
    vocab = list(vocab)
    if not vocab:
        raise ValueError(f"a {what} vocabulary needs at least one entry, got none")
    repeated = sorted(t for t, n in Counter(vocab).items() if n > 1)
    if repeated:
        raise ValueError(f"a {what} vocabulary must not repeat entries, got {repeated[:5]} twice")
    return vocab


class CharTokenizer:
    """One id per Unicode character; characters outside the vocabulary are an error."""

    kind = "char"

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = _check_vocab(vocab, "character")
        wrong = [c for c in self.vocab if not isinstance(c, str) or len(c) != 1]
        if wrong:
            raise ValueError(f"character vocabulary entries must be single characters: {wrong[:5]}")
        self.index = {c: i for i, c in enumerate(self.vocab)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """Every distinct character of ``text``, sorted (nanoGPT's vocabulary)."""
        if not text:
            raise ValueError("cannot fit a character tokenizer on empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def missing(self, text: str) -> list[str]:
        return sorted(set(text) - set(self.index))

    def encode(self, text: str) -> list[int]:
        lacking = self.missing(text)
        if lacking:
            raise ValueError(
                f"the text has {len(lacking)} character(s) the vocabulary lacks: "
                f"{''.join(lacking[:20])!r}; this tokenizer knows {self.vocab_size} characters"
            )
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in _check_ids(ids, self.vocab_size))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": list(self.vocab)}


class WordTokenizer:
    """Whitespace-separated words, ``<eos>`` at each newline, ``<unk>`` for unknown words.

    ``"a b\\nc"`` encodes as ``a b <eos> c`` (pytorch/examples' word_language_model, WikiText);
    decoding joins words by single spaces, so the round trip is exact up to whitespace.
    """

    kind = "word"

    def __init__(self, vocab: Sequence[str], unk: str = UNK, eos: str = EOS) -> None:
        self.vocab = _check_vocab(vocab, "word")
        for name, special in (("unk", unk), ("eos", eos)):
            if special not in self.vocab:
                raise ValueError(f"the word vocabulary must contain {name} token {special!r}")
        self.unk, self.eos = unk, eos
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk_id, self.eos_id = self.index[unk], self.index[eos]

    @classmethod
    def fit(cls, text: str, max_vocab: int = 0, min_freq: int = 1) -> WordTokenizer:
        """The most frequent words of ``text`` (at most ``max_vocab`` incl. the two specials,
        0 = all) seen at least ``min_freq`` times; ties keep first-appearance order."""
        check_nonnegative_int("max_vocab", max_vocab)
        check_positive_int("min_freq", min_freq)
        if max_vocab and max_vocab < 3:
            raise ValueError(f"max_vocab must be 0 (all) or at least 3, got {max_vocab}")
        counts = Counter(text.split())
        if not counts:
            raise ValueError("cannot fit a word tokenizer on text without words")
        words = [w for w, n in counts.most_common() if n >= min_freq and w not in (UNK, EOS)]
        if max_vocab:
            words = words[: max_vocab - 2]
        return cls([UNK, EOS, *words])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def missing(self, text: str) -> list[str]:
        return sorted(set(text.split()) - set(self.index))

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        lines = text.split("\n")
        for number, line in enumerate(lines):
            ids.extend(self.index.get(w, self.unk_id) for w in line.split())
            if number < len(lines) - 1:
                ids.append(self.eos_id)  # one per newline
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        lines: list[str] = []
        words: list[str] = []
        for i in _check_ids(ids, self.vocab_size):
            if i == self.eos_id:
                lines.append(" ".join(words))
                words = []
            else:
                words.append(self.vocab[i])
        return "\n".join([*lines, " ".join(words)])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab": list(self.vocab), "unk": self.unk, "eos": self.eos}


class BPETokenizer:
    """Byte-level BPE trained on the corpus with Hugging Face ``tokenizers`` (GPT-2's scheme).

    The 256 byte symbols are always in the vocabulary, so any text encodes and decodes exactly.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer

    @classmethod
    def fit(cls, text: str, vocab_size: int, min_freq: int = 2) -> BPETokenizer:
        """Learn merges on ``text`` until the vocabulary has ``vocab_size`` entries."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
        if vocab_size < MIN_BPE_VOCAB:
            raise ValueError(
                f"vocab_size for BPE must be at least {MIN_BPE_VOCAB} (256 bytes + merges), "
                f"got {vocab_size}"
            )
        check_positive_int("min_freq", min_freq)
        if not text:
            raise ValueError("cannot fit a BPE tokenizer on empty text")
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_freq,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(text.splitlines(keepends=True), trainer)
        log.info("trained byte-level BPE: %d tokens", hf.get_vocab_size())
        return cls(hf)

    @classmethod
    def from_json(cls, data: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(data))

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size())

    def missing(self, text: str) -> list[str]:
        return []

    def encode(self, text: str) -> list[int]:
        # line by line (byte-level BPE never merges across the pieces), in parallel
        encodings = self.hf.encode_batch(text.splitlines(keepends=True))
        return [i for enc in encodings for i in enc.ids]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode(_check_ids(ids, self.vocab_size)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": self.hf.to_str()}


def fit_tokenizer(kind: str, text: str, vocab_size: int = 0, min_freq: int = 1) -> Tokenizer:
    """A ``kind`` tokenizer ("char", "word", "bpe") fitted on ``text``.

    ``vocab_size``: ignored for char; the word vocabulary's limit (0 = every word); the BPE
    vocabulary's size (required, at least 257).
    """
    check_choice("tokenizer", kind, TOKENIZER_KINDS)
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind == "word":
        return WordTokenizer.fit(text, max_vocab=vocab_size, min_freq=min_freq)
    return BPETokenizer.fit(text, vocab_size=vocab_size, min_freq=max(min_freq, 2))


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()``."""
    kind = data.get("kind") if isinstance(data, dict) else None
    check_choice("tokenizer kind", kind, TOKENIZER_KINDS)
    if kind == "char":
        return CharTokenizer(data["vocab"])
    if kind == "word":
        return WordTokenizer(data["vocab"], unk=data["unk"], eos=data["eos"])
    return BPETokenizer.from_json(data["tokenizer"])
