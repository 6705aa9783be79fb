"""An exponential moving average of the weights (Polyak averaging), on torch's ``AveragedModel``.

After every optimiser step the average moves toward the model's weights,

    average <- decay * average + (1 - decay) * weights

starting from a copy of the weights after the first step. With ``TrainConfig(ema_decay=d)`` the
trainer validates the averaged weights, keeps the best of them, and leaves the model holding
them at the end: the average smooths out the last steps' noise, which often validates better
than any single step's weights. ``1 / (1 - decay)`` steps is roughly the window it averages
over. Buffers (e.g. running statistics) are not averaged; they follow the model's.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """The moving average of ``model``'s parameters; ``module`` is a model holding it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        real = isinstance(decay, float | int) and not isinstance(decay, bool)
        if not (real and 0.0 < decay < 1.0):
            raise ValueError(
                f"the averaging decay must lie strictly between 0 and 1, got {decay!r}"
            )
        self._averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False
        )

    @property
    def module(self) -> nn.Module:
        """A copy of the model holding the averaged weights (for evaluation)."""
        return self._averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (after an optimiser step)."""
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self._averaged.state_dict())

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self._averaged.load_state_dict(dict(state))
