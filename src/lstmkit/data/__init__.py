"""Data utilities for variable-length sequences: padding, masks and length-bucketed batching.

ragged sequences --pad_sequences--> PaddedBatch(data (B, T, *F), lengths, mask, ...)
dataset lengths  --BucketBatchSampler--> batches of similar-length indices
DataLoader items --pad_collate--> PaddedBatch (and stacked targets)
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

__all__ = [
    "BucketBatchSampler",
    "PaddedBatch",
    "check_lengths",
    "lengths_to_mask",
    "mask_to_lengths",
    "pad_collate",
    "pad_sequences",
    "reverse_padded",
    "truncate_sequence",
]
