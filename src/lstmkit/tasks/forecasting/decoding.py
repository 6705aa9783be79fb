"""The segment forecaster's decoder step: one LSTM step for every (state, query) pair.

The decoder starts every output segment j of channel c from that channel's encoder state
(b, c), with a query (position and channel embedding) that depends only on (c, j): B·C·m pairs,
53,760 at horizon 720 with segments of 24. SegRNN's code builds every pair out as a row and
runs the recurrent cell on them. The pre-activations factor, ``W_ih q[c, j] + W_hh h[b, c]``,
so here the two products run once per query and once per state and are added by
broadcasting; only the gate arithmetic runs per pair, fused in the C++ kernel where it can
(``lstmkit.nn.backends.pairs``: the standard, peephole and CIFG cells without projection or
zoneout), else in PyTorch ops. Per-row masks on a query or a state (input and recurrent dropout,
while training) do not factor; with them, for deeper stacks, and for an encoder that is not
lstmkit's LSTM, the rows are built out.
"""

from __future__ import annotations

from torch import Tensor, nn

from lstmkit.nn.backends.pairs import pair_step, pair_step_unsupported
from lstmkit.nn.cell import LSTMState
from lstmkit.nn.recurrent import LSTM as _LSTMLayer  # benchmarks/ett.py swaps the name LSTM


def decode_step(lstm: nn.Module, queries: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
    """One step of ``lstm`` for every pair: (B, C, m, P) from every state (layers, B, C, ·) of a
    (batch row, channel) and every query (C, m, I) of that channel, as the ``B·C·m`` rows of one
    call to ``lstm`` would give it (see the module docstring)."""
    h, c = state
    shapes_fit = h.dim() == c.dim() == 4 and queries.dim() == 3 and c.shape[:3] == h.shape[:3]
    if not shapes_fit or queries.shape[0] != h.shape[2]:
        raise ValueError(
            f"decode_step expects queries (C, m, I) and states (layers, B, C, ·) with the same "
            f"C; got queries {tuple(queries.shape)}, h {tuple(h.shape)}, c {tuple(c.shape)}"
        )
    layers = h.shape[0]
    if not _factors(lstm, layers):
        return _rows_built_out(lstm, queries, h, c)
    cfg = lstm.config
    cell = lstm.cell(0)
    weight_hh = lstm.weight_drop(cell.weight_hh) if cfg.weight_dropout else cell.weight_hh
    x_proj = cell.project_input(queries)  # (C, m, G*H); checks I through the product
    h_proj = cell.project_hidden(h[0], weight_hh)  # (B, C, G*H); checks P
    if c.shape[-1] != cell.hidden_size:
        raise ValueError(f"decode_step: c has {c.shape[-1]} units, the cell {cell.hidden_size}")
    fused = (
        lstm.zoneout is None
        and cfg.backend in ("auto", "kernel")
        and pair_step_unsupported(cell, x_proj, h_proj, c[0]) is None
    )
    if fused:  # the gate arithmetic of every pair in C++
        out = pair_step(cell, x_proj, h_proj, c[0])
    else:  # in PyTorch ops, broadcasting (B, C, 1, ·) against (C, m, ·)
        old = LSTMState(h[0].unsqueeze(2), c[0].unsqueeze(2))
        new, _ = cell.activate(x_proj + h_proj.unsqueeze(2), old.c)
        if lstm.zoneout is not None:
            new = lstm.zoneout(new, old)
        out = new.h  # (B, C, m, P)
    if cfg.output_dropout:
        out = lstm.output_dropout(out.reshape(1, -1, out.shape[-1])).view(out.shape)
    return out


def _factors(lstm: nn.Module, layers: int) -> bool:
    """Whether the pairs' pre-activations factor: one layer, no per-row masks."""
    if not isinstance(lstm, _LSTMLayer) or layers != 1:
        return False
    cfg = lstm.config
    return not (lstm.training and (cfg.input_dropout or cfg.recurrent_dropout))


def _rows_built_out(lstm: nn.Module, queries: Tensor, h: Tensor, c: Tensor) -> Tensor:
    """Every (state, query) pair as a row of its own: the plain way, for what does not factor."""
    b, channels, m = h.shape[1], h.shape[2], queries.shape[1]
    rows = queries.repeat(b, 1, 1).reshape(b * channels * m, 1, -1)  # (B*C*m, 1, I)
    pairs = (h.flatten(1, 2).repeat_interleave(m, dim=1), c.flatten(1, 2).repeat_interleave(m, 1))
    config = getattr(lstm, "config", None)
    batch_first = config.batch_first if config is not None else getattr(lstm, "batch_first", True)
    time_major = not batch_first
    out, _ = lstm(rows.transpose(0, 1) if time_major else rows, pairs)
    return (out[0] if time_major else out[:, 0]).reshape(b, channels, m, -1)
