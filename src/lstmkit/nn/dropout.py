"""Regularisers for recurrent networks, one short piece each.

All masks are drawn once per sequence (per forward call) and held fixed across time, except
zoneout's, which is a fresh stochastic identity at every step as in its paper. Everything here is
the identity in eval mode, except zoneout, which then uses its expectation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmkit.nn.cell import LSTMState
from lstmkit.nn.validation import check_probability


def dropout_mask(p: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Inverted-dropout mask of ``shape``: 0 with probability ``p``, else ``1 / (1 - p)``.

    Drawn as ``u < 1 - p`` with ``u ~ U[0, 1)``: on CPU that takes about a quarter of the time of
    torch's ``bernoulli_`` (whose per-element sampling dominated a segment forecaster's step;
    benchmarks/results/segment_step.md), for the same distribution.
    """
    keep = 1.0 - p
    return uniform(shape, like).lt_(keep).div_(keep).to(like.dtype)


def uniform(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """U[0, 1) draws of ``shape`` on ``like``'s device, in float32 for half-precision ``like``: a
    comparison with p in bfloat16 would round p first (0.999 to 1.0: nothing dropped)."""
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.rand(shape, device=like.device, dtype=dtype)


class Dropout(nn.Module):
    """Elementwise inverted dropout, as ``torch.nn.Dropout``, with the mask of ``dropout_mask``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability("p", p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_mask(self.p, self.mask_shape(x), x)

    def mask_shape(self, x: Tensor) -> tuple[int, ...]:
        """One mask value per element (broadcast over the dims where the mask has size 1)."""
        return tuple(x.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LockedDropout(Dropout):
    """Variational ("locked") dropout: one mask per sequence, shared by every time step.

    Gal & Ghahramani 2016; awd-lstm-lm's ``LockedDropout``. Input is time-major (T, B, F).
    """

    def mask_shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, *x.shape[1:])  # (1, B, F): the same mask at every step


class WeightDrop(Dropout):
    """DropConnect on a weight matrix, one mask per forward call (Wan et al. 2013; Merity et al.
    2017 apply it to the recurrent weights ``W_hh`` of an LSTM): elementwise dropout of the
    weight itself."""


class Zoneout(nn.Module):
    """Zoneout (Krueger et al. 2017): each unit keeps its previous value with probability ``p``.

    Training: ``h_t = d ⊙ h_{t-1} + (1 - d) ⊙ h̃_t`` with ``d ~ Bernoulli(p)`` drawn every step.
    Eval: the expectation, ``h_t = p · h_{t-1} + (1 - p) · h̃_t``. Separate rates for c and h.
    """

    def __init__(self, cell_p: float = 0.0, hidden_p: float = 0.0) -> None:
        super().__init__()
        self.cell_p = check_probability("zoneout_cell", cell_p)
        self.hidden_p = check_probability("zoneout_hidden", hidden_p)

    def _mix(self, p: float, new: Tensor, old: Tensor) -> Tensor:
        if p == 0.0:
            return new
        if not self.training:
            return p * old + (1.0 - p) * new
        keep_old = uniform(tuple(new.shape), new).lt_(p).to(new.dtype)  # (B, H), every step
        return keep_old * old + (1.0 - keep_old) * new

    def forward(self, new: LSTMState, old: LSTMState) -> LSTMState:
        return LSTMState(
            self._mix(self.hidden_p, new.h, old.h), self._mix(self.cell_p, new.c, old.c)
        )

    def extra_repr(self) -> str:
        return f"cell_p={self.cell_p}, hidden_p={self.hidden_p}"
