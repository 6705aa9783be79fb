"""The seam between the layer and the code that runs one layer over time.

The layer (``recurrent.py``) owns everything between layers: input, inter-layer and output
dropout, state slicing, layout. A backend runs one layer, both directions, over a time-major
sequence and reports which configurations it cannot run, in words a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from lstmkit.data.padding import reversal_source
from lstmkit.nn.cell import LSTMCell
from lstmkit.nn.config import LSTMConfig
from lstmkit.nn.dropout import Zoneout


class Padding(NamedTuple):
    """A post-padded batch's valid steps and its within-length time reversal, on its device.

    Built once per call of the layer (``padding_for``) and shared by every layer and direction;
    the graphed backend copies it into its recording at each call, since a recorded graph
    cannot copy ``lengths`` to the GPU itself.
    """

    valid: Tensor  # (T, B, 1) bool: True at real steps
    source: Tensor  # (T, B) int64: the step each reversed step reads ([a b c 0 0] -> [c b a 0 0])


def padding_for(lengths: Tensor, steps: int, device: torch.device) -> Padding:
    """``Padding`` for ``lengths`` (B,) over ``steps`` time steps, built on ``device`` from one
    copy of ``lengths`` that does not make the host wait for the device."""
    lens = lengths.to(device=device, dtype=torch.int64, non_blocking=True)  # (B,)
    valid = torch.arange(steps, device=device)[:, None] < lens[None, :]  # (T, B)
    return Padding(valid.unsqueeze(-1), reversal_source(lens, steps))


@dataclass
class LayerRun:
    """Everything a backend needs to run one layer (D directions) over time."""

    cells: list[LSTMCell]  # one per direction: forward, then backward
    x: Tensor  # (T, B, I) time-major input
    lengths: Tensor | None  # (B,) int64 on CPU, valid steps per sequence; None = all T
    h0: Tensor  # (D, B, P) initial hidden state
    c0: Tensor  # (D, B, H) initial memory cell
    weights_hh: list[Tensor]  # per direction: W_hh, DropConnect-masked while training
    recurrent_masks: list[Tensor | None]  # per direction: (B, P) variational mask on h_{t-1}
    zoneout: Zoneout | None  # zoneout between steps, or None
    record: list[dict[str, Tensor]] | None = None  # per direction gate traces, if asked
    padding: Padding | None = None  # ``lengths`` already on the device (else built from them)

    def resolved_padding(self) -> Padding | None:
        """``padding``, or the one ``lengths`` gives; None when every sequence is full."""
        if self.padding is None and self.lengths is not None:
            return padding_for(self.lengths, self.x.shape[0], self.x.device)
        return self.padding


class LayerOutput(NamedTuple):
    output: Tensor  # (T, B, D*P), zero at padded steps
    h_n: Tensor  # (D, B, P) state at each sequence's last valid step
    c_n: Tensor  # (D, B, H)


class Placement(NamedTuple):
    """Where a layer's tensors live (and, for a call, its batch and whether its sequences differ
    in length): backends that run only on some devices or dtypes check it, and ``auto`` consults
    the call's batch and padding."""

    device: torch.device
    dtype: torch.dtype
    batch: int | None = None  # rows of the call being run, where known
    padded: bool = False  # the call's sequences differ in length (lengths or a mask)


class Backend(Protocol):
    """A way to run a layer. ``unsupported`` returns None or the reason it cannot run it.

    A backend tied to a device or dtype also defines ``unsupported_placement(placement) ->
    str | None``; ``select_backend`` consults it when the placement is known.
    """

    name: str

    def unsupported(self, config: LSTMConfig, training: bool, tracing: bool) -> str | None: ...

    def run_layer(self, run: LayerRun) -> LayerOutput: ...


def active_transform() -> str | None:
    """The autograd transform in force that only PyTorch ops can run under, or None.

    torch.func transforms (grad, vmap, jvp) and forward-mode AD need every op to have its rule:
    the C++ kernel's node has a backward pass only, and torch's fused LSTM op no vmap rule.
    """
    if torch._C._are_functorch_transforms_active():
        return "a torch.func transform (grad, vmap, jvp)"
    if getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0:
        return "forward-mode AD (an open dual level)"
    return None
