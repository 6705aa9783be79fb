"""Weight conversion between ``lstmkit.nn.LSTM`` and ``torch.nn.LSTM``, both ways.

Both use the same per-gate layout (i, f, g, o stacked along dim 0), so conversion copies
tensors under torch's names ``weight_ih_l{k}[_reverse]`` and friends.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lstmkit.nn.recurrent import LSTM

log = logging.getLogger(__name__)


def _torch_names(layer: int, direction: int, with_bias: bool, with_proj: bool) -> dict[str, str]:
    """Our cell attribute -> torch.nn.LSTM parameter name, for one layer and direction."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    names = ["weight_ih", "weight_hh"]
    names += ["bias_ih", "bias_hh"] if with_bias else []
    names += ["weight_hr"] if with_proj else []
    return {name: name + suffix for name in names}


@torch.no_grad()
def from_torch(module: nn.LSTM, **options) -> LSTM:
    """A ``lstmkit.nn.LSTM`` with ``module``'s configuration and a copy of its weights.

    ``options`` add lstmkit-only settings (e.g. ``backend="reference"``, ``zoneout_cell=0.1``).
    """
    if not isinstance(module, nn.LSTM):
        raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
    ours = LSTM(
        module.input_size,
        module.hidden_size,
        module.num_layers,
        bidirectional=module.bidirectional,
        proj_size=module.proj_size,
        batch_first=module.batch_first,
        bias=module.bias,
        dropout=float(module.dropout),
        **options,
    )
    ours.to(device=module.weight_ih_l0.device, dtype=module.weight_ih_l0.dtype)
    for layer in range(module.num_layers):
        for d in range(ours.config.num_directions):
            cell = ours.cell(layer, d)
            for attr, name in _torch_names(layer, d, module.bias, module.proj_size > 0).items():
                getattr(cell, attr).copy_(getattr(module, name))
    ours.train(module.training)
    return ours


@torch.no_grad()
def to_torch(lstm: LSTM) -> nn.LSTM:
    """A ``torch.nn.LSTM`` with ``lstm``'s weights; only the standard cell has an equivalent."""
    cfg = lstm.config
    if cfg.cell != "lstm":
        raise ValueError(
            f"to_torch needs cell='lstm' (torch.nn.LSTM has no {cfg.cell!r} cell), got {cfg.cell!r}"
        )
    # torch.nn.LSTM has only `dropout` between layers; every other rate is lstmkit's own
    dropped = [name for name in cfg.rate_fields() if name != "dropout" and getattr(cfg, name)]
    if dropped:
        log.warning("torch.nn.LSTM has no equivalent of %s; they are not carried over", dropped)
    weight = lstm.cell(0).weight_ih
    module = nn.LSTM(
        cfg.input_size,
        cfg.hidden_size,
        cfg.num_layers,
        bias=cfg.bias,
        batch_first=cfg.batch_first,
        dropout=cfg.dropout,
        bidirectional=cfg.bidirectional,
        proj_size=cfg.proj_size,
        device=weight.device,
        dtype=weight.dtype,
    )
    for layer in range(cfg.num_layers):
        for d in range(cfg.num_directions):
            cell = lstm.cell(layer, d)
            for attr, name in _torch_names(layer, d, cfg.bias, cfg.proj_size > 0).items():
                getattr(module, name).copy_(getattr(cell, attr))
    module.train(lstm.training)
    return module
