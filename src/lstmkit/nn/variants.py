"""LSTM variants, each its own small cell that overrides only the step it changes.

- ``PeepholeLSTMCell``: gates also look at the memory cell (Gers & Schmidhuber 2000).
- ``LayerNormLSTMCell``: layer normalisation inside the recurrence (Ba et al. 2016).
- ``CIFGLSTMCell``: coupled input and forget gates, ``i = 1 - f`` (Greff et al. 2017).

``CELLS`` registers every cell by the name the layer's ``cell=`` option takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmkit.nn.cell import Gates, LSTMCell, LSTMState, StepResult


class PeepholeLSTMCell(LSTMCell):
    """LSTM with peephole connections (Gers & Schmidhuber 2000).

    i_t = σ(W_i x_t + U_i h_{t-1} + p_i ⊙ c_{t-1} + b_i)
    f_t = σ(W_f x_t + U_f h_{t-1} + p_f ⊙ c_{t-1} + b_f)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(W_g x_t + U_g h_{t-1} + b_g)
    o_t = σ(W_o x_t + U_o h_{t-1} + p_o ⊙ c_t + b_o)       (sees the *new* cell)
    """

    kind = "peephole"

    def add_variant_parameters(self) -> None:
        self.peephole_input = nn.Parameter(torch.empty(self.hidden_size))  # (H,)
        self.peephole_forget = nn.Parameter(torch.empty(self.hidden_size))  # (H,)
        self.peephole_output = nn.Parameter(torch.empty(self.hidden_size))  # (H,)

    def activate(self, z: Tensor, c_prev: Tensor) -> StepResult:
        i, f, g, o = z.chunk(4, dim=-1)  # each (..., H)
        input_gate = torch.sigmoid(i + self.peephole_input * c_prev)
        forget_gate = torch.sigmoid(f + self.peephole_forget * c_prev)
        candidate = torch.tanh(g)
        c = forget_gate * c_prev + input_gate * candidate  # (..., H)
        output_gate = torch.sigmoid(o + self.peephole_output * c)
        h = self.emit(output_gate, c)
        return StepResult(LSTMState(h, c), Gates(input_gate, forget_gate, candidate, output_gate))


class LayerNormLSTMCell(LSTMCell):
    """Layer-normalised LSTM (Ba, Kiros & Hinton 2016, eqs. 20-22).

        z_t = LN(W_x x_t) + LN(W_h h_{t-1}) + b        each LN over all 4H gate units
        c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
        h_t = σ(o) ⊙ tanh(LN(c_t))

    Each LN has its own gain (init 1) and shift (init 0); ``eps`` is the usual 1e-5.
    """

    kind = "layernorm"
    eps = 1e-5

    def add_variant_parameters(self) -> None:
        gates = 4 * self.hidden_size
        self.norm_input = nn.LayerNorm(gates, eps=self.eps)  # over the 4H input pre-activations
        self.norm_hidden = nn.LayerNorm(gates, eps=self.eps)  # over the 4H recurrent ones
        self.norm_cell = nn.LayerNorm(self.hidden_size, eps=self.eps)  # over c_t before tanh

    def reset_parameters(self) -> None:
        bound = 1.0 / self.hidden_size**0.5
        for name, weight in self.named_parameters():
            if not name.startswith("norm_"):
                nn.init.uniform_(weight, -bound, bound)
        for norm in (self.norm_input, self.norm_hidden, self.norm_cell):
            norm.reset_parameters()

    def project_input(self, x: Tensor) -> Tensor:
        return self.norm_projection(x @ self.weight_ih.t())  # (..., 4H)

    def norm_projection(self, projection: Tensor) -> Tensor:
        """LN(x W_ih^T) + b, the biases folded into the norm's shift: one pass over the
        (T, B, 4H) projection fewer than adding them after it."""
        norm = self.norm_input
        shift = norm.bias if self.bias_ih is None else norm.bias + self.bias_ih + self.bias_hh
        return F.layer_norm(projection, norm.normalized_shape, norm.weight, shift, norm.eps)

    def project_hidden(self, h: Tensor, weight_hh: Tensor) -> Tensor:
        return self.norm_hidden(h @ weight_hh.t())

    def emit(self, output_gate: Tensor, c: Tensor) -> Tensor:
        h = output_gate * torch.tanh(self.norm_cell(c))  # (B, H)
        if self.weight_hr is not None:
            h = h @ self.weight_hr.t()  # (B, P)
        return h


class CIFGLSTMCell(LSTMCell):
    """Coupled input-forget gate LSTM (CIFG; Greff et al. 2017, "LSTM: A Search Space Odyssey").

    One gate decides both what to forget and what to store: ``i_t = 1 - f_t``. The weights stack
    three gate blocks in the order forget, candidate, output (3H rows instead of 4H).
    """

    kind = "cifg"
    num_gate_blocks = 3
    gate_order = ("forget", "candidate", "output")

    def activate(self, z: Tensor, c_prev: Tensor) -> StepResult:
        f, g, o = z.chunk(3, dim=-1)  # each (..., H)
        forget_gate = torch.sigmoid(f)
        input_gate = 1.0 - forget_gate
        candidate = torch.tanh(g)
        output_gate = torch.sigmoid(o)
        c = forget_gate * c_prev + input_gate * candidate  # (..., H)
        h = self.emit(output_gate, c)
        return StepResult(LSTMState(h, c), Gates(input_gate, forget_gate, candidate, output_gate))


CELLS: dict[str, type[LSTMCell]] = {
    cls.kind: cls for cls in (LSTMCell, PeepholeLSTMCell, LayerNormLSTMCell, CIFGLSTMCell)
}


def cell_class(name: str) -> type[LSTMCell]:
    """The cell registered under ``name``; an unknown name lists the ones that exist."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}; got {name!r}")
    return CELLS[name]
