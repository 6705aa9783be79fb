"""Data utilities for variable-length sequences: padding, masks and length-bucketed batching.

ragged sequences --pad_sequences--> PaddedBatch(data (B, T, *F), lengths, mask, ...)
dataset lengths  --BucketBatchSampler--> batches of similar-length indices
DataLoader items --pad_collate--> PaddedBatch (and stacked targets)
text --Tokenizer--> ids --batchify--> streams (B, N) --StreamDataset--> chunks for TBPTT
"""

from lstmkit.data.bucketing import BucketBatchSampler, pad_collate
from lstmkit.data.padding import (
    PaddedBatch,
    check_lengths,
    lengths_to_mask,
    mask_to_lengths,
    pad_sequences,
    reverse_padded,
    truncate_sequence,
)
from lstmkit.data.text import (
    StreamChunk,
    StreamDataset,
    batchify,
    bptt_lengths,
    builtin_corpus,
    first_item,
    read_corpus,
    split_text,
)
from lstmkit.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    fit_tokenizer,
    tokenizer_from_dict,
)

__all__ = [
    "BPETokenizer",
    "BucketBatchSampler",
    "CharTokenizer",
    "PaddedBatch",
    "StreamChunk",
    "StreamDataset",
    "Tokenizer",
    "WordTokenizer",
    "batchify",
    "bptt_lengths",
    "builtin_corpus",
    "check_lengths",
    "first_item",
    "fit_tokenizer",
    "lengths_to_mask",
    "mask_to_lengths",
    "pad_collate",
    "pad_sequences",
    "read_corpus",
    "reverse_padded",
    "split_text",
    "tokenizer_from_dict",
    "truncate_sequence",
]
