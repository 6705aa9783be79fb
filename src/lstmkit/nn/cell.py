"""The LSTM cell: one step of the recurrence, with every gate computed and named.

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)        input gate: what to store
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)        forget gate: what to discard
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate: what could be stored
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)        output gate: what to show
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                       memory cell
    h_t = o_t ⊙ tanh(c_t)            (then h_t = W_hr h_t with a projection, LSTMP)

Weights use torch.nn.LSTM's layout (gate order i, f, g, o stacked along dim 0) so that weights
copy across unchanged. A cell splits its step in two so the runner can batch the input work:

    project_input(x)          (..., I) -> (..., G*H)   one GEMM for every time step at once
    step(x_proj, state, w_hh) -> (new state, gates)    the recurrence, once per step

Variants (peephole, layer norm, coupled gates) are their own small cells in ``variants.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lstmkit.nn.validation import check_nonnegative_int, check_positive_int


class LSTMState(NamedTuple):
    """Recurrent state of one cell: hidden ``h`` (B, P or H) and memory cell ``c`` (B, H)."""

    h: Tensor
    c: Tensor


class Gates(NamedTuple):
    """Gate activations of one step, each (B, H). ``input`` is ``1 - forget`` in a CIFG cell."""

    input: Tensor
    forget: Tensor
    candidate: Tensor
    output: Tensor


class StepResult(NamedTuple):
    """What one cell step returns: the new state and the gates that produced it."""

    state: LSTMState
    gates: Gates


class LSTMCell(nn.Module):
    """The standard LSTM cell (Hochreiter & Schmidhuber 1997, with a forget gate).

    Args:
        input_size: features per step of the input ``x_t``.
        hidden_size: size ``H`` of the memory cell and of each gate.
        bias: learn the biases ``b_ih`` and ``b_hh`` (as torch.nn.LSTMCell).
        proj_size: if > 0, project ``h_t`` down to this size with ``W_hr`` (Sak et al. 2014).

    Calling the cell runs one step: ``cell(x_t, state) -> LSTMState``.
    """

    #: the gate blocks stacked along dim 0 of the weights, in order
    gate_order: tuple[str, ...] = ("input", "forget", "candidate", "output")
    num_gate_blocks: int = 4
    #: a short name used in the registry and in messages
    kind: str = "lstm"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int = 0
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.proj_size = check_nonnegative_int("proj_size", proj_size)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}"
            )
        self.bias = bool(bias)
        gates = self.num_gate_blocks * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, self.input_size))  # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(gates, self.output_size))  # (G*H, P or H)
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(gates))  # (G*H,)
            self.bias_hh = nn.Parameter(torch.empty(gates))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if self.proj_size:
            self.weight_hr = nn.Parameter(torch.empty(self.proj_size, self.hidden_size))
        else:
            self.register_parameter("weight_hr", None)
        self.add_variant_parameters()
        self.reset_parameters()

    def add_variant_parameters(self) -> None:
        """Variants create their extra parameters here, before the shared ``reset_parameters``."""

    @property
    def output_size(self) -> int:
        """Size of ``h_t``: ``proj_size`` with a projection, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def gate_slice(self, gate: str) -> slice:
        """Rows of ``weight_ih``/``weight_hh``/biases that belong to ``gate`` (e.g. "forget")."""
        if gate not in self.gate_order:
            raise ValueError(
                f"{type(self).__name__} has gates {', '.join(self.gate_order)}; got {gate!r}"
            )
        k = self.gate_order.index(gate)
        return slice(k * self.hidden_size, (k + 1) * self.hidden_size)

    def reset_parameters(self) -> None:
        """torch.nn.LSTMCell's initialisation, U(-1/√H, 1/√H); the layer applies lstmkit's."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def initial_state(self, batch_size: int, like: Tensor) -> LSTMState:
        """Zero state for ``batch_size`` sequences, on ``like``'s device and dtype."""
        h = like.new_zeros(batch_size, self.output_size)
        c = like.new_zeros(batch_size, self.hidden_size)
        return LSTMState(h, c)

    def project_input(self, x: Tensor) -> Tensor:
        """Input contribution to every gate, both biases included: (..., I) -> (..., G*H)."""
        out = x @ self.weight_ih.t()
        if self.bias_ih is not None:
            out = out + (self.bias_ih + self.bias_hh)
        return out

    def project_hidden(self, h: Tensor, weight_hh: Tensor) -> Tensor:
        """Recurrent contribution to every gate: (B, P or H) -> (B, G*H)."""
        return h @ weight_hh.t()

    def step(self, x_proj: Tensor, state: LSTMState, weight_hh: Tensor | None = None) -> StepResult:
        """One step from a projected input ``x_proj`` (B, G*H) and the previous ``state``.

        ``weight_hh`` overrides the recurrent weights for this step (the layer passes a
        DropConnect-masked copy during training); by default the cell's own are used.
        """
        w_hh = self.weight_hh if weight_hh is None else weight_hh
        return self.activate(x_proj + self.project_hidden(state.h, w_hh), state.c)

    def activate(self, z: Tensor, c_prev: Tensor) -> StepResult:
        """The gates and the new state from the summed pre-activations ``z`` (..., G*H).

        ``z`` and ``c_prev`` (..., H) may be any shapes that broadcast against each other: the
        segment forecaster decodes many queries from one state without repeating the state.
        """
        i, f, g, o = z.chunk(4, dim=-1)  # each (..., H)
        gates = Gates(torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o))
        c = gates.forget * c_prev + gates.input * gates.candidate  # (..., H)
        h = self.emit(gates.output, c)
        return StepResult(LSTMState(h, c), gates)

    def emit(self, output_gate: Tensor, c: Tensor) -> Tensor:
        """Hidden output ``h_t = o_t ⊙ tanh(c_t)``, projected when ``proj_size > 0``."""
        h = output_gate * torch.tanh(c)  # (B, H)
        if self.weight_hr is not None:
            h = h @ self.weight_hr.t()  # (B, P)
        return h

    def forward(
        self, x: Tensor, state: LSTMState | tuple[Tensor, Tensor] | None = None
    ) -> LSTMState:
        """Run one step on ``x`` (B, I); ``state`` defaults to zeros."""
        if x.dim() != 2 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects x of shape (batch, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        if state is None:
            state = self.initial_state(x.shape[0], x)
        state = LSTMState(*state)
        return self.step(self.project_input(x), state).state

    def extra_repr(self) -> str:
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}{extra}"
