"""float64 gradient checks of every cell variant and of the stochastic regularisers."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from lstmkit.nn import LSTM


def _check(lstm: LSTM, lengths=None, seed: int | None = None) -> None:
    """gradcheck w.r.t. the input, the initial state and every parameter."""
    lstm = lstm.double()
    names = [name for name, _ in lstm.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in lstm.named_parameters()]
    cfg = lstm.config
    layers = cfg.num_layers * cfg.num_directions
    x = torch.randn(2, 4, cfg.input_size, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, 2, cfg.output_size, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(layers, 2, cfg.hidden_size, dtype=torch.float64, requires_grad=True)

    def run(x, h0, c0, *flat):
        if seed is not None:
            torch.manual_seed(seed)  # the same dropout masks on every evaluation
        out, (h, c) = functional_call(
            lstm, dict(zip(names, flat, strict=True)), (x, (h0, c0)), {"lengths": lengths}
        )
        return out, h, c

    assert gradcheck(run, (x, h0, c0, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "layernorm", "cifg"])
def test_gradcheck_cell(cell):
    torch.manual_seed(0)
    _check(LSTM(3, 4, cell=cell, backend="reference"))


@pytest.mark.parametrize("cell", ["lstm", "peephole", "layernorm", "cifg"])
def test_gradcheck_cell_two_layers_bidirectional_projection_lengths(cell):
    torch.manual_seed(1)
    lstm = LSTM(3, 4, 2, cell=cell, bidirectional=True, proj_size=2, backend="reference")
    _check(lstm, lengths=torch.tensor([4, 2]))


def test_gradcheck_zoneout_in_eval():
    torch.manual_seed(2)
    lstm = LSTM(3, 4, zoneout_cell=0.3, zoneout_hidden=0.2).eval()
    _check(lstm, lengths=torch.tensor([3, 4]))


@pytest.mark.parametrize(
    "options",
    [
        {"weight_dropout": 0.3},
        {"recurrent_dropout": 0.3},
        {"input_dropout": 0.3, "hidden_dropout": 0.3, "output_dropout": 0.3, "num_layers": 2},
        {"zoneout_cell": 0.3, "zoneout_hidden": 0.3},
    ],
    ids=["weight-drop", "recurrent", "locked", "zoneout-train"],
)
def test_gradcheck_with_fixed_masks_in_training(options):
    torch.manual_seed(3)
    lstm = LSTM(3, 4, backend="reference", **options).train()
    _check(lstm, seed=1234)
