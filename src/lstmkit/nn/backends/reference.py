"""The reference backend: PyTorch ops and a Python loop over time.

It runs every cell variant and regulariser, records gate activations on request, and is the
path the float64 gradient checks run on. Layout of one direction over a post-padded batch:

    x (T, B, I) ──project_input──► x_proj (T, B, G*H)        one GEMM for all steps
    for t in 0..T-1:  state = step(x_proj[t], state)          one GEMM per step (W_hh)
                      padded step (t >= length): state kept, output 0

The backward direction runs the same loop on each sequence reversed *within its length*
([a b c 0 0] -> [c b a 0 0]), so padding never enters its state either.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lstmkit.nn.backends.base import LayerOutput, LayerRun, Padding
from lstmkit.nn.cell import Gates, LSTMCell, LSTMState, StepResult
from lstmkit.nn.config import LSTMConfig
from lstmkit.nn.dropout import Zoneout


class ReferenceBackend:
    name = "reference"

    def unsupported(self, config: LSTMConfig, training: bool, tracing: bool) -> str | None:
        return None  # runs everything

    def run_layer(self, run: LayerRun) -> LayerOutput:
        return run_layer(run)


def run_layer(run: LayerRun, advance: Advance | None = None) -> LayerOutput:
    """Run every direction of ``run`` with the loop below, stepping with ``advance``."""
    outputs, h_n, c_n = [], [], []
    padding = run.resolved_padding()
    for d, cell in enumerate(run.cells):
        record = {} if run.record is not None else None
        out, state = run_direction(
            cell,
            run.x,
            padding,
            LSTMState(run.h0[d], run.c0[d]),
            run.weights_hh[d],
            run.recurrent_masks[d],
            run.zoneout,
            reverse=d == 1,
            record=record,
            advance=advance,
        )
        if run.record is not None:
            run.record.append(record)
        outputs.append(out)
        h_n.append(state.h)
        c_n.append(state.c)
    return LayerOutput(torch.cat(outputs, dim=-1), torch.stack(h_n), torch.stack(c_n))


def advance_step(
    cell: LSTMCell,
    x_proj: Tensor,
    state: LSTMState,
    weight_hh: Tensor,
    recurrent_mask: Tensor | None,
    zoneout: Zoneout | None,
    keep: Tensor | None,
) -> StepResult:
    """One step of the loop: the cell's step on the (masked) state, zoneout, padding.

    ``keep`` (B, 1) is False for sequences already past their length: they keep their state.
    """
    h_in = state.h if recurrent_mask is None else state.h * recurrent_mask
    new, gates = cell.step(x_proj, LSTMState(h_in, state.c), weight_hh)
    if zoneout is not None:
        new = zoneout(new, state)
    if keep is not None:
        new = LSTMState(torch.where(keep, new.h, state.h), torch.where(keep, new.c, state.c))
    return StepResult(new, gates)


Advance = Callable[
    [LSTMCell, Tensor, LSTMState, Tensor, Tensor | None, Zoneout | None, Tensor | None],
    tuple[LSTMState, Gates | None],  # gates may be None where tracing is not supported
]


def run_direction(
    cell: LSTMCell,
    x: Tensor,
    padding: Padding | None,
    state: LSTMState,
    weight_hh: Tensor,
    recurrent_mask: Tensor | None,
    zoneout: Zoneout | None,
    reverse: bool = False,
    record: dict[str, Tensor] | None = None,
    advance: Advance | None = None,
) -> tuple[Tensor, LSTMState]:
    """Run ``cell`` over ``x`` (T, B, I); returns outputs (T, B, P) and the final state.

    ``padding`` (None: every sequence has all T steps) marks the valid steps; ``advance`` runs
    one step (default: ``advance_step``); the compiled backend passes its ``torch.compile``-d
    copy.
    """
    advance = advance_step if advance is None else advance
    steps = x.shape[0]
    valid = None if padding is None else padding.valid  # (T, B, 1) bool: True at real steps
    if reverse:
        x = _reverse(x, padding)
    x_proj = cell.project_input(x)  # (T, B, G*H)
    hidden, trace = [], []
    for t in range(steps):
        keep = None if valid is None else valid[t]  # (B, 1)
        state, gates = advance(cell, x_proj[t], state, weight_hh, recurrent_mask, zoneout, keep)
        hidden.append(state.h)
        if record is not None:
            trace.append((*gates, state.c, state.h))
    output = torch.stack(hidden)  # (T, B, P)
    if valid is not None:
        output = output * valid
    if reverse:
        output = _reverse(output, padding)
    if record is not None:
        names = ("input_gate", "forget_gate", "candidate", "output_gate", "cell", "hidden")
        for name, series in zip(names, zip(*trace, strict=True), strict=True):
            values = torch.stack(series)  # (T, B, H)
            if valid is not None:
                values = values * valid
            record[name] = _reverse(values, padding) if reverse else values
    return output, state


def _reverse(x: Tensor, padding: Padding | None) -> Tensor:
    """Reverse each sequence of ``x`` (T, B, F) in time within its length (its own inverse)."""
    if padding is None:
        return x.flip(0)
    return x.gather(0, padding.source.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
