"""Backends that run the LSTM over time, and the rule that picks one.

``reference`` (PyTorch ops, a Python loop over time) runs every configuration and is what the
gradient checks run on. ``fused`` calls PyTorch's own LSTM kernel (cuDNN on GPUs) for the
configurations that kernel supports. ``kernel`` is lstmkit's own C++ loop over time for CPU
tensors, built on first use (see ``docs/performance.md`` for how it compares). ``compiled`` is
the reference loop with each step fused by ``torch.compile``: the GPU path for the variants
cuDNN cannot run. ``graphed`` records that loop as CUDA graphs and replays them (2.7-23x faster
than the compiled step on an H100); it is run only when asked for by name until a GPU session
has checked it in full (``graphed.py`` says what was and was not checked). ``auto`` takes
the first backend in ``PREFERENCE`` that can run the configuration on the layer's device and
dtype, and ``BackendChoice.reason`` says why the faster ones were passed over.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lstmkit.nn.backends.base import Backend, LayerOutput, LayerRun, Placement
from lstmkit.nn.backends.compiled import CompiledBackend
from lstmkit.nn.backends.fused import FusedBackend
from lstmkit.nn.backends.graphed import GraphedBackend
from lstmkit.nn.backends.kernel import KernelBackend
from lstmkit.nn.backends.reference import ReferenceBackend
from lstmkit.nn.config import LSTMConfig

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        KernelBackend(),
        FusedBackend(),
        GraphedBackend(),
        CompiledBackend(),
        ReferenceBackend(),
    )
}
# Fastest first, as measured (docs/performance.md). Training (forward+backward): the C++ kernel;
# it declines non-CPU tensors, so on GPUs the fused (cuDNN) path wins. Inference: PyTorch's
# fused kernel (oneDNN on CPUs) runs a forward pass of the standard cell faster at most measured
# shapes (the kernel wins at some large ones, with no simple rule between them:
# benchmarks/results/kernel_selection_forward.md), so it goes first and the kernel takes the
# variants it cannot run. On GPUs the variants cuDNN cannot run take the
# compiled step (benchmarks/results/gpu.md); ``auto`` never picks it elsewhere, and never picks
# ``graphed`` (asked for by name only, see the module docstring).
PREFERENCE: tuple[str, ...] = ("kernel", "fused", "compiled", "reference")
INFERENCE_PREFERENCE: tuple[str, ...] = ("fused", "kernel", "compiled", "reference")
# Except at small batches without a projection, where the C++ kernel's forward pass is the
# faster one (benchmarks/results/kernel_selection_small*.md, 2 threads and 1): up to hidden 256
# at fewer than four rows per thread, or while rows per thread x hidden <= 512, and up to
# KERNEL_MAX_HIDDEN at batch 1 only (at hidden 512-768 and 2-8 rows it measured 0.78-1.08x).
# Everywhere this picks the kernel it measured 1.11-5.6x on 2 threads and 1.08-2.07x on 1
# (most at the smallest layers, where a call of torch's is mostly fixed cost); the sweep finds
# it faster at some larger batches too, which this rule leaves to torch. So inference follows
# the training order there.
# And except where PyTorch's fused LSTM leaves oneDNN on CPU: for projections (proj_size > 0)
# and for batches whose sequences differ in length (which it runs packed), it falls back to a
# slower implementation, and the C++ kernel measured 1.7-7.3x faster in inference and 2.3-5.0x
# in training at every shape tried, hidden 1150 included
# (benchmarks/results/kernel_selection_fallback.md). There both modes take the training order.
# Where the fused kernel can run the same thing, the C++ kernel trains faster only while the
# recurrent weights stay cache-sized (benchmarks/results/kernel_selection.md: faster up to
# hidden 650, slower at hidden 1150).
KERNEL_MAX_HIDDEN = 768
SMALL_BATCH_MAX_HIDDEN = 256
SMALL_BATCH_MAX_WORK = 512  # rows per thread x hidden


class BackendChoice(NamedTuple):
    name: str  # the backend that runs the layer
    reason: str  # why: asked for by name, or why faster backends could not run it


def select_backend(
    config: LSTMConfig,
    training: bool,
    tracing: bool = False,
    placement: Placement | None = None,
) -> BackendChoice:
    """Pick the backend for ``config``; a backend asked for by name must be able to run it.

    ``placement`` (device and dtype of the layer's tensors, and the batch of the call when
    known) rules out backends that cannot run there; None skips that check. The batch matters
    for inference only (see ``_small_batch_inference``); the call's padding in both modes (see
    ``_fused_off_onednn``).
    """
    if config.backend != "auto":
        reason = _unsupported(BACKENDS[config.backend], config, training, tracing, placement)
        if reason is not None:
            raise ValueError(f"backend {config.backend!r} cannot run this configuration: {reason}")
        return BackendChoice(config.backend, f"backend={config.backend!r} was requested")
    passed_over: list[str] = []
    small = _small_batch_inference(config, training, placement)
    off_onednn = _fused_off_onednn(config, placement)
    order = PREFERENCE if training or small or off_onednn else INFERENCE_PREFERENCE
    for name in order:
        reason = _unsupported(BACKENDS[name], config, training, tracing, placement)
        if reason is None and name == "kernel" and off_onednn is None:
            reason = _kernel_slower(config, training, tracing, placement)
        if reason is None and name == "compiled":
            reason = _compiled_off_gpu(placement)
        if reason is None:
            why = (
                "; ".join(passed_over) if passed_over else "fastest backend for this configuration"
            )
            if small and name == "kernel" and not passed_over:
                why = (
                    f"fastest backend at {placement.batch} row(s): at batches this small the "
                    "C++ kernel's forward pass beats PyTorch's"
                )
            elif off_onednn and name == "kernel" and not passed_over:
                why = f"fastest backend here: {off_onednn}"
            return BackendChoice(name, why)
        passed_over.append(reason)
    raise RuntimeError("no backend can run this configuration: " + "; ".join(passed_over))


def _small_batch_inference(config: LSTMConfig, training: bool, placement: Placement | None) -> bool:
    """True for inference of the standard cell at a batch small enough that the C++ kernel's
    forward pass beats PyTorch's fused one (see PREFERENCE above)."""
    if training or placement is None or placement.batch is None or config.cell != "lstm":
        return False
    if placement.device.type != "cpu" or config.proj_size:
        return False
    # (decided here, in Python: large batches never build the kernel)
    threads = torch.get_num_threads()
    if placement.batch == 1:
        return config.hidden_size <= KERNEL_MAX_HIDDEN
    if config.hidden_size > SMALL_BATCH_MAX_HIDDEN:
        return False
    if placement.batch < 4 * threads:
        return True
    rows = -(-placement.batch // threads)  # per thread
    return rows * config.hidden_size <= SMALL_BATCH_MAX_WORK


def _fused_off_onednn(config: LSTMConfig, placement: Placement | None) -> str | None:
    """Why PyTorch's fused LSTM would run off oneDNN on this CPU call, or None (see PREFERENCE
    above): it runs projections and packed, variable-length batches on a slower path."""
    if placement is None or placement.device.type != "cpu" or config.cell != "lstm":
        return None
    if config.proj_size:
        return "PyTorch's fused LSTM runs projections (proj_size > 0) off oneDNN, on a slower path"
    if placement.padded:
        return (
            "PyTorch's fused LSTM runs sequences of different lengths packed, off oneDNN, on a "
            "slower path"
        )
    return None


def _kernel_slower(
    config: LSTMConfig,
    training: bool,
    tracing: bool,
    placement: Placement | None,
) -> str | None:
    """Why ``auto`` passes over the C++ kernel for a faster fused run, or None."""
    if _unsupported(BACKENDS["fused"], config, training, tracing, placement) is not None:
        return None  # the fused kernel cannot run it: the C++ kernel is the fast path
    if config.hidden_size > KERNEL_MAX_HIDDEN:
        return (
            f"the C++ kernel trains slower than PyTorch's fused kernel above hidden_size "
            f"{KERNEL_MAX_HIDDEN} (got {config.hidden_size})"
        )
    return None


def _compiled_off_gpu(placement: Placement | None) -> str | None:
    """Why ``auto`` passes over the compiled step, or None: it is the GPU path only."""
    if placement is not None and placement.device.type == "cuda":
        return None
    where = "an unknown device" if placement is None else placement.device.type
    return f"the compiled step is picked automatically on CUDA devices only (got {where})"


def _unsupported(
    backend: Backend,
    config: LSTMConfig,
    training: bool,
    tracing: bool,
    placement: Placement | None,
) -> str | None:
    """Why ``backend`` cannot run ``config`` where it would run, or None."""
    check_placement = getattr(backend, "unsupported_placement", None)
    if placement is not None and check_placement is not None:
        reason = check_placement(placement)
        if reason is not None:
            return reason
    return backend.unsupported(config, training, tracing)


__all__ = [
    "BACKENDS",
    "INFERENCE_PREFERENCE",
    "KERNEL_MAX_HIDDEN",
    "PREFERENCE",
    "SMALL_BATCH_MAX_HIDDEN",
    "SMALL_BATCH_MAX_WORK",
    "Backend",
    "BackendChoice",
    "LayerOutput",
    "LayerRun",
    "Placement",
    "select_backend",
]
