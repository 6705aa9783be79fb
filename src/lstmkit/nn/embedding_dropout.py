"""Embedding dropout: drop whole word types, not single features (Gal & Ghahramani 2016).

Every occurrence of a dropped token in the batch gets a zero vector, so the model cannot lean on
any single word's embedding; AWD-LSTM (Merity et al. 2017) uses it as ``dropoute``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lstmkit.nn.dropout import dropout_mask
from lstmkit.nn.validation import check_probability


class EmbeddingDropout(nn.Module):
    """Looks ``tokens`` up in ``weight`` (V, E) with rows dropped at rate ``p``, one mask per call;
    kept rows are scaled by ``1 / (1 - p)``. The identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability("embedding_dropout", p)

    def forward(self, tokens: Tensor, weight: Tensor) -> Tensor:  # (B, T), (V, E) -> (B, T, E)
        if self.training and self.p > 0.0:
            weight = weight * dropout_mask(self.p, (weight.shape[0], 1), weight)  # (V, 1) mask
        return F.embedding(tokens, weight)

    def extra_repr(self) -> str:
        return f"p={self.p}"
