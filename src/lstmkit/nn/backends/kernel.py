"""The kernel backend: lstmkit's own C++ loop over time, built on first use.

A layer, all its directions, is one autograd node written in C++ (``csrc/layer.h``): one GEMM
for the input projections of every step and direction, then the recurrence:

    x (T, B, I) ──matmul──► xproj (T, B, D*4H)                one GEMM, all steps and directions
    C++ forward, per direction:   z = h' W_hh^T ; gates, c, h = cell(z + xproj[t] + b)  per step
    C++ backward, per direction:  dz = cell'(...) ; dh' = dz W_hh                     per step
                                  dW_hh = Σ dz^T h'  (one GEMM after the loop)
                                  db = Σ dz  (summed in the loop)
                                  dx = dz W_ih, dW_ih = Σ dz^T x  (one GEMM each)

The biases b = b_ih + b_hh enter in the step, not in the projection: adding them there is free,
where a projection with biases first writes them into every row of its (T, B, 4H) output. The
layer-norm cell normalises the projection before its biases, so they stay in it there, and
its projection runs ahead of the node (its products on the kernel's GEMM, its norm in
PyTorch ops, the biases in the norm's shift). A C++ node rather than Python autograd
Functions: at batch 1 a training call is mostly per-call overhead.

It runs the standard, peephole, layer-norm and coupled-gate (CIFG) cells with projections,
both directions and variable lengths, in float32 and float64 on CPU tensors. The extension is
compiled with
``torch.utils.cpp_extension`` (needs a C++ compiler and ``ninja``) into
``$LSTMKIT_EXT_DIR`` or ``~/.cache/lstmkit/ext-<hash>`` the first time it is needed; nothing
is built at import. ``LSTMKIT_DISABLE_KERNEL=1`` turns it off. When it cannot be used,
``unsupported`` says why and ``backend="auto"`` falls back to the fused or reference backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit.nn.backends.base import LayerOutput, LayerRun, Placement, active_transform
from lstmkit.nn.cell import LSTMCell
from lstmkit.nn.config import LSTMConfig

logger = logging.getLogger(__name__)

DISABLE_ENV = "LSTMKIT_DISABLE_KERNEL"  # set to 1 to never build or use the kernel
DIR_ENV = "LSTMKIT_EXT_DIR"  # where the compiled extension is cached
CELL_KINDS = {"lstm": 0, "peephole": 1, "layernorm": 2, "cifg": 3}  # as csrc/cells.h
SOURCES = (
    "lstm_kernel.cpp",
    "layer.h",
    "direction.h",
    "backward.h",
    "columns.h",
    "barrier.h",
    "recurrence.h",
    "cells.h",
    "gemm.h",
    "weights.h",
    "pairs.h",
    "pool.h",
    "stepper.h",
)
CFLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fopenmp")
_CSRC = Path(__file__).with_name("csrc")
_state: dict[str, Any] = {}  # "module" or "error", filled on first use


def kernel_unavailable() -> str | None:
    """None if the C++ kernel can be used (building it on first call), else the reason."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return f"the C++ kernel is disabled ({DISABLE_ENV}={os.environ[DISABLE_ENV]})"
    if "module" not in _state and "error" not in _state:
        try:
            _state["module"] = _build()
        except Exception as error:  # any build failure means: fall back, and say why
            _state["error"] = f"the C++ kernel could not be built ({build_failure(error)})"
            logger.warning("lstmkit kernel unavailable: %s", error)
    return _state.get("error")


def kernel_tried() -> bool:
    """Whether this process has decided if the C++ kernel can run (built and loaded it, found it
    disabled, or failed to build it), so that ``kernel_unavailable`` answers without a build."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0") or bool(_state)


_CAUSE = re.compile(r"error|not found|no such file|cannot|fatal|permission denied", re.I)


def build_failure(error: Exception) -> str:
    """The cause of a failed build in one line: the compiler's or shell's complaint rather than
    the compiler command line that torch's message starts with."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    head = lines[0]
    causes = [
        line
        for line in lines[1:]
        if _CAUSE.search(line)
        and not line.startswith(("[", "FAILED:", "ninja:"))
        and " -c " not in line  # a compiler command line (its flags may say -Werror)
    ]
    if not causes:
        return head[:300]
    where = head.split(":")[0] if head.startswith("Error building extension") else head[:120]
    return f"{where}: {causes[0][:300]}"


def load_kernel() -> ModuleType:
    """The compiled extension; raises ``RuntimeError`` with the reason if it is unavailable."""
    reason = kernel_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    return _state["module"]


def _build() -> ModuleType:
    tag = build_digest(_CSRC)
    build_dir = Path(os.environ.get(DIR_ENV) or Path.home() / ".cache" / "lstmkit" / f"ext-{tag}")
    logger.info("loading the lstmkit C++ kernel from %s (compiling on first use)", build_dir)
    return compile_kernel(_CSRC, f"lstmkit_kernel_{tag}", build_dir)


