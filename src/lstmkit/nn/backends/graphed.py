"""The graphed backend: the compiled loop over time, recorded as CUDA graphs and replayed.

The compiled step fuses each step's arithmetic, but the loop over time stays in Python: every
step launches its GEMM and fused kernels one at a time, and at the sizes LSTMs train at a GPU
spends most of a call waiting for those launches (``benchmarks/results/gpu.md``). A CUDA graph
records all of a layer's launches once, the forward pass and, when gradients are wanted, the
backward pass, and replays them with one call each:

    first call of a shape      the compiled step, as the compiled backend runs it
    second call of that shape  warm up, then record the forward (and backward) pass
    later calls                copy the inputs in, replay, copy the outputs out

A shape here is everything a recording depends on: the shapes, dtypes and ``requires_grad`` of
the inputs and parameters, the grad and inference modes, DropConnect and recurrent-dropout
masks (inputs of the graph, drawn by the layer), whether the batch is padded, the parameters'
storage, and the float32 matrix-product settings (TF32 or not). A padded batch's valid steps
and time reversal (``Padding``) are built on the device before each call from one
non-blocking copy of the lengths, and copied in like the other inputs: a recording cannot
copy ``lengths`` to the GPU itself, and new lengths of one shape replay the same recording.
Each layer keeps its ``MAX_GRAPHS`` most recently used recordings, each made and replayed on
its inputs' device. Outputs and gradients are copies, so a later call never overwrites a
tensor the caller holds.

These calls run the compiled step instead, call by call:

- a call of a shape whose previous call still awaits its backward pass (a recording holds one
  call's saved activations);
- calls under autocast, and calls made while the stream is itself being captured.

A recording's backward pass uses its activations up. A second backward pass through the same
call (``retain_graph=True``), or one after a later call of the same shape has replayed, raises
rather than return wrong gradients; double backward is not supported. A recording that fails
raises too: a failed capture leaves the CUDA random generator unusable in the process, so
carrying on would only fail later and further away. Zoneout in training draws its masks inside
each step, so this backend refuses it.

Status: asked for by name only (``backend="graphed"``); ``auto`` keeps the compiled step. On
an H100 it trained 13-23x faster than the compiled step at (64, 100, 32, 128) and at batch 1,
and 2.7-3.0x at (256, 200, 64, 256) (``benchmarks/results/gpu_graphed.md``). Of its CUDA tests
that ran there, those that recorded while the caller still held the previous call's graph
failed and the others passed. The fix for that case (``_on_aliases``), the recording of padded
batches, and the tests added with them (padding, device, storage and mode keys, repeated
backward passes) were written after the session's GPU time ran out and have not run on a GPU
yet (``benchmarks/results/gpu_tests_graphed.txt``).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lstmkit.nn.backends import compiled
from lstmkit.nn.backends.base import (
    LayerOutput,
    LayerRun,
    Padding,
    Placement,
    active_transform,
)
from lstmkit.nn.backends.reference import run_layer
from lstmkit.nn.cell import LSTMCell
from lstmkit.nn.config import LSTMConfig

MAX_GRAPHS = 4  # recordings kept per layer, least recently used dropped first
CAPTURE_AT = 2  # the call of a shape that records it (the first compiles the step)
WARMUP = 2  # untimed runs on a side stream before recording (allocator and compiler settle)


class GraphedBackend:
    name = "graphed"

    def unsupported(self, config: LSTMConfig, training: bool, tracing: bool) -> str | None:
        if tracing:
            return "gate tracing needs the reference backend (a CUDA graph replays fused steps)"
        if training and (config.zoneout_cell or config.zoneout_hidden):
            return "zoneout in training draws its masks inside each step, which a graph replays"
        transform = active_transform()
        if transform:
            return f"{transform} needs the reference backend (a replayed graph has no such rule)"
        return None

    def unsupported_placement(self, placement: Placement) -> str | None:
        if placement.device.type != "cuda":
            return f"CUDA graphs are recorded on CUDA devices only (got {placement.device.type})"
        return None

    def run_layer(self, run: LayerRun) -> LayerOutput:
        return _layer_graphs(run.cells[0]).run(run)


def _advance():
    """The step the graphs record: the compiled one where Triton exists, else the reference."""
    return compiled._advance if compiled._has_triton() else None


def _fallback(run: LayerRun) -> LayerOutput:
    return run_layer(run, advance=_advance())


# ------------------------------------------------------------------------------ one layer
_LAYERS: weakref.WeakKeyDictionary[LSTMCell, _LayerGraphs] = weakref.WeakKeyDictionary()


def _layer_graphs(cell: LSTMCell) -> _LayerGraphs:
    """The recordings of the layer whose first direction is ``cell`` (they never hold the
    cell itself, so they go when the layer does)."""
    graphs = _LAYERS.get(cell)
    if graphs is None:
        graphs = _LAYERS[cell] = _LayerGraphs()
    return graphs


@dataclass
class _LayerGraphs:
    seen: OrderedDict[tuple, int | _Recording] = field(default_factory=OrderedDict)

    def run(self, run: LayerRun) -> LayerOutput:
        if _cannot_record_now(run.x):
            return _fallback(run)
        inputs, shape = _inputs(run)
        params = [p for cell in run.cells for p in cell.parameters()]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (*inputs, *params))
        key = _key(run, inputs, shape, params, grad)
        entry = self.seen.pop(key, 0)  # calls so far, or the recording
        if isinstance(entry, int):
            entry += 1
            if entry >= CAPTURE_AT:
                entry = _capture_or_explain(run, inputs, shape, params, grad)
        self.seen[key] = entry  # most recently used last
        self._forget_oldest()
        if isinstance(entry, int) or entry.busy:
            return _fallback(run)
        out = _Replay.apply(entry, *inputs, *params) if grad else entry.replay_no_grad(inputs)
        return LayerOutput(*out)

    def _forget_oldest(self) -> None:
        recordings = [k for k, v in self.seen.items() if isinstance(v, _Recording)]
        for key in recordings[:-MAX_GRAPHS]:
            del self.seen[key]
        while len(self.seen) > 8 * MAX_GRAPHS:  # shapes seen once, never recorded
            del self.seen[next(iter(self.seen))]


def _cannot_record_now(x: Tensor) -> bool:
    """Autocast (its cast cache would be recorded) or a capture already under way."""
    if x.device.type != "cuda":  # the CPU tests' stand-in for a graph
        return False
    with torch.cuda.device(x.device):
        return torch.is_autocast_enabled("cuda") or torch.cuda.is_current_stream_capturing()


def _capture_or_explain(run, inputs, shape, params, grad) -> _Recording:
    try:
        return _Recording.capture(run, inputs, shape, params, grad)
    except RuntimeError as error:
        raise RuntimeError(
            f"recording an LSTM layer as a CUDA graph failed ({error}). A failed capture can "
            "leave CUDA's random generator unusable in this process: restart it and run this "
            "model with backend='compiled' (and please report the configuration)"
        ) from error


def _inputs(run: LayerRun) -> tuple[list[Tensor], tuple[bool, ...]]:
    """The tensors a recording copies in each call, and which optional ones are present:
    DropConnect-masked W_hh per direction (the parameter itself is used in place), recurrent
    masks, padding."""
    masked = [w is not cell.weight_hh for w, cell in zip(run.weights_hh, run.cells, strict=True)]
    present = [m is not None for m in run.recurrent_masks]
    inputs = [run.x, run.h0, run.c0]
    inputs += [w for w, m in zip(run.weights_hh, masked, strict=True) if m]
    inputs += [m for m in run.recurrent_masks if m is not None]
    padding = run.resolved_padding()
    if padding is not None:
        inputs += list(padding)
    return inputs, (*masked, *present, padding is not None)


def _key(
    run: LayerRun, inputs: list[Tensor], shape: tuple[bool, ...], params: list[Tensor], grad: bool
) -> tuple:
    zoneout = run.zoneout
    return (
        grad,
        torch.is_inference_mode_enabled(),  # a recording's static tensors are then inference ones
        shape,
        tuple((t.shape, t.dtype, t.device, t.requires_grad) for t in inputs),
        tuple((p.data_ptr(), p.shape, p.stride(), p.dtype, p.requires_grad) for p in params),
        None if zoneout is None else (zoneout.cell_p, zoneout.hidden_p, zoneout.training),
        _advance(),
        # a recording keeps the matrix-product kernels (TF32 or not) chosen when it was made
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
    )


def _body(run: LayerRun, shape: tuple[bool, ...]) -> Callable[..., LayerOutput]:
    """The layer as a function of the tensors ``_inputs`` lists, for recording."""
    directions = len(run.cells)
    masked, present, padded = shape[:directions], shape[directions:-1], shape[-1]
    cells = run.cells

    def body(x: Tensor, h0: Tensor, c0: Tensor, *rest: Tensor) -> LayerOutput:
        given = iter(rest)
        weights = [next(given) if m else c.weight_hh for c, m in zip(cells, masked, strict=True)]
        masks = [next(given) if p else None for p in present]
        padding = Padding(*given) if padded else None
        layer = LayerRun(
            cells=run.cells,
            x=x,
            lengths=None,
            h0=h0,
            c0=c0,
            weights_hh=weights,
            recurrent_masks=masks,
            zoneout=run.zoneout,
            padding=padding,
        )
        return run_layer(layer, advance=_advance())

    return body


def _on_aliases(run: LayerRun, body: Callable[..., LayerOutput]):
    """``body`` run on new parameters that share the cells' storage, and those parameters.

    Autograd accumulates a leaf's gradient on the CUDA stream that was current when its
    accumulator was made, and a parameter's lives as long as any graph that used it: the
    caller's previous call, still referenced by a loss or an output, holds one made on the
    default stream. A backward pass recorded against such a parameter makes the default
    stream wait on the capture, which CUDA refuses ("operation would make the legacy stream
    depend on a capturing blocking stream"). Aliases made here get their accumulators during
    the recording; sharing storage, they see every in-place optimiser step.
    """
    holder = torch.nn.Module()
    holder.cells = torch.nn.ModuleList(run.cells)
    aliases = {
        name: torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
        for name, p in holder.named_parameters()
    }

    def aliased(*static: Tensor) -> LayerOutput:
        return torch.func.functional_call(holder, aliases, static)

    holder.forward = body  # functional_call swaps the aliases in, then calls forward
    return aliased, list(aliases.values())


# ------------------------------------------------------------------------------ recording
def _record_cuda(body: Callable[..., LayerOutput], static: list[Tensor], wrt: list[Tensor]):
    """Record ``body(*static)`` as a CUDA graph, and its backward pass with respect to
    ``wrt`` (none: no backward graph) as a second one in the same memory pool.

    Returns the forward graph, its static outputs (detached), the backward graph or None, the
    static gradients it reads for the outputs, and those it writes for ``wrt`` (None where a
    tensor gets none).
    """
    with torch.cuda.device(static[0].device):  # streams and captures are per device
        return _record_on_current_device(body, static, wrt)


def _record_on_current_device(body, static: list[Tensor], wrt: list[Tensor]):
    grad = bool(wrt)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.set_grad_enabled(grad):
        for _ in range(WARMUP):
            out = body(*static)
            if grad:
                ones = [torch.ones_like(o) for o in out]
                torch.autograd.grad(out, wrt, ones, allow_unused=True)
            del out  # its graph holds the leaves' gradient accumulators, tied to this stream
    torch.cuda.current_stream().wait_stream(side)
    forward = torch.cuda.CUDAGraph()
    with torch.cuda.graph(forward), torch.set_grad_enabled(grad):
        outputs = tuple(body(*static))
    if not grad:
        return forward, outputs, None, [], []
    grad_outputs = [torch.empty_like(o) for o in outputs]
    backward = torch.cuda.CUDAGraph()
    with torch.cuda.graph(backward, pool=forward.pool()):
        grads = torch.autograd.grad(outputs, wrt, grad_outputs, allow_unused=True)
    return forward, tuple(o.detach() for o in outputs), backward, grad_outputs, list(grads)


#: how a shape is recorded; the CPU tests swap in an eager stand-in with a graph's semantics
RECORD = _record_cuda


# ------------------------------------------------------------------------------ one shape
class _Recording:
    """One shape's forward graph (and backward graph when it was recorded with gradients),
    with the static tensors they read and write."""

    def __init__(self, inputs, outputs, forward, backward, grad_outputs, grads) -> None:
        self.inputs: list[Tensor] = inputs
        self.outputs: tuple[Tensor, ...] = outputs
        self.forward = forward
        self.backward = backward
        self.grad_outputs: list[Tensor] = grad_outputs
        self.grads: list[Tensor | None] = grads  # per input, then per parameter
        self.generation = 0  # replays so far: a backward checks its activations' age
        self.busy = False  # a replay's backward is pending: its saved activations are in use

    @classmethod
    def capture(cls, run, inputs, shape, params, grad) -> _Recording:
        static = [t.detach().clone().requires_grad_(grad and t.requires_grad) for t in inputs]
        body, aliases = _on_aliases(run, _body(run, shape))
        wrt = [t for t in (*static, *aliases) if t.requires_grad] if grad else []
        forward, outputs, backward, grad_outputs, got = RECORD(body, static, wrt)
        got = iter(got)
        grads = [next(got) if t.requires_grad else None for t in (*static, *params)] if grad else []
        return cls(static, outputs, forward, backward, grad_outputs, grads)

    def on_device(self):
        """Where replays run: the recording's CUDA device (nothing to enter on the CPU)."""
        device = self.inputs[0].device
        return torch.cuda.device(device) if device.type == "cuda" else nullcontext()

    def replay_no_grad(self, inputs: list[Tensor]) -> tuple[Tensor, ...]:
        for static, t in zip(self.inputs, inputs, strict=True):
            static.copy_(t)
        with self.on_device():
            self.forward.replay()
        self.generation += 1
        return tuple(o.clone() for o in self.outputs)


class _Pending:
    """Held by a replay's autograd node: while it lives, the recording's activations belong
    to that replay. The node dies after its backward pass, or with the graph it is part of."""

    def __init__(self, recording: _Recording) -> None:
        self.recording = recording
        recording.busy = True

    def __del__(self) -> None:
        self.recording.busy = False


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, recording: _Recording, *tensors: Tensor) -> tuple[Tensor, ...]:
        outputs = recording.replay_no_grad(list(tensors[: len(recording.inputs)]))
        ctx.recording, ctx.generation = recording, recording.generation
        ctx.pending = _Pending(recording)
        return outputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        recording = ctx.recording
        if ctx.generation != recording.generation:
            raise RuntimeError(
                "the graphed LSTM backend keeps one call's activations in a CUDA graph, and they "
                "are gone: a second backward pass through the same call (retain_graph=True), or "
                "a later call of the same shape, has used them up. Use backend='compiled' for "
                "this"
            )
        for static, g in zip(recording.grad_outputs, grad_outputs, strict=True):
            static.copy_(g)
        with recording.on_device():
            recording.backward.replay()
        # the recorded backward pass frees the activations as it goes, and later kernels of the
        # recording may reuse their memory: no second backward pass may replay over them
        recording.generation += 1
        ctx.pending = None  # the recording is free for the next call
        return (None, *(None if g is None else g.clone() for g in recording.grads))
