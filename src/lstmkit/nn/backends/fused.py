"""The fused backend: PyTorch's own LSTM kernel (cuDNN on GPUs, ATen's on CPU).

Our parameters are handed to a parameter-free ``torch.nn.LSTM`` template through
``torch.func.functional_call`` one layer at a time, so gradients flow to the cells' own
weights. Variable lengths go through ``pack_padded_sequence``.
"""

from __future__ import annotations

from functools import lru_cache

from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstmkit.nn.backends.base import LayerOutput, LayerRun, active_transform
from lstmkit.nn.config import LSTMConfig

_CELL_NAMES = {
    "peephole": "peephole connections are",
    "layernorm": "layer-normalised cells are",
    "cifg": "coupled input-forget gates (CIFG) are",
}


class FusedBackend:
    name = "fused"

    def unsupported(self, config: LSTMConfig, training: bool, tracing: bool) -> str | None:
        if tracing:
            return "gate tracing needs the reference backend (the fused kernel hides its gates)"
        if config.cell != "lstm":
            return f"{_CELL_NAMES[config.cell]} not supported by the fused kernel"
        if config.zoneout_cell or config.zoneout_hidden:
            return "zoneout is not supported by the fused kernel"
        if training and config.recurrent_dropout:
            return "recurrent dropout (a mask on h_{t-1}) is not supported by the fused kernel"
        transform = active_transform()
        if transform:
            return f"{transform} needs the reference backend (torch's fused op has no vmap rule)"
        return None

    def run_layer(self, run: LayerRun) -> LayerOutput:
        cell = run.cells[0]
        template = _template(
            cell.input_size, cell.hidden_size, cell.bias, cell.proj_size, len(run.cells) == 2
        )
        params: dict[str, Tensor] = {}
        for d, (c, w_hh) in enumerate(zip(run.cells, run.weights_hh, strict=True)):
            suffix = "_l0_reverse" if d else "_l0"
            params["weight_ih" + suffix] = c.weight_ih
            params["weight_hh" + suffix] = w_hh
            if c.bias:
                params["bias_ih" + suffix] = c.bias_ih
                params["bias_hh" + suffix] = c.bias_hh
            if c.proj_size:
                params["weight_hr" + suffix] = c.weight_hr
        x = run.x
        if run.lengths is not None:
            x = pack_padded_sequence(x, run.lengths, enforce_sorted=False)
        out, (h_n, c_n) = functional_call(template, params, (x, (run.h0, run.c0)))
        if run.lengths is not None:
            out, _ = pad_packed_sequence(out, total_length=run.x.shape[0])
        return LayerOutput(out, h_n, c_n)


@lru_cache(maxsize=64)
def _template(input_size: int, hidden_size: int, bias: bool, proj_size: int, bidir: bool):
    """A one-layer torch.nn.LSTM whose own weights live on the meta device (never used)."""
    return nn.LSTM(
        input_size,
        hidden_size,
        num_layers=1,
        bias=bias,
        batch_first=False,
        bidirectional=bidir,
        proj_size=proj_size,
        device="meta",
    )