def build_digest(csrc: Path, names: Iterable[str] = SOURCES) -> str:
    """12 hex digits naming a build of the kernel sources ``names`` in ``csrc``: their bytes,
    the flags, torch's and Python's versions and the CPU's features (-march=native: a build
    belongs to its CPU)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update((csrc / name).read_bytes())
    digest.update(" ".join((torch.__version__, sys.version, platform.machine(), *CFLAGS)).encode())
    digest.update(_cpu_flags().encode())
    return digest.hexdigest()[:12]


def compile_kernel(csrc: Path, name: str, build_dir: Path) -> ModuleType:
    """The extension of ``csrc/lstm_kernel.cpp`` as module ``name``, compiled into (or loaded
    from) ``build_dir``."""
    from torch.utils import cpp_extension  # imported here: it is slow and only needed to build

    build_dir.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PATH", "")
    try:
        os.environ["PATH"] = os.pathsep.join([*_ninja_dirs(), path])
        return cpp_extension.load(
            name=name,
            sources=[str(csrc / "lstm_kernel.cpp")],
            extra_include_paths=[str(csrc)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )
    finally:
        os.environ["PATH"] = path


def _ninja_dirs() -> list[str]:
    """Where ninja may be when it is pip-installed but its venv is not on PATH."""
    if shutil.which("ninja"):
        return []
    dirs = [str(Path(sys.executable).parent)]
    try:
        import ninja  # the PyPI package ships the binary

        dirs.append(str(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    return dirs


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


class KernelBackend:
    name = "kernel"

    def unsupported(self, config: LSTMConfig, training: bool, tracing: bool) -> str | None:
        if tracing:
            return "gate tracing needs the reference backend (the kernel keeps its gates in C++)"
        if config.cell not in CELL_KINDS:
            return f"the C++ kernel does not implement the {config.cell!r} cell"
        if config.zoneout_cell or config.zoneout_hidden:
            return "zoneout is not supported by the C++ kernel"
        if training and config.recurrent_dropout:
            return "recurrent dropout (a mask on h_{t-1}) is not supported by the C++ kernel"
        transform = active_transform()
        if transform:
            return f"{transform} cannot run through the C++ kernel (a C++ autograd node)"
        return kernel_unavailable()

    def unsupported_placement(self, placement: Placement) -> str | None:
        if placement.device.type != "cpu":
            elsewhere = " (PyTorch's fused kernel, cuDNN, runs there)"
            return f"the C++ kernel runs on CPU tensors, got {placement.device.type}" + (
                elsewhere if placement.device.type == "cuda" else ""
            )
        if placement.dtype not in (torch.float32, torch.float64):
            return f"the C++ kernel runs float32 and float64, got {placement.dtype}"
        return None

    def run_layer(self, run: LayerRun) -> LayerOutput:
        cells = run.cells
        first = cells[0]
        project = first.kind != "layernorm"  # that cell's norm of x W_ih^T runs in PyTorch ops
        params = [
            p for d, c in enumerate(cells) for p in direction_params(c, run.weights_hh[d], project)
        ]
        # autocast lets a state of another dtype through (recurrent.py); the loops run in x's
        h0, c0 = (s if s.dtype == run.x.dtype else s.to(run.x.dtype) for s in (run.h0, run.c0))
        # (select_backend has just asked kernel_unavailable; its environment lookup costs 0.6 µs)
        kernel = _state.get("module") or load_kernel()
        out, h_n, c_n = kernel.layer(
            CELL_KINDS[first.kind],
            len(cells),
            first.proj_size > 0,
            _bias_in_step(first),
            project,
            None if run.lengths is None else run.lengths.contiguous(),
            run.x if project else _normed_projection(cells, run.x),
            h0,
            c0,
            params,
        )
        return LayerOutput(out, h_n, c_n)


def _normed_projection(cells: list[LSTMCell], x: Tensor) -> Tensor:
    """The layer-norm cell's input projections, biases included: (T, B, I) -> (T, B, D*4H),
    the products on the kernel's GEMM (``_Linear``)."""
    flat = x.reshape(-1, x.shape[-1])
    parts = [
        cell.norm_projection(_Linear.apply(flat, cell.weight_ih).view(*x.shape[:-1], -1))
        for cell in cells
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class _Linear(torch.autograd.Function):  # (the C++ layer node refuses double backward first)
    """x W^T (x 2-D) and its backward on the kernel's products (``mm_fast``: oneDNN's AVX-512
    GEMM, pooled outputs), for the layer-norm cell's input projection, which runs ahead of the
    C++ node: ATen's mm took 1.6-2.3x as long for each of its three products at
    (64, 100, 32, 128) here."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return load_kernel().linear_forward(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        kernel = load_kernel()
        grad_x = kernel.linear_forward(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_w = kernel.linear_forward(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def _bias_in_step(cell: LSTMCell) -> bool:
    """Whether the C++ step adds b_ih + b_hh: not without biases, nor for the layer-norm cell,
    whose projection holds them (they follow its norm)."""
    return _own(cell, "bias_ih") is not None and cell.kind != "layernorm"


def _own(cell: LSTMCell, name: str) -> Tensor | None:
    """``getattr(cell, name)``, from the module's own dict of parameters when the name is there:
    ``nn.Module.__getattr__`` costs 0.4 µs a name, and a batch-1 call is mostly fixed costs. (A
    weight under ``torch.nn.utils.parametrize`` is not there: its property computes it.)"""
    own = cell._parameters
    return own[name] if name in own else getattr(cell, name)


def direction_params(cell: LSTMCell, weight_hh: Tensor, project: bool) -> list[Tensor]:
    """One direction's share of the C++ layer's parameter list, in the order csrc/layer.h reads:
    [W_ih if project] W_hh [W_hr] [peepholes] [b_ih b_hh if added in the step] [layer norms]."""
    params = [_own(cell, "weight_ih")] if project else []
    params.append(weight_hh)
    if cell.proj_size:
        params.append(_own(cell, "weight_hr"))
    if cell.kind == "peephole":
        names = ("peephole_input", "peephole_forget", "peephole_output")
        params.append(torch.stack([_own(cell, name) for name in names]))
    if _bias_in_step(cell):
        params += [_own(cell, "bias_ih"), _own(cell, "bias_hh")]
    if cell.kind == "layernorm":
        params += [cell.norm_hidden.weight, cell.norm_hidden.bias]
        params += [cell.norm_cell.weight, cell.norm_cell.bias]
    return params
