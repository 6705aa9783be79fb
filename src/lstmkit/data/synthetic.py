"""Synthetic sequence tasks that test long-term memory (no data files needed).

Adding problem (Hochreiter & Schmidhuber 1997; the form of Le et al. 2015 / Arjovsky et al. 2016):

    step      0     1     2    ...   T-1
    value   0.31  0.87  0.05  ...   0.62      U[0, 1]
    marker    0     1     0   ...     1       exactly two 1s: one in each half
    target  0.87 + 0.62 = 1.49

Always predicting the mean target 1.0 gives MSE ≈ 1/6 ≈ 0.167; "solved" means MSE < 0.01.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.nn.validation import check_positive_int


def adding_problem(
    num_samples: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw ``num_samples`` adding-problem sequences: inputs (N, T, 2), targets (N, 1)."""
    n = check_positive_int("num_samples", num_samples)
    steps = check_positive_int("seq_len", seq_len)
    if steps < 2:
        raise ValueError(f"seq_len must be at least 2 (one marker per half), got {seq_len}")
    values = torch.rand(n, steps, generator=generator)  # (N, T)
    half = steps // 2
    first = torch.randint(0, half, (n,), generator=generator)  # marker in the first half
    second = torch.randint(half, steps, (n,), generator=generator)  # and one in the second
    markers = torch.zeros(n, steps)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = (values[rows, first] + values[rows, second]).unsqueeze(-1)  # (N, 1)
    return torch.stack([values, markers], dim=-1), target
