"""Gate-aware initialisation of LSTM cells.

- Input weights: Glorot/Xavier uniform (as Keras).
- Recurrent weights: orthogonal, one block per gate (Saxe et al. 2014), so repeated products
  through time neither explode nor vanish at the start of training.
- Forget-gate bias 1.0 (Gers et al. 2000; Jozefowicz et al. 2015): the cell remembers by default.
- Chrono initialisation (Tallec & Ollivier 2018): for dependencies up to ``T_max`` steps,
  ``b_f ~ log(U[1, T_max - 1])`` and ``b_i = -b_f``, spreading the cells' memory time scales.

The biases are split in torch's layout: ``b_ih`` carries the value, ``b_hh`` is zero.
"""

from __future__ import annotations

import torch
from torch import nn

from lstmkit.nn.cell import LSTMCell


@torch.no_grad()
def init_cell_(cell: LSTMCell, *, forget_bias: float = 1.0, chrono_init: int = 0) -> LSTMCell:
    """Initialise ``cell`` in place as described in the module docstring; returns it."""
    cell.reset_parameters()  # variant-specific parameters (peepholes, norms) keep their own init
    nn.init.xavier_uniform_(cell.weight_ih)
    hidden = cell.hidden_size
    for k in range(cell.num_gate_blocks):
        nn.init.orthogonal_(cell.weight_hh[k * hidden : (k + 1) * hidden])  # (H, P) block
    if cell.weight_hr is not None:
        nn.init.xavier_uniform_(cell.weight_hr)
    if cell.bias_ih is None:
        return cell  # no biases: nothing to set for the forget gate
    cell.bias_ih.zero_()
    cell.bias_hh.zero_()
    forget = cell.gate_slice("forget")
    if chrono_init:
        # b_f = log(u), u ~ U[1, T_max - 1]: characteristic forgetting times up to T_max
        u = torch.empty(hidden, dtype=cell.bias_ih.dtype).uniform_(1.0, chrono_init - 1.0)
        cell.bias_ih[forget] = torch.log(u).to(cell.bias_ih.device)
        if "input" in cell.gate_order:
            cell.bias_ih[cell.gate_slice("input")] = -cell.bias_ih[forget]
    else:
        cell.bias_ih[forget] = forget_bias
    return cell
