"""Backends that run the LSTM over time, and the rule that picks one.

``reference`` (PyTorch ops, a Python loop over time) runs every configuration and is what the
gradient checks run on. ``fused`` calls PyTorch's own LSTM kernel (cuDNN on GPUs) for the
configurations that kernel supports. ``auto`` takes the first backend in ``PREFERENCE`` that can
run the configuration, and ``BackendChoice.reason`` says why the faster ones were passed over.
"""

from __future__ import annotations

from typing import NamedTuple

from lstmkit.nn.backends.base import Backend, LayerOutput, LayerRun
from lstmkit.nn.backends.fused import FusedBackend
from lstmkit.nn.backends.reference import ReferenceBackend
from lstmkit.nn.config import LSTMConfig

BACKENDS: dict[str, Backend] = {b.name: b for b in (FusedBackend(), ReferenceBackend())}
PREFERENCE: tuple[str, ...] = ("fused", "reference")  # fastest first


class BackendChoice(NamedTuple):
    name: str  # the backend that runs the layer
    reason: str  # why: asked for by name, or why faster backends could not run it


def select_backend(config: LSTMConfig, training: bool, tracing: bool = False) -> BackendChoice:
    """Pick the backend for ``config``; a backend asked for by name must be able to run it."""
    if config.backend != "auto":
        reason = BACKENDS[config.backend].unsupported(config, training, tracing)
        if reason is not None:
            raise ValueError(f"backend {config.backend!r} cannot run this configuration: {reason}")
        return BackendChoice(config.backend, f"backend={config.backend!r} was requested")
    passed_over: list[str] = []
    for name in PREFERENCE:
        reason = BACKENDS[name].unsupported(config, training, tracing)
        if reason is None:
            why = (
                "; ".join(passed_over) if passed_over else "fastest backend for this configuration"
            )
            return BackendChoice(name, why)
        passed_over.append(reason)
    raise RuntimeError("no backend can run this configuration: " + "; ".join(passed_over))


__all__ = ["BACKENDS", "Backend", "BackendChoice", "LayerOutput", "LayerRun", "select_backend"]
