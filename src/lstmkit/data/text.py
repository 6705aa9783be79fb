"""Text corpora for language modelling, and the stateful stream layout for truncated BPTT.

A corpus is one long token stream. ``batchify`` cuts it into B contiguous streams, one per row
(as pytorch/examples' word_language_model ``batchify``, but batch-first). With the alphabet as
the stream and B = 4:

    a b c d e f g h i j k l m n o p q r s t u v w x y z
                                  │ batchify(B=4): 26 // 4 = 6 per stream, y z dropped
                                  ▼
    stream 0   a b c d e f
    stream 1   g h i j k l
    stream 2   m n o p q r
    stream 3   s t u v w x

Chunks of ``bptt`` columns are the batches, in order. With bptt = 2 (inputs; the targets are
the same columns shifted one to the right):

    chunk 0      chunk 1      chunk 2
    a b  → b c   c d  → d e   e      → f
    g h  → h i   i j  → j k   k      → l
    m n  → n o   o p  → p q   q      → r
    s t  → t u   u v  → v w   w      → x

Row b of chunk k+1 continues row b of chunk k, so the LSTM state at the end of one chunk is the
right initial state for the next: the model carries it across chunks (detached: truncated
BPTT). Every token but the first of each stream is predicted exactly once per pass.

``bptt_lengths`` draws the chunk lengths of one pass; with ``variable=True`` they follow
AWD-LSTM (Merity et al. 2017): the base is ``bptt`` with probability 0.95, else ``bptt / 2``,
and the length is drawn from N(base, 5), at least 5 and at most ``bptt + 40``, so the chunk
boundaries move from pass to pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lstmkit.nn.validation import check_positive_int

log = logging.getLogger(__name__)

MIN_BPTT = 5  # shortest variable chunk (AWD-LSTM)
MAX_BPTT_EXTRA = 40  # longest variable chunk is bptt + this (AWD-LSTM's max_seq_len_delta)


def read_corpus(path: str | Path) -> str:
    """The UTF-8 text of a file, or of every file under a folder (sorted by path, hidden files
    skipped) joined in that order. Empty corpora and non-UTF-8 bytes are ``ValueError``s."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ValueError(f"the folder {path} contains no text files")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"no text file or folder at {path}")
    texts = [_read_utf8(f) for f in files]
    text = "".join(texts)
    if not text:
        what = "file" if len(files) == 1 else f"{len(files)} files under"
        raise ValueError(f"the corpus is empty: the {what} {path} contain(s) no text")
    log.info("read %d characters from %d file(s) under %s", len(text), len(files), path)
    return text


def builtin_corpus(name: str = "shakespeare") -> str:
    """A small corpus shipped with the package (``data/corpora/<name>.txt``) for demos, tests."""
    folder = resources.files("lstmkit.data") / "corpora"
    names = sorted(p.name[: -len(".txt")] for p in folder.iterdir() if p.name.endswith(".txt"))
    if name not in names:
        raise ValueError(f"unknown built-in corpus {name!r}; available: {', '.join(names)}")
    return (folder / f"{name}.txt").read_text(encoding="utf-8")


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text: byte {data[err.start : err.start + 1]!r} at offset "
            f"{err.start} cannot be decoded ({err.reason}); convert the file to UTF-8"
        ) from err


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, validation): the first ``1 - val_fraction`` of the characters, then the rest
    (the nanoGPT protocol for tinyshakespeare uses ``val_fraction=0.1``)."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, float | int):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    cut = int(len(text) * (1.0 - val_fraction))
    if cut < 2 or len(text) - cut < 2:
        raise ValueError(
            f"a text of {len(text)} characters is too short to split with "
            f"val_fraction={val_fraction}: each part needs at least 2 characters"
        )
    return text[:cut], text[cut:]


def batchify(ids: Tensor | Sequence[int], streams: int) -> Tensor:
    """(B, N // B): ``ids`` cut into ``streams`` contiguous rows; the last ``N % B`` are dropped."""
    check_positive_int("streams", streams)
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()  # (N,)
    per_stream = ids.numel() // streams
    if per_stream < 2:
        raise ValueError(
            f"{ids.numel()} tokens are too few for {streams} streams: each stream needs at "
            "least 2 tokens (an input and its target); use fewer streams or more text"
        )
    return ids[: per_stream * streams].view(streams, per_stream)  # (B, N // B)


def bptt_lengths(
    steps: int, bptt: int, *, variable: bool = False, generator: torch.Generator | None = None
) -> list[int]:
    """Chunk lengths that cover ``steps`` predicted positions: ``bptt`` each (the last may be
    shorter), or AWD-LSTM's variable lengths drawn with ``generator`` (see the module doc)."""
    check_positive_int("steps", steps)
    check_positive_int("bptt", bptt)
    lengths: list[int] = []
    done = 0
    while done < steps:
        length = bptt
        if variable:
            base = bptt if torch.rand((), generator=generator).item() < 0.95 else bptt / 2
            drawn = int(base + 5.0 * torch.randn((), generator=generator).item())
            length = min(max(MIN_BPTT, drawn), bptt + MAX_BPTT_EXTRA)
        length = min(length, steps - done)
        lengths.append(length)
        done += length
    return lengths


class StreamChunk(NamedTuple):
    """One batch of the stream layout: B rows, T consecutive positions of each stream."""

    inputs: Tensor  # (B, T) token ids
    targets: Tensor  # (B, T) the next token of each input
    reset: bool  # True at the start of a pass: the carried state must be dropped


class StreamDataset(Dataset):
    """The chunks of one or more passes over ``stream`` (B, M), in order; item i is chunk i.

    Use it with ``TrainConfig(batch_size=1, shuffle=False)`` and ``collate_fn=first_item`` so
    that each batch is one chunk and the carried state lines up (see the module doc).
    """

    def __init__(self, stream: Tensor, spans: Sequence[tuple[int, int, bool]]) -> None:
        if stream.dim() != 2 or stream.shape[1] < 2:
            raise ValueError(
                f"stream must be (streams, steps) with at least 2 steps, got {tuple(stream.shape)}"
            )
        self.stream = stream  # (B, M)
        self.spans = list(spans)  # (first column, length, reset) of each chunk

    @classmethod
    def passes(
        cls, stream: Tensor, bptt: int, passes: int = 1, *, variable: bool = False, seed: int = 0
    ) -> StreamDataset:
        """``passes`` passes over ``stream``; pass p's variable lengths are seeded (seed, p)."""
        check_positive_int("passes", passes)
        steps = stream.shape[1] - 1  # positions with a target
        spans = []
        for p in range(passes):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + p)
            first = 0
            for length in bptt_lengths(steps, bptt, variable=variable, generator=generator):
                spans.append((first, length, first == 0))
                first += length
        return cls(stream, spans)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index: int) -> StreamChunk:
        first, length, reset = self.spans[index]
        chunk = self.stream[:, first : first + length + 1]  # (B, T + 1)
        return StreamChunk(chunk[:, :-1], chunk[:, 1:], reset)

    @property
    def tokens_per_pass(self) -> int:
        """Predicted tokens in one pass: B * (M - 1)."""
        return self.stream.shape[0] * (self.stream.shape[1] - 1)


def first_item(items: list[StreamChunk]) -> StreamChunk:
    """Collate for ``StreamDataset`` with batch_size=1: the chunk itself (no extra batch dim)."""
    if len(items) != 1:
        raise ValueError(
            f"stream chunks already hold every stream; use batch_size=1, got {len(items)} items"
        )
    return items[0]
