"""One LSTM step for every pair of a state and an input, fused in the C++ kernel.

A decoder that starts many inputs from each of many states (the segment forecaster starts
every output segment of a channel from that channel's encoder state) needs the step for every
pair. Its pre-activations factor, ``z[b, c, j] = x_proj[c, j] + h_proj[b, c]``, so the matrix
products run once per input and once per state; what is left per pair is the gate arithmetic.
In PyTorch ops that arithmetic writes and reads B·C·M·4H values several times over, forward and
backward; ``pair_step`` runs it in C++ (``csrc/pairs.h``), each pair in cache, saving nothing
and recomputing the gates in the backward pass.

    x_proj (C, M, G)   the inputs' projections, biases included (``cell.project_input``)
    h_proj (B, C, G)   the states' recurrent projections (``cell.project_hidden``)
    c_prev (B, C, H)   the states' cells
    ->  h  (B, C, M, H)  every pair's new hidden state
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit.nn.backends.kernel import CELL_KINDS, kernel_unavailable, load_kernel
from lstmkit.nn.cell import LSTMCell

PAIR_CELLS = ("lstm", "peephole", "cifg")  # the layer-norm cell would renormalise every pair


def pair_step_unsupported(cell: LSTMCell, *tensors: Tensor) -> str | None:
    """Why ``pair_step`` cannot run ``cell`` on ``tensors`` (its inputs), or None."""
    if cell.kind not in PAIR_CELLS:
        return f"the fused pair step runs the {', '.join(PAIR_CELLS)} cells, not {cell.kind!r}"
    if cell.proj_size:
        return "the fused pair step has no projection (proj_size > 0)"
    kinds = {(t.device.type, t.dtype) for t in (*tensors, cell.weight_ih)}
    if len(kinds) != 1 or next(iter(kinds)) not in {("cpu", torch.float32), ("cpu", torch.float64)}:
        got = ", ".join(sorted(f"{dtype} on {device}" for device, dtype in kinds))
        return f"the fused pair step runs float32/float64 CPU tensors of one dtype, got {got}"
    return kernel_unavailable()


def pair_step(cell: LSTMCell, x_proj: Tensor, h_proj: Tensor, c_prev: Tensor) -> Tensor:
    """Every pair's new hidden state (B, C, M, H); see the module docstring for the shapes."""
    reason = pair_step_unsupported(cell, x_proj, h_proj, c_prev)
    if reason is not None:
        raise ValueError(reason)
    peep = None
    if cell.kind == "peephole":
        peep = torch.stack([cell.peephole_input, cell.peephole_forget, cell.peephole_output])
    return _PairStep.apply(CELL_KINDS[cell.kind], x_proj, h_proj, c_prev, peep)


class _PairStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kind: int, x_proj: Tensor, h_proj: Tensor, c_prev: Tensor, peep):
        ctx.kind = kind
        ctx.save_for_backward(x_proj, h_proj, c_prev, peep)
        return load_kernel().pair_forward(x_proj, h_proj, c_prev, peep, kind)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor):
        x_proj, h_proj, c_prev, peep = ctx.saved_tensors
        dx, dh, dc, dpeep = load_kernel().pair_backward(
            grad_h, x_proj, h_proj, c_prev, peep, ctx.kind
        )
        return None, dx, dh, dc, dpeep if peep is not None else None
