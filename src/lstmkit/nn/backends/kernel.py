"""The kernel backend: lstmkit's own C++ loop over time, built on first use.

Per layer it runs one GEMM for the input projections of every step and direction (an autograd
Function of its own, for ``W_ih`` and the input), then hands the recurrence to C++:

    x (T, B, I) ──matmul──► xproj (T, B, D*4H)                one GEMM, all steps and directions
    C++ forward, per direction:   z = h' W_hh^T ; gates, c, h = cell(z + xproj[t] + b)  per step
    C++ backward, per direction:  dz = cell'(...) ; dh' = dz W_hh                     per step
                                  dW_hh = Σ dz^T h'  (one GEMM after the loop)
                                  db = Σ dz  (summed in the loop)

The biases b = b_ih + b_hh enter in the step, not in the projection: adding them there is free,
where a projection with biases first writes them into every row of its (T, B, 4H) output. The
layer-norm cell normalises the projection before its biases, so they stay in it there.

It runs the standard, peephole and layer-norm cells with projections, both directions and
variable lengths, in float32 and float64 on CPU tensors. The extension is compiled with
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
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from lstmkit.nn.backends.base import LayerOutput, LayerRun, Placement
from lstmkit.nn.cell import LSTMCell
from lstmkit.nn.config import LSTMConfig

logger = logging.getLogger(__name__)

DISABLE_ENV = "LSTMKIT_DISABLE_KERNEL"  # set to 1 to never build or use the kernel
DIR_ENV = "LSTMKIT_EXT_DIR"  # where the compiled extension is cached
CELL_KINDS = {"lstm": 0, "peephole": 1, "layernorm": 2}  # must match csrc/cells.h
SOURCES = (
    "lstm_kernel.cpp",
    "backward.h",
    "columns.h",
    "recurrence.h",
    "cells.h",
    "gemm.h",
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
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            _state["error"] = f"the C++ kernel could not be built ({first_line[:200]})"
            logger.warning("lstmkit kernel unavailable: %s", error)
    return _state.get("error")


def load_kernel() -> ModuleType:
    """The compiled extension; raises ``RuntimeError`` with the reason if it is unavailable."""
    reason = kernel_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    return _state["module"]


def _build() -> ModuleType:
    from torch.utils import cpp_extension  # imported here: it is slow and only needed to build

    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((_CSRC / name).read_bytes())
    digest.update(" ".join((torch.__version__, sys.version, platform.machine(), *CFLAGS)).encode())
    digest.update(_cpu_flags().encode())  # -march=native: a build belongs to its CPU
    tag = digest.hexdigest()[:12]
    build_dir = Path(os.environ.get(DIR_ENV) or Path.home() / ".cache" / "lstmkit" / f"ext-{tag}")
    build_dir.mkdir(parents=True, exist_ok=True)
    logger.info("loading the lstmkit C++ kernel from %s (compiling on first use)", build_dir)
    path = os.environ.get("PATH", "")
    try:
        os.environ["PATH"] = os.pathsep.join([*_ninja_dirs(), path])
        return cpp_extension.load(
            name=f"lstmkit_kernel_{tag}",
            sources=[str(_CSRC / "lstm_kernel.cpp")],
            extra_include_paths=[str(_CSRC)],
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
        return kernel_unavailable()

    def unsupported_placement(self, placement: Placement) -> str | None:
        if placement.device.type != "cpu":
            return (
                f"the C++ kernel runs on CPU tensors, got {placement.device.type} "
                "(PyTorch's fused kernel, cuDNN on GPUs, runs there)"
            )
        if placement.dtype not in (torch.float32, torch.float64):
            return f"the C++ kernel runs float32 and float64, got {placement.dtype}"
        return None

    def run_layer(self, run: LayerRun) -> LayerOutput:
        cells = run.cells
        kind = CELL_KINDS[cells[0].kind]
        xproj = project_inputs(cells, run.x)  # (T, B, D*4H)
        lengths = None if run.lengths is None else run.lengths.contiguous()
        params = [p for d, c in enumerate(cells) for p in direction_params(c, run.weights_hh[d])]
        spec = (kind, len(cells), cells[0].proj_size > 0, _bias_in_step(cells[0]))
        if torch.is_grad_enabled() and any(
            t.requires_grad for t in (xproj, run.h0, run.c0, *params)
        ):
            out, h_n, c_n = KernelLayer.apply(spec, lengths, xproj, run.h0, run.c0, *params)
        else:
            out, h_n, c_n, _ = _forward(spec, lengths, xproj, run.h0, run.c0, params, save=False)
        return LayerOutput(out, h_n, c_n)


def project_inputs(cells: list[LSTMCell], x: Tensor) -> Tensor:
    """Input projections of every step and direction: (T, B, I) -> (T, B, D*G).

    ``x W_ih^T`` alone, the biases being added in the step (``step_bias``), except for the
    layer-norm cell, whose biases follow its norm of this projection.
    """
    steps, batch = x.shape[0], x.shape[1]
    if cells[0].kind == "layernorm":  # LN over each direction's own projection
        parts = [cell.project_input(x) for cell in cells]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    weight = torch.cat([c.weight_ih for c in cells]) if len(cells) > 1 else cells[0].weight_ih
    flat = x.reshape(steps * batch, x.shape[2])  # (T*B, I)
    if not (torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad)):
        # no autograd node: a Function's dispatch costs more than this product
        return load_kernel().linear_forward(flat, weight).view(steps, batch, -1)
    return KernelLinear.apply(flat, weight).view(steps, batch, -1)


def step_bias(cell: LSTMCell) -> Tensor | None:
    """``b_ih + b_hh``, which the C++ step adds to the gate pre-activations; None for a cell
    without biases and for the layer-norm cell (its projection holds them)."""
    return cell.bias_ih + cell.bias_hh if _bias_in_step(cell) else None


def _bias_in_step(cell: LSTMCell) -> bool:
    return cell.bias_ih is not None and cell.kind != "layernorm"


class KernelLinear(torch.autograd.Function):
    """``x @ w.T`` through the kernel's matmul (oneDNN's, which uses AVX-512 where MKL may
    not), forward and backward: (N, I) x (F, I) -> (N, F)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return load_kernel().linear_forward(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        dx, dw = load_kernel().linear_backward(grad, x, weight, *ctx.needs_input_grad)
        return dx, dw


def direction_params(cell: LSTMCell, weight_hh: Tensor) -> list[Tensor]:
    """What the C++ recurrence needs of one direction, in the order ``_unpack`` reads it."""
    params = [weight_hh]
    if cell.proj_size:
        params.append(cell.weight_hr)
    if cell.kind == "peephole":
        params.append(
            torch.stack([cell.peephole_input, cell.peephole_forget, cell.peephole_output])
        )
    bias = step_bias(cell)
    if bias is not None:
        params.append(bias)
    if cell.kind == "layernorm":
        params += [cell.norm_hidden.weight, cell.norm_hidden.bias]
        params += [cell.norm_cell.weight, cell.norm_cell.bias]
    return params


Spec = tuple[int, int, bool, bool]  # cell kind, directions, projection, step bias


def _unpack(spec: Spec, params: list[Tensor] | tuple[Tensor, ...]):
    """Split the flat parameter list into (w_hh, w_hr, peep, bias, ln) per direction."""
    kind, directions, proj, has_bias = spec
    per = len(params) // directions
    out = []
    for d in range(directions):
        p = list(params[d * per : (d + 1) * per])
        w_hh = p.pop(0)
        w_hr = p.pop(0) if proj else None
        peep = p.pop(0) if kind == CELL_KINDS["peephole"] else None
        bias = p.pop(0) if has_bias else None
        out.append((w_hh, w_hr, peep, bias, p))  # p: the four layer-norm tensors, or empty
    return out


def _forward(spec, lengths, xproj, h0, c0, params, save: bool):
    """Run every direction; returns (out, h_n, c_n, saved per direction)."""
    kernel = load_kernel()
    kind, directions = spec[0], spec[1]
    steps, batch, width = xproj.shape
    gates = width // directions
    hidden = c0.shape[-1]
    out_size = h0.shape[-1]
    out = kernel.empty([steps, batch, directions * out_size], xproj)  # (T, B, D*P)
    h_n, c_n, saved = [], [], []
    for d, (w_hh, w_hr, peep, bias, ln) in enumerate(_unpack(spec, params)):
        res = kernel.forward(
            xproj[..., d * gates : (d + 1) * gates],
            h0[d],
            c0[d],
            w_hh,
            w_hr,
            peep,
            bias,
            [t.contiguous() for t in ln],
            lengths,
            d == 1,
            kind,
            save,
            out[..., d * out_size : (d + 1) * out_size],
        )
        h_n.append(res[0])
        c_n.append(res[1].view(batch, hidden))
        saved.append([t for t in res[2:] if t is not None])
    if directions == 1:
        return out, h_n[0].unsqueeze(0), c_n[0].unsqueeze(0), saved
    return out, torch.stack(h_n), torch.stack(c_n), saved


class KernelLayer(torch.autograd.Function):
    """One layer, all directions: (xproj, h0, c0, *params) -> (out, h_n, c_n)."""

    @staticmethod
    def forward(ctx, spec, lengths, xproj, h0, c0, *params):
        ctx.set_materialize_grads(False)
        out, h_n, c_n, saved = _forward(spec, lengths, xproj, h0, c0, params, save=True)
        ctx.spec, ctx.lengths = spec, lengths
        ctx.xproj_shape = xproj.shape
        ctx.num_params, ctx.num_saved = len(params), len(saved[0])
        ctx.save_for_backward(out, h0, *params, *(t for per_dir in saved for t in per_dir))
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn, grad_cn):
        kernel = load_kernel()
        out, h0, *rest = ctx.saved_tensors
        params, activations = rest[: ctx.num_params], rest[ctx.num_params :]
        kind, directions = ctx.spec[0], ctx.spec[1]
        per_dir = ctx.num_saved
        saved = [activations[d * per_dir : (d + 1) * per_dir] for d in range(directions)]
        steps, batch, width = ctx.xproj_shape
        gates, out_size = width // directions, h0.shape[-1]
        grad_xproj = kernel.empty([steps, batch, width], out)  # (T, B, D*G), every entry written
        dh0, dc0, dparams = [], [], []
        for d, (w_hh, w_hr, peep, bias, ln) in enumerate(_unpack(ctx.spec, params)):
            res = kernel.backward(
                None if grad_out is None else grad_out[..., d * out_size : (d + 1) * out_size],
                None if grad_hn is None else grad_hn[d],
                None if grad_cn is None else grad_cn[d],
                grad_xproj[..., d * gates : (d + 1) * gates],
                out[..., d * out_size : (d + 1) * out_size],
                h0[d].contiguous(),
                w_hh,
                w_hr,
                peep,
                [t.contiguous() for t in ln],
                ctx.lengths,
                d == 1,
                kind,
                bias is not None,
                list(saved[d]),
            )
            dh0.append(res[0])
            dc0.append(res[1])
            d_whh, d_whr, d_peep, d_bias, *d_ln = res[2:]  # None where the cell has none
            dparams += [g for g in (d_whh, d_whr, d_peep, d_bias, *d_ln) if g is not None]
        return None, None, grad_xproj, torch.stack(dh0), torch.stack(dc0), *dparams
