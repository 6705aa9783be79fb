"""Corpus reading and the stateful stream layout for truncated BPTT."""

import pytest
import torch
from torch import nn

from lstmkit.data.text import (
    StreamDataset,
    batchify,
    bptt_lengths,
    builtin_corpus,
    first_item,
    read_corpus,
    split_text,
)
from lstmkit.training import StepOutput, TrainConfig, Trainer


def test_read_corpus_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first ✓\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("never\n", encoding="utf-8")
    assert read_corpus(tmp_path / "a.txt") == "first ✓\n"
    assert read_corpus(tmp_path) == "first ✓\nsecond\nthird\n"


def test_read_corpus_rejects_empty_missing_and_non_utf8(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="the corpus is empty: the file .*empty.txt"):
        read_corpus(empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("abcé".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text: byte b'\\\\xe9' at offset 3"):
        read_corpus(latin1)
    with pytest.raises(ValueError, match="no text file or folder at"):
        read_corpus(tmp_path / "nope.txt")
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="the folder .*void contains no text files"):
        read_corpus(tmp_path / "void")


def test_split_text_is_first_90_percent_then_the_rest():
    text = "".join(chr(97 + i % 26) for i in range(100))
    train, val = split_text(text, 0.1)
    assert train == text[:90] and val == text[90:]
    with pytest.raises(ValueError, match="val_fraction must be a number in \\(0, 1\\), got 1.0"):
        split_text(text, 1.0)
    with pytest.raises(ValueError, match="too short to split"):
        split_text("abc", 0.1)


def test_batchify_matches_the_documented_layout():
    stream = batchify(list(range(26)), 4)  # the alphabet of the module docstring
    assert stream.tolist() == [
        [0, 1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10, 11],
        [12, 13, 14, 15, 16, 17],
        [18, 19, 20, 21, 22, 23],
    ]
    with pytest.raises(ValueError, match="5 tokens are too few for 4 streams"):
        batchify(list(range(5)), 4)


def test_chunks_cover_each_stream_once_and_in_order():
    stream = batchify(list(range(26)), 4)
    chunks = [StreamDataset.passes(stream, bptt=2)[i] for i in range(3)]
    assert [c.inputs.tolist()[0] for c in chunks] == [[0, 1], [2, 3], [4]]
    assert [c.targets.tolist()[0] for c in chunks] == [[1, 2], [3, 4], [5]]
    assert [c.reset for c in chunks] == [True, False, False]


@pytest.mark.parametrize("variable", [False, True])
def test_every_pass_reassembles_each_stream(variable):
    stream = batchify(torch.randperm(3000), 3)  # (3, 1000)
    data = StreamDataset.passes(stream, bptt=20, passes=2, variable=variable, seed=1)
    starts = [i for i in range(len(data)) if data[i].reset]
    assert starts[0] == 0 and len(starts) == 2
    for first, last in ((starts[0], starts[1]), (starts[1], len(data))):
        inputs = torch.cat([data[i].inputs for i in range(first, last)], dim=1)
        targets = torch.cat([data[i].targets for i in range(first, last)], dim=1)
        assert torch.equal(inputs, stream[:, :-1]) and torch.equal(targets, stream[:, 1:])


def test_variable_bptt_lengths_follow_awd_lstm_and_are_seeded():
    def draw(seed):
        return bptt_lengths(
            100_000, 70, variable=True, generator=torch.Generator().manual_seed(seed)
        )

    lengths = draw(0)
    assert lengths == draw(0)
    assert lengths != draw(1)
    assert sum(lengths) == 100_000
    body = torch.tensor(lengths[:-1], dtype=torch.float)
    assert body.min() >= 5 and body.max() <= 110
    half = (body < 52).float().mean().item()  # base bptt/2 = 35 with probability 0.05
    assert 0.03 < half < 0.07
    assert 68.0 < body[body >= 52].mean().item() < 70.5  # N(70, 5), truncated to an int
    assert bptt_lengths(10, 4) == [4, 4, 2]


def test_stream_stays_continuous_across_batches_of_the_trainer():
    """Through the real Trainer: each chunk starts where the previous chunk of its row ended."""
    stream = batchify(torch.arange(2 * 61), 2)  # (2, 61): rows 0..60 and 61..121
    data = StreamDataset.passes(stream, bptt=7, passes=2, variable=True, seed=3)
    resets, continued = 0, 0

    def step(model, chunk, carried):
        nonlocal resets, continued
        if chunk.reset:  # a pass starts at the head of every stream
            assert chunk.inputs[:, 0].tolist() == [0, 61]
            resets += 1
        else:  # the last target of each row is the first input of the same row's next chunk
            assert torch.equal(chunk.inputs[:, 0], carried)
            continued += 1
        loss = model.weight.sum() * 0.0
        return StepOutput(loss, weight=chunk.targets.numel(), state=chunk.targets[:, -1])

    config = TrainConfig(max_epochs=1, batch_size=1, shuffle=False, clip_norm=None)
    Trainer(nn.Linear(1, 1), step, config, collate_fn=first_item).fit(data)
    assert resets == 2 and resets + continued == len(data) > 10


def test_first_item_needs_batch_size_one():
    data = StreamDataset.passes(batchify(list(range(20)), 2), bptt=3)
    assert first_item([data[0]]) is not None
    with pytest.raises(ValueError, match="use batch_size=1, got 2 items"):
        first_item([data[0], data[1]])


def test_builtin_corpus():
    text = builtin_corpus("shakespeare")
    assert text.startswith("First Citizen:") and len(text) > 5000
    with pytest.raises(ValueError, match="unknown built-in corpus 'x'; available: shakespeare"):
        builtin_corpus("x")
