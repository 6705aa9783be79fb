"""``LSTM``: runs cells over time, with layers, both directions, variable lengths and dropout.

Shapes follow torch.nn.LSTM (B batch, T steps, I input, H hidden, P = proj_size or H,
D = 2 if bidirectional else 1, L layers):

    x       (B, T, I) if batch_first else (T, B, I); or (T, I) unbatched
    output  (B, T, D*P)                                 zero at padded steps
    h_n     (L*D, B, P)   c_n (L*D, B, H)               each sequence's last valid step

Layer stack, with where each regulariser acts:

    x ─input_dropout─► [layer 0: fwd ⟲ / bwd ⟲] ─dropout, hidden_dropout─► [layer 1] ─ ...
      ... ─► [layer L-1] ─output_dropout─► output
    inside each ⟲: recurrent_dropout on h_{t-1}, weight_dropout on W_hh, zoneout on (h, c)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lstmkit.data.padding import check_lengths, mask_to_lengths
from lstmkit.nn.backends import BACKENDS, BackendChoice, LayerRun, Placement, select_backend
from lstmkit.nn.backends.base import padding_for
from lstmkit.nn.backends.kernel import kernel_tried
from lstmkit.nn.cell import LSTMCell
from lstmkit.nn.config import LSTMConfig
from lstmkit.nn.dropout import LockedDropout, WeightDrop, Zoneout, dropout_mask
from lstmkit.nn.init import init_cell_
from lstmkit.nn.streaming import StreamingLSTM
from lstmkit.nn.variants import cell_class

State = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class GateTrace:
    """Per-step activations of one layer in one direction, each (B, T, H), zero at padding."""

    input_gate: Tensor
    forget_gate: Tensor
    candidate: Tensor
    output_gate: Tensor
    cell: Tensor
    hidden: Tensor  # (B, T, P)

    def as_dict(self) -> dict[str, Tensor]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LSTMTrace:
    """What ``LSTM.trace`` returns: the usual outputs plus ``layers[layer][direction]``."""

    output: Tensor
    state: State
    layers: list[list[GateTrace]]

    def named(self) -> dict[str, Tensor]:
        """Every traced tensor under a name like ``"layer0.forward.forget_gate"``."""
        out = {}
        for layer, directions in enumerate(self.layers):
            for d, trace in enumerate(directions):
                where = f"layer{layer}.{'backward' if d else 'forward'}"
                out.update({f"{where}.{k}": v for k, v in trace.as_dict().items()})
        return out


class LSTM(nn.Module):
    """A multi-layer LSTM with explicit gates, variants, variable lengths and regularisers.

    Takes the same arguments as torch.nn.LSTM (``batch_first`` defaults to True here) plus the
    options of :class:`LSTMConfig`: ``cell`` ("lstm", "peephole", "layernorm", "cifg"), the
    dropout and zoneout rates, ``forget_bias``, ``chrono_init`` and ``backend``.

    ``forward(x, state=None, lengths=None, mask=None) -> (output, (h_n, c_n))``. Give either
    ``lengths`` (B,) or a (B, T) boolean ``mask`` whose valid steps come first (post padding).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **options: Any):
        super().__init__()
        config = LSTMConfig(input_size, hidden_size, num_layers, **options)
        self.config = config
        make_cell = cell_class(config.cell)
        self.cells = nn.ModuleList()  # index layer * D + direction
        for layer in range(config.num_layers):
            layer_input = (
                config.input_size if layer == 0 else config.num_directions * config.output_size
            )
            for _ in range(config.num_directions):
                self.cells.append(
                    make_cell(layer_input, config.hidden_size, config.bias, config.proj_size)
                )
        self.input_dropout = LockedDropout(config.input_dropout)
        self.hidden_dropout = LockedDropout(config.hidden_dropout)
        self.output_dropout = LockedDropout(config.output_dropout)
        self.weight_drop = WeightDrop(config.weight_dropout)
        has_zoneout = config.zoneout_cell or config.zoneout_hidden
        self.zoneout = Zoneout(config.zoneout_cell, config.zoneout_hidden) if has_zoneout else None
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: LSTMConfig) -> LSTM:
        options = config.to_dict()
        return cls(options.pop("input_size"), options.pop("hidden_size"), **options)

    @classmethod
    def from_torch(cls, module: nn.LSTM, **options: Any) -> LSTM:
        """Convert a ``torch.nn.LSTM`` (configuration and weights); see ``lstmkit.nn.convert``."""
        from lstmkit.nn.convert import from_torch  # convert imports this module

        return from_torch(module, **options)

    def to_torch(self) -> nn.LSTM:
        """This layer's weights in a ``torch.nn.LSTM`` (standard cell only)."""
        from lstmkit.nn.convert import to_torch

        return to_torch(self)

    def reset_parameters(self) -> None:
        """lstmkit's initialisation (see ``lstmkit.nn.init``) for every cell."""
        for cell in self.cells:
            init_cell_(
                cell, forget_bias=self.config.forget_bias, chrono_init=self.config.chrono_init
            )

    def cell(self, layer: int, direction: int = 0) -> LSTMCell:
        """The cell of ``layer`` (0-based) and ``direction`` (0 forward, 1 backward)."""
        return self.cells[layer * self.config.num_directions + direction]

    @property
    def backend_choice(self) -> BackendChoice:
        """Which backend runs this layer in its current mode (train/eval), and why.

        The call is not known here: in eval mode a call with only a few rows may run on the
        C++ kernel instead, and so may a call whose sequences differ in length in either mode,
        which the reason then says once this process has built the kernel or found it
        unavailable (asking before would build it; see ``select_backend``).
        """
        weight = self.cells[0].weight_ih
        placement = Placement(weight.device, weight.dtype)
        choice = select_backend(self.config, self.training, placement=placement)
        if choice.name != "fused" or not kernel_tried():
            return choice  # (asking what a padded call runs on would build the kernel now)
        padded = select_backend(
            self.config, self.training, placement=placement._replace(padded=True)
        )
        if padded.name == choice.name:
            return choice
        why = padded.reason.removeprefix("fastest backend here: ")
        return BackendChoice(
            choice.name,
            f"{choice.reason}; a call whose sequences differ in length (lengths or mask) runs on "
            f"the {padded.name} backend: {why}",
        )

    def stream(self, batch_size: int = 1) -> StreamingLSTM:
        """A stepper that feeds this layer one observation at a time (``lstmkit.nn.streaming``)."""
        return StreamingLSTM(self, batch_size)

    def explain_backend(self) -> str:
        choice = self.backend_choice
        return f"{choice.name} backend: {choice.reason}"

    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        output, final, _ = self._run(x, state, lengths, mask, record=False)
        return output, final

    def trace(
        self,
        x: Tensor,
        state: State | None = None,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> LSTMTrace:
        """Run as ``forward`` on the reference backend and keep every gate and cell state.

        ``trace(x).layers[l][d].forget_gate`` is (B, T, H) for layer ``l``, direction ``d``;
        ``trace(x).named()`` gives them all by name. Unbatched input gives batch size 1.
        """
        output, final, records = self._run(x, state, lengths, mask, record=True)
        layers = []
        for records_of_layer in records:
            layers.append(
                [
                    GateTrace(**{k: v.transpose(0, 1) for k, v in r.items()})
                    for r in records_of_layer
                ]
            )
        return LSTMTrace(output, final, layers)

    def _run(self, x, state, lengths, mask, record: bool):
        cfg = self.config
        all_cells = list(self.cells)  # (slicing the ModuleList would build a new one per layer)
        unbatched = self._check_input(x, all_cells[0])
        if unbatched:
            x = x.unsqueeze(0 if cfg.batch_first else 1)
        seq = x.transpose(0, 1) if cfg.batch_first else x  # (T, B, I)
        steps, batch = seq.shape[0], seq.shape[1]
        if lengths is not None or mask is not None:
            lengths = self._resolve_lengths(lengths, mask, batch, steps)
        padding = None if lengths is None else padding_for(lengths, steps, seq.device)
        if padding is not None:  # padding never reaches a gradient, whatever it holds (NaN too)
            seq = seq.masked_fill(~padding.valid, 0.0)
        h0, c0 = self._initial_state(state, seq, unbatched)
        placement = Placement(seq.device, seq.dtype, batch, padded=lengths is not None)
        name = "reference" if record else select_backend(cfg, self.training, False, placement).name
        backend = BACKENDS[name]

        # (each regulariser is an identity at rate 0; skipping the call saves its module dispatch,
        # which is a noticeable share of a batch-1 call)
        layer_input = self.input_dropout(seq) if cfg.input_dropout else seq  # (T, B, I)
        directions = cfg.num_directions
        h_n, c_n, records = [], [], []
        for layer in range(cfg.num_layers):
            if layer > 0:
                if cfg.hidden_dropout:
                    layer_input = self.hidden_dropout(layer_input)
                if cfg.dropout and self.training:
                    layer_input = F.dropout(layer_input, cfg.dropout, training=True)
            span = slice(layer * directions, (layer + 1) * directions)
            cells = all_cells[span]
            run = LayerRun(
                cells=cells,
                x=layer_input,
                lengths=lengths,
                padding=padding,
                h0=h0 if cfg.num_layers == 1 else h0[span],  # (a slice is an op per call)
                c0=c0 if cfg.num_layers == 1 else c0[span],
                weights_hh=[
                    self.weight_drop(c.weight_hh) if cfg.weight_dropout else c.weight_hh
                    for c in cells
                ],
                recurrent_masks=[self._recurrent_mask(batch, seq) for _ in cells],
                zoneout=self.zoneout,
                record=[] if record else None,
            )
            result = backend.run_layer(run)
            layer_input = result.output  # (T, B, D*P)
            h_n.append(result.h_n)
            c_n.append(result.c_n)
            records.append(run.record)
        output = self.output_dropout(layer_input) if cfg.output_dropout else layer_input
        if cfg.batch_first:
            output = output.transpose(0, 1)  # (B, T, D*P)
        # (L*D, B, P), (L*D, B, H); one layer's state needs no concatenating copy
        final = (torch.cat(h_n), torch.cat(c_n)) if len(h_n) > 1 else (h_n[0], c_n[0])
        if unbatched:
            output = output.squeeze(0 if cfg.batch_first else 1)
            final = (final[0].squeeze(1), final[1].squeeze(1))
        return output, final, records

    def _recurrent_mask(self, batch: int, like: Tensor) -> Tensor | None:
        p = self.config.recurrent_dropout
        if not self.training or p == 0.0:
            return None
        return dropout_mask(p, (batch, self.config.output_size), like)  # (B, P) for all T

    # ----------------------------------------------------------------- input checks
    def _check_input(self, x: Tensor, first: LSTMCell) -> bool:
        """Validate ``x`` against the layer and its ``first`` cell; returns True when it is
        unbatched (T, I)."""
        cfg = self.config
        if not isinstance(x, Tensor):
            raise TypeError(f"LSTM input must be a torch.Tensor, got {type(x).__name__}")
        shape = x.shape
        if len(shape) not in (2, 3):
            layout = "(batch, seq, features)" if cfg.batch_first else "(seq, batch, features)"
            raise ValueError(
                f"LSTM expects input of shape {layout} or (seq, features) unbatched, "
                f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            )
        if shape[-1] != cfg.input_size:
            raise ValueError(
                f"LSTM was built for input_size={cfg.input_size} features per step, "
                f"got input of shape {tuple(x.shape)} with {x.shape[-1]}"
            )
        if not x.is_floating_point():
            raise ValueError(f"LSTM input must be a floating-point tensor, got dtype {x.dtype}")
        weight = first.weight_ih
        if x.device != weight.device or (x.dtype != weight.dtype and not _autocast(x)):
            raise ValueError(
                f"LSTM input is {x.dtype} on {x.device} but the weights are {weight.dtype} on "
                f"{weight.device}; convert one to match (e.g. x.to(lstm.cells[0].weight_ih) or "
                f"lstm.to(x.dtype))"
            )
        if 0 in shape:
            raise ValueError(
                "LSTM input must have at least one step and one sequence, "
                f"got shape {tuple(x.shape)}"
            )
        return len(shape) == 2

    def _resolve_lengths(
        self, lengths: Tensor | None, mask: Tensor | None, batch: int, steps: int
    ) -> Tensor | None:
        if lengths is not None and mask is not None:
            raise ValueError("give either lengths or mask, not both")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.shape != (batch, steps):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(
                    f"mask must be a (batch, seq) = ({batch}, {steps}) tensor, got {got}"
                )
            lengths = mask_to_lengths(mask.cpu())
            empty = torch.nonzero(lengths == 0).flatten().tolist()
            if empty:
                raise ValueError(
                    f"every sequence needs at least one valid step, but mask row(s) "
                    f"{_preview_rows(empty)} are all False"
                )
        if lengths is None:
            return None
        lengths = check_lengths(lengths, batch, steps)
        return None if bool((lengths == steps).all()) else lengths

    def _initial_state(self, state: State | None, seq: Tensor, unbatched: bool) -> State:
        cfg = self.config
        layers = cfg.num_layers * cfg.num_directions
        batch = seq.shape[1]
        if state is None:
            return (
                seq.new_zeros(layers, batch, cfg.output_size),
                seq.new_zeros(layers, batch, cfg.hidden_size),
            )
        if not isinstance(state, tuple | list) or len(state) != 2:
            raise ValueError(f"state must be a tuple (h_0, c_0), got {type(state).__name__}")
        checked = []
        for name, tensor, size in (
            ("h_0", state[0], cfg.output_size),
            ("c_0", state[1], cfg.hidden_size),
        ):
            expected = (layers, size) if unbatched else (layers, batch, size)
            got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            if got != expected:
                what = "proj_size or hidden_size" if name == "h_0" else "hidden_size"
                dims = "num_layers*num_directions, " + ("" if unbatched else "batch, ") + what
                raise ValueError(f"{name} must have shape ({dims}) = {expected}, got {got}")
            if tensor.device != seq.device or (tensor.dtype != seq.dtype and not _autocast(seq)):
                raise ValueError(
                    f"{name} must be {seq.dtype} on {seq.device} like the input, got "
                    f"{tensor.dtype} on {tensor.device}"
                )
            checked.append(tensor.unsqueeze(1) if unbatched else tensor)
        return checked[0], checked[1]

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"{cfg.input_size}, {cfg.hidden_size}, num_layers={cfg.num_layers}, cell={cfg.cell!r}"
        )


def _preview_rows(rows: list[int]) -> str:
    return str(rows) if len(rows) <= 8 else f"{rows[:8]} ... ({len(rows)} rows)"


def _autocast(x: Tensor) -> bool:
    """Whether autocast is on for ``x``'s device: then input, state and weights may differ in
    dtype, and each op casts."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
