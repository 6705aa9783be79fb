"""The compiled backend (the reference loop with each step fused by torch.compile).

Against the reference backend: outputs, final states and every gradient, for each cell, two
bidirectional layers and variable lengths; in float64 on the CPU (compiling takes seconds, so
the CPU cases are few) and in float32 on a CUDA device when there is one. Then ``auto``'s
choice: the compiled step on CUDA for what cuDNN cannot run, never on a CPU.
"""

import pytest
import torch

from lstmkit.nn import LSTM
from lstmkit.nn.backends import Placement, compiled, select_backend

from .conftest import outputs_and_grads, perturbed_twins

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def on_cuda(*case):
    return pytest.param("cuda", *case, marks=NEEDS_CUDA)


pytestmark = pytest.mark.usefixtures("exact_float32")


def _twins(dtype: torch.dtype, device: str, **options) -> tuple[LSTM, LSTM]:
    return perturbed_twins("compiled", device, dtype, **options)


_run = outputs_and_grads


@pytest.mark.parametrize(
    "device,dtype,cell,options",
    [
        ("cpu", torch.float64, "peephole", {}),
        ("cpu", torch.float64, "layernorm", {}),
        ("cpu", torch.float64, "cifg", {"proj_size": 3}),
        on_cuda(torch.float32, "lstm", {"proj_size": 3}),
        on_cuda(torch.float32, "peephole", {}),
        on_cuda(torch.float32, "layernorm", {}),
        on_cuda(torch.float32, "cifg", {}),
        on_cuda(torch.float32, "peephole", {"zoneout_cell": 0.2, "zoneout_hidden": 0.1}),
    ],
)
def test_compiled_matches_reference(device, dtype, cell, options):
    torch.manual_seed(0)
    reference, compiled_lstm = _twins(dtype, device, cell=cell, **options)
    reference.eval(), compiled_lstm.eval()  # zoneout mixes by its rate in eval: deterministic
    x = torch.randn(4, 7, 5, dtype=dtype, device=device)
    lengths = torch.tensor([7, 3, 5, 1])
    assert compiled_lstm.explain_backend().startswith("compiled backend")
    expected, got = _run(reference, x, lengths), _run(compiled_lstm, x, lengths)
    assert expected.keys() == got.keys()
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, **tol, msg=lambda m, n=name: f"{n}: {m}")


def test_compiled_recurrent_dropout_uses_the_layers_masks():
    """Recurrent dropout masks are drawn by the layer, outside the step: the same seed gives the
    same masks, so training runs agree with the reference exactly."""
    reference, compiled_lstm = _twins(torch.float64, "cpu", cell="peephole", recurrent_dropout=0.3)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 3])
    torch.manual_seed(1)
    expected = _run(reference.train(), x, lengths)
    torch.manual_seed(1)
    got = _run(compiled_lstm.train(), x, lengths)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-10, rtol=1e-10)


def test_auto_picks_the_compiled_step_on_cuda_only(monkeypatch):
    monkeypatch.setattr(compiled, "_has_triton", lambda: True)
    cuda = Placement(torch.device("cuda"), torch.float32)
    cpu = Placement(torch.device("cpu"), torch.float32)
    peephole = LSTM(3, 4, cell="peephole").config
    assert select_backend(peephole, training=True, placement=cuda).name == "compiled"
    assert select_backend(peephole, training=False, placement=cuda).name == "compiled"
    assert select_backend(peephole, training=True, placement=cpu).name != "compiled"
    # cuDNN still runs the standard cell, and gate tracing still needs the reference loop
    assert select_backend(LSTM(3, 4).config, training=True, placement=cuda).name == "fused"
    assert select_backend(peephole, True, tracing=True, placement=cuda).name == "reference"


def test_compiled_declines_what_it_cannot_run(monkeypatch):
    monkeypatch.setattr(compiled, "_has_triton", lambda: False)
    config = LSTM(3, 4, cell="peephole", backend="compiled").config
    cuda = Placement(torch.device("cuda"), torch.float32)
    with pytest.raises(ValueError, match="torch.compile needs Triton to compile GPU code"):
        select_backend(config, training=True, placement=cuda)
    with pytest.raises(ValueError, match="gate tracing needs the reference backend"):
        select_backend(config, training=True, tracing=True)
    mps = Placement(torch.device("meta"), torch.float32)
    with pytest.raises(ValueError, match="runs on CPU and CUDA tensors, got meta"):
        select_backend(config, training=True, placement=mps)


@NEEDS_CUDA
def test_cudnn_path_matches_reference_on_cuda():
    """On a GPU ``auto`` runs the standard cell through cuDNN (the fused backend)."""
    torch.manual_seed(0)
    reference, auto = _twins(torch.float32, "cuda")
    auto.config = auto.config.replace(backend="auto")
    assert auto.backend_choice.name == "fused"
    x = torch.randn(4, 7, 5, device="cuda")
    lengths = torch.tensor([7, 3, 5, 1])
    expected, got = _run(reference, x, lengths), _run(auto, x, lengths)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=2e-5, rtol=1e-4)


def test_every_cell_class_and_grad_mode_keeps_compiling(monkeypatch):
    """Dynamo stops compiling a function after 8 graphs and then runs it eagerly, silently; the
    backend keeps one compiled copy per cell class and grad mode so that limit is not shared.
    (The "eager" compiler runs dynamo's tracing and caching without generating code.)"""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compiled, "COMPILER", "eager")
    x = torch.randn(2, 3, 5)
    for cell in ("lstm", "peephole", "layernorm", "cifg"):
        lstm = LSTM(5, 6, cell=cell, backend="compiled")
        lstm.train()(x)
        with torch.no_grad():
            lstm.eval()(x)
    # 8 graphs so far: one shared function would now be at dynamo's limit
    before = counters["stats"]["unique_graphs"]
    lengths = torch.tensor([3, 1])
    LSTM(5, 6, cell="cifg", backend="compiled")(x, lengths=lengths)  # new guard: padding mask
    assert counters["stats"]["unique_graphs"] > before
