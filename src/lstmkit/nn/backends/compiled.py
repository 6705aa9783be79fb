"""The compiled backend: the reference loop with each step fused by ``torch.compile``.

cuDNN runs only the standard cell, so on a GPU the variants (peephole, layer norm, CIFG),
zoneout and recurrent dropout would otherwise take the reference loop, which launches a dozen
small kernels per step. Here the whole step — recurrent GEMM, gate nonlinearities, peepholes or
norms, zoneout, padding — is one compiled graph, so a step costs the GEMM and one or two fused
elementwise kernels (Triton on GPUs, C++ on CPUs), forward and backward:

    x_proj = cell.project_input(x)                          one GEMM for all steps (eager)
    for t:  state = compiled_advance(cell, x_proj[t], ...)  the fused step

It runs everything the reference backend runs except gate tracing, and gives the same numbers
up to float rounding, except that zoneout in training draws its masks from the compiled
graph's random stream, not eager PyTorch's. Graphs are compiled per cell class and grad mode,
the first time a shape is seen (seconds), and shared by every layer and direction. ``auto``
picks it on CUDA devices only; on CPUs the C++ kernel is faster, so there it runs only when
asked for by name.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import cache
from typing import Any

import torch

from lstmkit.nn.backends.base import LayerOutput, LayerRun, Placement
from lstmkit.nn.backends.reference import advance_step, run_layer
from lstmkit.nn.cell import Gates, LSTMCell, LSTMState
from lstmkit.nn.config import LSTMConfig


class CompiledBackend:
    name = "compiled"

    def unsupported(self, config: LSTMConfig, training: bool, tracing: bool) -> str | None:
        if tracing:
            return "gate tracing needs the reference backend (the compiled step fuses its gates)"
        return None

    def unsupported_placement(self, placement: Placement) -> str | None:
        if placement.device.type == "cuda" and not _has_triton():
            return "torch.compile needs Triton to compile GPU code, and it is not installed"
        if placement.device.type not in ("cpu", "cuda"):
            return f"the compiled step runs on CPU and CUDA tensors, got {placement.device.type}"
        return None

    def run_layer(self, run: LayerRun) -> LayerOutput:
        return run_layer(run, advance=_advance)


def _state_only(*step: Any) -> LSTMState:
    """``advance_step(*step)`` without the gates as outputs, so the compiler may keep them
    internal. ``step``: the arguments of ``advance_step`` (cell, x_proj, state, ...)."""
    return advance_step(*step).state


#: torch.compile's backend; the tests swap in "eager" to exercise dynamo's caching alone
COMPILER = "inductor"


def _advance(cell: LSTMCell, *rest: Any) -> tuple[LSTMState, Gates | None]:
    """``advance_step`` through the compiled copy for the cell's class and the grad mode."""
    compiled = _compiled_for(type(cell), torch.is_grad_enabled(), COMPILER)
    return LSTMState(*compiled(cell, *rest)), None  # the gates stay inside the fused graph


@cache
def _compiled_for(cell_type: type, grad: bool, compiler: str) -> Callable[..., LSTMState]:
    """A compiled copy of the step for one cell class and grad mode.

    Dynamo keeps one cache per code object and stops compiling a function after 8 graphs (its
    recompile limit); one shared function would reach that with four cell classes, training
    and inference, and every later step would silently run eagerly. A copy of the code
    object gives each (class, grad mode) pair a cache of its own.
    """
    name = f"_state_only_{cell_type.__name__}"  # also what dynamo's messages call it
    code = _state_only.__code__.replace(co_name=name)  # a new code object: a new dynamo cache
    fn = types.FunctionType(code, _state_only.__globals__, name)
    return torch.compile(fn, dynamic=None, backend=compiler)


@cache
def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - very old torch
        return False
    return bool(has_triton())
