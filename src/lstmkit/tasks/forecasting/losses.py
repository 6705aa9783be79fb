"""Training losses for forecasts: point (MSE, MAE) and quantile (pinball) losses."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def pinball_loss(target: Tensor, predicted: Tensor, quantiles: Tensor) -> Tensor:
    """Mean pinball loss. target (..., H, C); predicted (..., H, C, Q); quantiles (Q,)."""
    diff = target.unsqueeze(-1) - predicted  # (..., H, C, Q)
    return torch.maximum(quantiles * diff, (quantiles - 1.0) * diff).mean()


def forecast_loss(kind: str, target: Tensor, predicted: Tensor, quantiles: Tensor | None) -> Tensor:
    """``predicted`` is (B, H, C, Q): pinball over Q quantiles, else MSE/MAE on Q = 1."""
    if quantiles is not None:
        return pinball_loss(target, predicted, quantiles)
    point = predicted[..., 0]
    return F.mse_loss(point, target) if kind == "mse" else F.l1_loss(point, target)
