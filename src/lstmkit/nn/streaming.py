"""Streaming inference: feed an LSTM one observation at a time and keep its state between calls.

    stream = lstm.stream()            # or StreamingLSTM(lstm); batch 1 by default
    for x_t in observations:          # x_t (I,) or (B, I)
        h_t = stream.step(x_t)        # (P,) or (B, P): the top layer's hidden state
    stream.reset()                    # back to the zero state (or reset(state=(h, c)))

The layer itself never keeps state (its ``forward`` is pure); the stepper owns it. With the C++
kernel available a step runs entirely in C++ (weights copied once, transposed, when the stepper
is made: make a new stepper after changing the weights); otherwise it runs the layer's own cells
under ``torch.no_grad()``. Either way ``step`` gives what ``lstm(x)`` gives at that step in
eval mode. Only unidirectional layers can stream (a backward direction needs the future).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.nn.backends import BACKENDS, Placement
from lstmkit.nn.backends.kernel import CELL_KINDS, load_kernel
from lstmkit.nn.cell import LSTMCell, LSTMState

State = tuple[Tensor, Tensor]


class StreamingLSTM:
    """A stateful single-step runner over an ``lstmkit.nn.LSTM`` (see the module docstring)."""

    def __init__(self, lstm, batch_size: int = 1) -> None:
        cfg = lstm.config
        if cfg.bidirectional:
            raise ValueError(
                "streaming needs a unidirectional LSTM (a backward direction reads the future), "
                "got bidirectional=True"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.lstm = lstm
        self.batch_size = batch_size
        self._weight = lstm.cells[0].weight_ih  # device and dtype of the layer
        self._dtype, self._device = self._weight.dtype, self._weight.device  # as when made
        self._stepper = self._make_stepper()
        self._state: list[LSTMState] = []
        self.reset()

    @property
    def uses_kernel(self) -> bool:
        """True when steps run in the C++ kernel, False on the PyTorch fallback."""
        return self._stepper is not None

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        """Copies of (h, c): (L, B, P) and (L, B, H), as ``torch.nn.LSTM`` returns them."""
        if self._stepper is not None:
            return torch.stack(self._stepper.hidden()), torch.stack(self._stepper.cells())
        return torch.stack([s.h for s in self._state]), torch.stack([s.c for s in self._state])

    def reset(self, state: State | None = None) -> None:
        """Start over from zeros, or from ``state`` = (h (L, B, P), c (L, B, H))."""
        cfg = self.lstm.config
        layers, batch = cfg.num_layers, self.batch_size
        shapes = ((layers, batch, cfg.output_size), (layers, batch, cfg.hidden_size))
        if state is None:
            h, c = (self._weight.new_zeros(shape) for shape in shapes)
        else:
            if not isinstance(state, tuple | list) or len(state) != 2:
                raise ValueError(f"state must be a tuple (h, c), got {type(state).__name__}")
            for name, tensor, shape in zip(("h", "c"), state, shapes, strict=True):
                got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                if got != shape:
                    raise ValueError(f"state {name} must have shape {shape}, got {got}")
            h, c = (t.detach().to(self._weight) for t in state)
        if self._stepper is not None:
            self._stepper.set_state(list(h), list(c))
        else:
            self._state = [LSTMState(h[k].clone(), c[k].clone()) for k in range(layers)]

    # ------------------------------------------------------------------ stepping
    def step(self, x: Tensor) -> Tensor:
        """One observation ``x`` (I,) or (B, I) -> the top layer's new h, (P,) or (B, P)."""
        unbatched = self._check(x)
        if unbatched:
            x = x.unsqueeze(0)
        h = self._stepper.step(x) if self._stepper is not None else self._python_step(x)
        return h.squeeze(0) if unbatched else h

    def _check(self, x: Tensor) -> bool:
        cfg = self.lstm.config
        if self.batch_size == 1:
            expected = f"({cfg.input_size},) or (1, {cfg.input_size})"
            shapes = ((cfg.input_size,), (1, cfg.input_size))
        else:  # one row per stream: an unbatched x would leave the other rows without input
            expected = f"({self.batch_size}, {cfg.input_size}) for batch_size={self.batch_size}"
            shapes = ((self.batch_size, cfg.input_size),)
        if not isinstance(x, Tensor):
            raise ValueError(f"step expects a tensor of shape {expected}, got {type(x).__name__}")
        shape = tuple(x.shape)
        if shape not in shapes:
            raise ValueError(f"step expects x of shape {expected}, got {shape}")
        weight = self._weight
        if (weight.dtype, weight.device) != (self._dtype, self._device):
            raise ValueError(
                f"the layer's weights moved from {self._dtype} on {self._device} to "
                f"{weight.dtype} on {weight.device} after this stepper was made; make a new one "
                "(lstm.stream())"
            )
        if x.dtype != self._dtype or x.device != self._device:
            raise ValueError(
                f"step expects x as {self._dtype} on {self._device}, got {x.dtype} on {x.device}"
            )
        return x.dim() == 1

    @torch.no_grad()
    def _python_step(self, x: Tensor) -> Tensor:
        cfg = self.lstm.config
        for layer, cell in enumerate(self.lstm.cells):
            old = self._state[layer]
            new, _ = cell.step(cell.project_input(x), old)
            # zoneout in eval mode: its expectation p·old + (1-p)·new, as the layer does
            h = cfg.zoneout_hidden * old.h + (1.0 - cfg.zoneout_hidden) * new.h
            c = cfg.zoneout_cell * old.c + (1.0 - cfg.zoneout_cell) * new.c
            self._state[layer] = LSTMState(h, c)
            x = h
        return x.clone()

    def _make_stepper(self):
        """The C++ stepper when the kernel can run this layer in eval mode, else None."""
        lstm = self.lstm
        kernel = BACKENDS["kernel"]
        placement = Placement(self._weight.device, self._weight.dtype)
        if kernel.unsupported_placement(placement) or kernel.unsupported(lstm.config, False, False):
            return None
        if lstm.config.backend not in ("auto", "kernel"):
            return None  # a backend was pinned: honour it with the PyTorch path
        layers = [_stepper_weights(cell) for cell in lstm.cells]
        kind = CELL_KINDS[lstm.config.cell]
        return load_kernel().Stepper(layers, kind, lstm.config.hidden_size, self.batch_size)


def _stepper_weights(cell: LSTMCell) -> list[Tensor | None]:
    """One layer's weights in the order the C++ Stepper reads them (detached copies)."""
    gates = cell.num_gate_blocks * cell.hidden_size
    bias = (
        cell.bias_ih + cell.bias_hh if cell.bias_ih is not None else cell.weight_ih.new_zeros(gates)
    )
    weights: list[Tensor | None] = [cell.weight_ih, bias, cell.weight_hh, cell.weight_hr, None]
    if cell.kind == "peephole":
        weights[4] = torch.stack([cell.peephole_input, cell.peephole_forget, cell.peephole_output])
    if cell.kind == "layernorm":
        for norm in (cell.norm_hidden, cell.norm_cell, cell.norm_input):
            weights += [norm.weight, norm.bias]
    return [None if w is None else w.detach().clone() for w in weights]
