"""The C++ kernel backend against the reference backend, its automatic choice, and its fallback.

The kernel is built once per test session (about half a minute the first time, then cached);
these tests skip, saying why, only when it cannot be built on this machine.
"""

import copy
import itertools
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from lstmkit.nn import LSTM
from lstmkit.nn.backends import BACKENDS, Placement
from lstmkit.nn.backends.kernel import (
    CELL_KINDS,
    DISABLE_ENV,
    build_failure,
    kernel_unavailable,
    load_kernel,
)


@pytest.fixture(scope="session")
def kernel():
    """Build (or load) the kernel once; skip with the reason where it cannot be built."""
    reason = kernel_unavailable()
    if reason is not None:
        pytest.skip(reason)


def _perturbed(lstm: LSTM, dtype: torch.dtype) -> LSTM:
    """``lstm`` in ``dtype`` with every parameter nudged off its initial value (so peepholes,
    layer-norm gains and biases are all non-trivial)."""
    lstm = lstm.to(dtype)
    with torch.no_grad():
        for p in lstm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return lstm


def _with_backend(lstm: LSTM, backend: str) -> LSTM:
    twin = copy.deepcopy(lstm)
    twin.config = twin.config.replace(backend=backend)
    return twin


def _run(lstm, x, state, lengths, weights):
    """Outputs, final state and every gradient of a fixed weighted loss."""
    x = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    out, (h, c) = lstm(x, (h0, c0), lengths=lengths)
    loss = sum((t * w).sum() for t, w in zip((out, h, c), weights, strict=True))
    loss.backward()
    named = {"output": out, "h_n": h, "c_n": c, "x.grad": x.grad}
    named |= {"h0.grad": h0.grad, "c0.grad": c0.grad}
    named |= {f"{n}.grad": p.grad for n, p in lstm.named_parameters()}
    return named


def _tolerance(cell: str, dtype: torch.dtype, reference: torch.Tensor) -> dict:
    if dtype == torch.float64:
        return dict(atol=1e-10, rtol=1e-10)
    if cell == "layernorm":
        # LN divides by a per-row std, which amplifies float32 rounding in both backends alike
        # (each is ~1e-5 of the largest gradient away from the float64 result, where the two
        # agree to 1e-10): compare relative to the tensor's size.
        return dict(atol=5e-5 * max(1.0, reference.abs().max().item()), rtol=1e-5)
    return dict(atol=1e-5, rtol=1e-5)


CASES = list(
    itertools.product(
        ["lstm", "peephole", "layernorm", "cifg"], [1, 2, 3], [False, True], [0, 3], [False, True]
    )
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell,layers,bidirectional,proj,variable", CASES)
def test_kernel_matches_reference(kernel, dtype, cell, layers, bidirectional, proj, variable):
    torch.manual_seed(layers * 10 + proj)
    batch, steps, inputs, hidden = 4, 6, 5, 7
    reference = _perturbed(
        LSTM(
            inputs,
            hidden,
            layers,
            bidirectional=bidirectional,
            proj_size=proj,
            cell=cell,
            backend="reference",
        ),
        dtype,
    )
    ours = _with_backend(reference, "kernel")
    assert ours.backend_choice.name == "kernel"
    d = 2 if bidirectional else 1
    x = torch.randn(batch, steps, inputs, dtype=dtype)
    state = (
        torch.randn(layers * d, batch, proj or hidden, dtype=dtype),
        torch.randn(layers * d, batch, hidden, dtype=dtype),
    )
    lengths = torch.tensor([6, 2, 5, 1]) if variable else None
    out, _ = reference(x, state, lengths=lengths)
    weights = [torch.randn(shape, dtype=dtype) for shape in (out.shape, *(s.shape for s in state))]
    expected = _run(reference, x, state, lengths, weights)
    got = _run(ours, x, state, lengths, weights)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, **_tolerance(cell, dtype, value), msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.fixture
def two_threads(kernel):
    """Two threads and no size threshold: where the process has two CPUs, small batches take
    the unit split of columns.h."""
    module = load_kernel()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    previous = module.set_column_split_min_work(0)
    yield module
    module.set_column_split_min_work(previous)
    torch.set_num_threads(threads)


@pytest.fixture
def unit_split(two_threads):
    """As ``two_threads``, where the unit split can run."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the unit split runs two threads at once; this process may use one CPU")
    return two_threads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hidden", [7, 32])  # 3 + 4 units; 16 + 16 (the narrow AVX-512 products)
@pytest.mark.parametrize(
    "cell,batch,bidirectional,variable",
    list(itertools.product(["lstm", "peephole", "cifg"], [1, 3], [False, True], [False, True])),
)
def test_small_batches_split_units_across_threads_exactly(
    unit_split, dtype, hidden, cell, batch, bidirectional, variable
):
    assert unit_split.column_split_threads(batch, hidden, 0, CELL_KINDS[cell]) == 2
    _check_small_batch(dtype, hidden, cell, batch, bidirectional, variable)


def _check_small_batch(dtype, hidden, cell, batch, bidirectional, variable) -> None:
    """Two layers of ``cell`` on the kernel against the reference loop: outputs and every
    gradient."""
    torch.manual_seed(batch)
    reference = _perturbed(
        LSTM(5, hidden, 2, bidirectional=bidirectional, cell=cell, backend="reference"), dtype
    )
    ours = _with_backend(reference, "kernel")
    d = 2 if bidirectional else 1
    x = torch.randn(batch, 6, 5, dtype=dtype)
    state = tuple(torch.randn(2 * d, batch, hidden, dtype=dtype) for _ in range(2))
    lengths = torch.tensor([6, 2, 5][:batch]) if variable else None
    out, _ = reference(x, state, lengths=lengths)
    weights = [torch.randn(shape, dtype=dtype) for shape in (out.shape, *(s.shape for s in state))]
    expected = _run(reference, x, state, lengths, weights)
    got = _run(ours, x, state, lengths, weights)
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, **_tolerance(cell, dtype, value), msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("threads", [3, 4])
@pytest.mark.parametrize("hidden,cell", [(7, "lstm"), (32, "peephole"), (10, "cifg")])
def test_the_unit_split_with_more_threads_than_two(two_threads, threads, hidden, cell):
    """With three threads or more, a thread between two others has units of h on both sides of
    its own: it adds both parts after its own (forward) and writes both blocks of its partial's
    columns before it arrives (backward). The machine may have two CPUs: the kernel is told it
    has more, and its barrier's sleeping keeps the extra threads from spinning against each
    other."""
    torch.set_num_threads(threads)
    previous = two_threads.set_cpu_count_override(threads)
    try:
        assert two_threads.column_split_threads(1, hidden, 0, CELL_KINDS[cell]) == threads
        for batch, bidirectional, variable in ((1, False, False), (3, True, True)):
            _check_small_batch(torch.float64, hidden, cell, batch, bidirectional, variable)
    finally:
        two_threads.set_cpu_count_override(previous)


@pytest.mark.parametrize("spins", [0, 1 << 40], ids=["sleeping", "spinning"])
def test_the_unit_split_is_exact_whether_its_threads_sleep_or_spin_at_each_step(unit_split, spins):
    """The threads meet at a barrier every step (barrier.h): a thread spins for a while, then
    sleeps until the last one arrives. Each way must hand every step's state over whole."""
    previous = unit_split.set_barrier_spins(spins)
    try:
        _check_small_batch(torch.float64, 32, "lstm", 3, bidirectional=True, variable=True)
    finally:
        unit_split.set_barrier_spins(previous)


@pytest.mark.parametrize("hidden", [128, 160, 200, 512])
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_the_unit_split_at_wider_layers(unit_split, hidden, cell):
    """Two threads, batch 1: each thread's forward product is G/2 columns wide, which the
    AVX-512 single-row product runs in 256-column blocks and a narrow rest (hidden 128: CIFG 192
    columns; 160: 320 = 256 + 64, CIFG 240; 200: 400 = 256 + 144; 512: 1024, CIFG 768), or oneDNN
    where it is not a multiple of 16 (CIFG at 200: 300 columns)."""
    _check_float32_layer(cell, hidden, batch=1)


def _check_float32_layer(cell: str, hidden: int, batch: int) -> None:
    """One float32 layer of ``hidden`` units on the kernel against the reference loop."""
    torch.manual_seed(hidden)
    reference = _perturbed(LSTM(5, hidden, cell=cell, backend="reference"), torch.float32)
    _assert_kernel_matches(
        reference, torch.randn(batch, 6, 5), lambda v: _tolerance(cell, torch.float32, v)
    )


def _assert_kernel_matches(reference: LSTM, x: torch.Tensor, tolerance) -> None:
    """The kernel's twin of ``reference`` against it on (batch-first) ``x`` from a random
    state: outputs, final state and every gradient of a weighted loss, each within
    ``tolerance(expected)`` (assert_close's keyword arguments)."""
    ours = _with_backend(reference, "kernel")
    layers = reference.config.num_layers * reference.config.num_directions
    hidden = reference.config.hidden_size
    state = tuple(0.5 * torch.randn(layers, x.shape[0], hidden) for _ in range(2))
    out, _ = reference(x, state)
    weights = [torch.randn(shape) for shape in (out.shape, *(s.shape for s in state))]
    expected = _run(reference, x, state, None, weights)
    got = _run(ours, x, state, None, weights)
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, **tolerance(value), msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_the_row_split_at_wider_layers(two_threads, cell):
    """4H = 640 gates: the float32 step products run in blocks of 256 columns (a remainder of
    128) and, backward (dh' = dz W_hh, 640 deep), of 512 depth (a remainder of 128) that
    accumulate (gemm.h); every block must land in the right place. Two threads, row split.
    (CIFG: 3H = 480 at hidden 160, and 3H = 576 at hidden 192, which has a depth remainder.)"""
    two_threads.set_column_split_min_work(1 << 40)
    _check_float32_layer(cell, 160, batch=12)
    if cell == "cifg":
        _check_float32_layer(cell, 192, batch=12)


@pytest.mark.parametrize("batch", [1, 8], ids=["unit-split", "row-split"])
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_small_activations_keep_their_relative_precision_in_float32(kernel, cell, batch):
    """Pre-activations of 1e-6 to 1e-3: tanh of them, c and h are as small. The float32 kernel
    must keep their relative precision as torch's tanh does: 1 - 2 / (1 + e^2x), exact enough
    elsewhere, is about 1e-7 off in absolute terms, which here is 1% to 100% of the value."""
    torch.manual_seed(0)
    lstm = LSTM(4, 24, cell=cell, backend="kernel")
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            p.copy_(1e-3 * torch.rand_like(p) if "weight" in name else torch.zeros_like(p))
    x = torch.logspace(-3, 0, batch * 20 * 4).reshape(batch, 20, 4)
    exact = _with_backend(lstm, "reference").double()
    out, (h, c) = lstm(x)
    out64, (h64, c64) = exact(x.double())
    assert out64.abs().max() < 1e-2  # the case at hand: every h small
    for name, got, want in (("output", out, out64), ("h_n", h, h64), ("c_n", c, c64)):
        worst = ((got.double() - want).abs() / want.abs()).max().item()
        assert worst < 1e-5, f"{cell}, batch {batch}: {name} off by {worst:.1e} relative"


def _ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Distance in units in the last place between float32 tensors of finite values."""

    def ordered(t: torch.Tensor) -> torch.Tensor:
        bits = t.view(torch.int32).to(torch.int64)
        return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return (ordered(got) - ordered(want)).abs()


@pytest.mark.parametrize(
    "name,worst,low,high",
    [("exp", 2, -87.0, 88.0), ("sigmoid", 3, -87.0, None), ("tanh", 4, None, None)],
)
def test_the_float_activations_stay_within_their_ulps(kernel, name, worst, low, high):
    """The cells' float exp, sigmoid and tanh (Cephes' polynomials, written to vectorise) against
    float64, rounded: within 2, 3 and 4 units in the last place. The worst over every float was
    1, 2 and 3 here (found exhaustively, with this CPU's fused multiply-adds); one more allows
    for a compiler or CPU that rounds the polynomials' steps apart, while a coefficient wrong in
    its sixth digit is off by dozens. Here every 509th float bit pattern, and densely where the
    pieces meet: 0 and |x| = 0.625 (tanh's two forms), the rounding of x / ln 2. Sigmoid is not
    held below -87, where the exp's clamp leaves 1e-38 for a subnormal."""
    patterns = torch.arange(0, 1 << 32, 509, dtype=torch.int64)
    every = (patterns - (1 << 32) * (patterns >= 1 << 31)).to(torch.int32).view(torch.float32)
    dense = torch.cat([torch.linspace(-2, 2, 400_001), torch.linspace(0.62, 0.63, 100_001)]).to(
        torch.float32
    )
    x = torch.cat([every, dense, -dense])
    x = x[x.isfinite()]
    if low is not None:
        x = x[x > low]
    if high is not None:
        x = x[x < high]
    want = {"exp": torch.exp, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[name](x.double())
    got = load_kernel().activation(x, name)
    off = _ulps(got, want.float())
    at = off.argmax()
    assert off.max().item() <= worst, (
        f"{name}({x[at].item()!r}) = {got[at].item()!r}, float64 gives {want[at].item()!r}: "
        f"{off.max().item()} ulps"
    )
    assert load_kernel().activation(torch.tensor([float("nan")]), name).isnan().all()


def test_activation_names_what_it_computes(kernel):
    with pytest.raises(RuntimeError, match="expected 'exp', 'sigmoid' or 'tanh', got 'relu'"):
        load_kernel().activation(torch.zeros(3), "relu")


@pytest.mark.parametrize("batch", [1, 8], ids=["unit-split", "row-split"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_a_nan_reaches_the_outputs_as_in_the_reference(kernel, dtype, batch):
    """A NaN input (or a diverged model) must show, not be clamped away: the float exp once
    clamped NaN to -87.3, so sigmoid(NaN) was 1 and tanh(NaN) -1, all finite."""
    torch.manual_seed(0)
    lstm = LSTM(4, 32, backend="kernel").to(dtype)
    x = torch.randn(batch, 6, 4, dtype=dtype)
    x[0, 2, 1] = float("nan")
    got, (h, c) = lstm(x)
    want, (h_ref, c_ref) = _with_backend(lstm, "reference")(x)
    assert want[0, 2:].isnan().all() and not want[0, :2].isnan().any()
    for name, a, b in (("output", got, want), ("h_n", h, h_ref), ("c_n", c, c_ref)):
        assert torch.equal(a.isnan(), b.isnan()), f"{name}: NaN where the reference has none"


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_one_row_on_one_thread_through_column_blocks(kernel, one_thread, cell):
    """Batch 1 on one thread: the row split's single-row product reads W_hh^T packed in blocks
    of 256 columns (transposed_blocks, gemm.h): 640 gates are 256 + 256 + 128 (CIFG: 480 =
    256 + 224); every block must land in the right place."""
    _check_float32_layer(cell, 160, batch=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_the_row_split_through_column_blocks_of_every_weight(two_threads, cell, dtype):
    """Hidden 300 projected to 270: every step product of the row split is wider than one block
    of 256 columns: forward W_hh^T (1200) and W_hr^T (270), read from their column blocks
    (transposed_blocks, gemm.h); backward W_hh (270) and W_hr (300), read in place, 256
    columns at a time. Float32 gradients reach ~30 here, summed over 48 rows: their tolerance
    scales with the largest."""
    two_threads.set_column_split_min_work(1 << 40)
    torch.manual_seed(5)
    reference = _perturbed(LSTM(5, 300, proj_size=270, cell=cell, backend="reference"), dtype)
    ours = _with_backend(reference, "kernel")
    x = torch.randn(12, 4, 5, dtype=dtype)
    state = (0.5 * torch.randn(1, 12, 270, dtype=dtype), 0.5 * torch.randn(1, 12, 300, dtype=dtype))
    out, _ = reference(x, state)
    weights = [torch.randn(t.shape, dtype=dtype) for t in (out, *state)]
    expected = _run(reference, x, state, None, weights)
    got = _run(ours, x, state, None, weights)
    for name, value in expected.items():
        scale = max(1.0, value.abs().max().item())
        tolerance = (
            dict(atol=1e-10, rtol=1e-10)
            if dtype == torch.float64
            else dict(atol=1e-5 * scale, rtol=1e-5)
        )
        torch.testing.assert_close(got[name], value, **tolerance, msg=name)


def test_the_unit_split_through_column_blocks_in_float64(unit_split):
    """Hidden 160, two threads: each thread's 320 gate columns are two blocks (256 + 64), with
    a gate across the boundary; the float64 products run the plain loop on the same layout."""
    _check_small_batch(torch.float64, 160, "lstm", 1, bidirectional=False, variable=False)


@pytest.mark.parametrize(
    "split,cell,proj",
    [("unit", "lstm", 0), ("row", "lstm", 0), ("row", "layernorm", 32)],
    ids=["unit-split", "row-split", "row-split-layernorm-projection"],
)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooled_buffers_holding_nan_are_written_before_they_are_read(
    request, split, cell, proj, bidirectional
):
    """Large buffers come from the pool uninitialised. The weight gradients' operand [x | h'] is
    written by the forward loop, as it goes, at every position: h' at each valid step, finite
    values past each length (where dz is zero, but 0 * NaN is not). With every pooled buffer
    holding NaN beforehand, the gradients still match the reference."""
    kernel = request.getfixturevalue("unit_split" if split == "unit" else "two_threads")
    kernel.release_buffers()
    like = torch.empty(0, dtype=torch.float64)
    size, held = 1 << 14, []  # 128 KiB of float64, the smallest buffer the pool keeps
    while size < 1 << 23:
        # a few of each size, all held at once (else the pool hands the same one back)
        held += [kernel.empty([size], like).fill_(float("nan")) for _ in range(4)]
        size = size * 5 // 4
    del held  # back to the pool, NaN and all
    batch = 3 if split == "unit" else 8
    steps = 300 if split == "unit" else 120  # the operand (T, B, 4 + 160) above 1 MiB
    torch.manual_seed(batch)
    reference = _perturbed(
        LSTM(4, 160, bidirectional=bidirectional, proj_size=proj, cell=cell, backend="reference"),
        torch.float64,
    )
    ours = _with_backend(reference, "kernel")
    d = 2 if bidirectional else 1
    x = torch.randn(batch, steps, 4, dtype=torch.float64)
    state = (
        torch.randn(d, batch, proj or 160, dtype=torch.float64),
        torch.randn(d, batch, 160, dtype=torch.float64),
    )
    lengths = torch.tensor([steps, steps // 3, 2, steps - 1, 1, steps, 7, 40][:batch])
    out, _ = reference(x, state, lengths=lengths)
    weights = [torch.randn(s.shape, dtype=torch.float64) for s in (out, *state)]
    expected = _run(reference, x, state, lengths, weights)
    got = _run(ours, x, state, lengths, weights)
    kernel.release_buffers()
    for name, value in expected.items():  # (gradients reach the thousands over 120 steps)
        atol = 1e-10 * max(1.0, value.abs().max().item())
        torch.testing.assert_close(got[name], value, atol=atol, rtol=1e-10, msg=name)


def test_an_expanded_output_gradient(kernel):
    """out.sum() hands the backward an expanded gradient (every stride 0), which the kernel
    copies into contiguous rows first."""
    torch.manual_seed(3)
    reference = _perturbed(LSTM(5, 16, bidirectional=True, backend="reference"), torch.float64)
    ours = _with_backend(reference, "kernel")
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    grads = []
    for lstm in (reference, ours):
        out, _ = lstm(x)
        out.sum().backward()
        grads.append({n: p.grad for n, p in lstm.named_parameters()})
    for name, value in grads[0].items():
        torch.testing.assert_close(grads[1][name], value, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("steps", [5, 600], ids=["small", "pooled"])
def test_outputs_edited_in_place_after_the_forward(
    kernel, layers, bidirectional, batch_first, steps
):
    """An in-place op on the outputs (an in-place ReLU after the layer) works as it does on
    torch.nn.LSTM: backward reads the outputs from a copy of its own, and h_n, c_n are not views.
    At 600 steps the output (at least 1 MiB) comes from the buffer pool, which must not hand out
    views either."""
    torch.manual_seed(6)
    reference = _perturbed(
        LSTM(4, 40, layers, bidirectional=bidirectional, batch_first=batch_first),
        torch.float64,
    )
    reference.config = reference.config.replace(backend="reference")
    ours = _with_backend(reference, "kernel")
    x = torch.randn(6, steps, 4, dtype=torch.float64)
    if batch_first is False:
        x = x.transpose(0, 1).contiguous()
    grads = []
    for lstm in (reference, ours):
        out, (h, c) = lstm(x)
        out.relu_()
        h.mul_(2.0)
        c.mul_(3.0)
        ((out * out).sum() + h.sum() + (c * c).sum()).backward()
        grads.append({n: p.grad for n, p in lstm.named_parameters()})
    for name, value in grads[0].items():
        torch.testing.assert_close(grads[1][name], value, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg", "layernorm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_retained_graph_gives_the_same_gradients_at_every_backward(kernel, cell, bidirectional):
    """The backward pass writes dz over the saved gates (which the forward saved over the input
    projection, in the row split), where autograd frees the saved tensors after the pass. With
    retain_graph=True it must not: each backward through the kept graph gives the same
    gradients, through .backward and torch.autograd.grad alike."""
    torch.manual_seed(8)
    reference = _perturbed(
        LSTM(5, 16, bidirectional=bidirectional, cell=cell, backend="reference"), torch.float64
    )
    ours = _with_backend(reference, "kernel")
    x0 = torch.randn(4, 7, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 6, 1])
    expected = None
    for lstm in (reference, ours):
        x = x0.clone().requires_grad_()
        out, (h, c) = lstm(x, lengths=lengths)
        loss = (out * out).sum() + (c * h).sum()
        params = list(lstm.parameters())
        rounds = [torch.autograd.grad(loss, [x, *params], retain_graph=True) for _ in range(3)]
        loss.backward()  # the last one frees the graph
        rounds.append((x.grad, *(p.grad for p in params)))
        if expected is None:
            expected = rounds[0]
        for k, grads in enumerate(rounds):
            names = ["x", *dict(lstm.named_parameters())]
            for name, got, value in zip(names, grads, expected, strict=True):
                torch.testing.assert_close(
                    got, value, atol=1e-10, rtol=1e-10, msg=f"backward {k + 1}, {name}"
                )


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_training_call_keeps_one_buffer_for_projection_gates_and_dz(kernel, bidirectional):
    """Where autograd frees the graph after backward, dz goes over the saved gates, which went
    over the input projection: the pool then holds one (T, B, D*4H) buffer fewer than when
    the graph is kept (which must leave the gates as they are)."""
    torch.manual_seed(9)
    lstm = LSTM(8, 64, bidirectional=bidirectional, backend="kernel")
    x = torch.randn(40, 100, 8)  # (T, B, D*4H) = 100 x 40 x D*256 floats: 4 or 8 MiB
    held = {}
    for retain in (True, False):
        load_kernel().release_buffers()
        out, _ = lstm(x)
        out.sum().backward(retain_graph=retain)
        held[retain] = load_kernel().held_bytes()
    load_kernel().release_buffers()
    projection = 100 * 40 * 256 * (2 if bidirectional else 1) * 4
    assert held[True] - held[False] >= projection, held


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])  # the node projects x, or takes it
@pytest.mark.parametrize(
    "wanted", ["input", "weights", "input_weights_only", "recurrent_weights_only", "h_n_only"]
)
def test_only_the_gradients_asked_for(kernel, cell, wanted):
    """The layer's C++ node computes dx and dW_ih only where they are needed, and takes a loss
    that does not read the output sequence. Lengths are given: they come first among the node's
    tensor arguments, so a miscounted one shows here. With W_ih frozen, the weight gradients'
    saved operand [x | h'] holds h' alone."""
    torch.manual_seed(5)
    reference = _perturbed(
        LSTM(5, 6, 2, bidirectional=True, cell=cell, backend="reference"), torch.float64
    )
    ours = _with_backend(reference, "kernel")
    x0 = torch.randn(3, 4, 5, dtype=torch.float64)
    lengths = torch.tensor([4, 1, 3])
    grads = []
    for lstm in (reference, ours):
        x = x0.clone().requires_grad_(wanted != "weights")
        for name, p in lstm.named_parameters():
            only = {"input_weights_only": "ih", "recurrent_weights_only": "weight_hh"}.get(wanted)
            p.requires_grad_(wanted != "input" and (only is None or only in name))
        out, (h, c) = lstm(x, lengths=lengths)
        loss = (h * h).sum() if wanted == "h_n_only" else (out * out).sum() + c.sum()
        loss.backward()
        grads.append({"x": x.grad} | {n: p.grad for n, p in lstm.named_parameters()})
    for name, value in grads[0].items():
        if value is None:
            assert grads[1][name] is None, name
        else:
            torch.testing.assert_close(grads[1][name], value, atol=1e-10, rtol=1e-10, msg=name)
    assert (grads[1]["x"] is None) == (wanted == "weights")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_weight_gradients_come_back_contiguous(kernel, bidirectional):
    """W_ih's and W_hh's gradients come from one product over [x | h']; each comes back as a
    tensor of its own, so code that sees it before AccumulateGrad (autograd.grad, a hook) can
    .view() it, as with the reference backend."""
    torch.manual_seed(3)
    lstm = LSTM(5, 6, bidirectional=bidirectional, backend="kernel")
    seen = []
    lstm.cells[0].weight_hh.register_hook(lambda g: seen.append(g.view(-1)))
    out, _ = lstm(torch.randn(3, 4, 5))
    weights = [p for name, p in lstm.named_parameters() if "weight" in name]
    grads = torch.autograd.grad((out * out).sum(), weights)
    assert [g.is_contiguous() for g in grads] == [True] * len(weights)
    assert len({g.data_ptr() for g in grads}) == len(grads)  # no two share a buffer
    assert len(seen) == 1 and seen[0].numel() == 24 * 6


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("batch", [1, 9])  # the unit split and the row split
def test_a_state_autocast_lets_through_runs_in_the_inputs_dtype(two_threads, batch, grad):
    """Under CPU autocast the layer accepts a state in another dtype (bfloat16 here) than its
    float32 input; the kernel runs float32, as for the state cast to float32 by hand."""
    torch.manual_seed(5)
    lstm = LSTM(4, 6, backend="kernel")
    x = torch.randn(batch, 5, 4)
    state = tuple(torch.randn(1, batch, 6).bfloat16() for _ in range(2))
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = lstm(x, state)
    with torch.set_grad_enabled(grad):
        expected, (h_ref, c_ref) = lstm(x, tuple(s.float() for s in state))
    assert out.dtype == torch.float32
    for got, want in ((out, expected), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    if grad:
        out.sum().backward()  # the state's cast is part of the graph


def test_the_kernels_entry_refuses_a_state_of_the_wrong_size_or_dtype(two_threads):
    """The raw entry copies h0 and c0 as they are: it names a state that does not hold
    exactly batch x hidden values of the loop's dtype instead of reading past it."""
    x = torch.randn(5, 3, 16)  # (T, B, 4H) projection
    w_hh, out = torch.randn(16, 4), torch.empty(5, 3, 4)
    h0 = torch.zeros(3, 4)
    for c0, what in ((torch.zeros(1, 4), "12 values of Float"), (h0.double(), "Double state")):
        with pytest.raises(RuntimeError, match=what):
            two_threads.forward(x, h0, c0, w_hh, None, None, None, [], None, False, 0, False, out)


def test_the_kernels_entry_with_no_steps_returns_the_initial_state(two_threads):
    """Zero steps: the final state is the initial one (the row split writes each step's h into
    the output and reads h_n back from its last step, of which there is none here)."""
    h0, c0 = torch.randn(3, 4), torch.randn(3, 4)
    x, w_hh, out = torch.randn(0, 3, 16), torch.randn(16, 4), torch.empty(0, 3, 4)
    h_n, c_n = two_threads.forward(
        x, h0, c0, w_hh, None, None, None, [], None, False, 0, False, out
    )
    assert torch.equal(h_n, h0) and torch.equal(c_n, c0)


def test_the_layer_entry_refuses_an_input_without_steps(kernel):
    """The layer node (which writes h0 into the first step of the weight gradients' operand)
    names an input with no steps instead of writing past it; the Python layer refuses one
    before it gets there."""
    params = [torch.randn(16, 3, requires_grad=True), torch.randn(16, 4, requires_grad=True)]
    h0, c0 = torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
    with pytest.raises(RuntimeError, match=r"at least one step, got shape \[0, 2, 3\]"):
        load_kernel().layer(0, 1, False, False, True, None, torch.randn(0, 2, 3), h0, c0, params)


def test_the_kernels_entry_refuses_biases_in_the_step_for_the_layer_norm_cell(two_threads):
    """The layer-norm cell's biases follow its norm, in the projection: the step refuses them
    rather than dropping them."""
    h0, c0 = torch.zeros(3, 4), torch.zeros(3, 4)
    x, w_hh, out = torch.randn(5, 3, 16), torch.randn(16, 4), torch.empty(5, 3, 4)
    norms = [torch.ones(16), torch.zeros(16), torch.ones(4), torch.zeros(4)]
    with pytest.raises(RuntimeError, match="layer-norm cell takes its biases in xproj"):
        two_threads.forward(
            x, h0, c0, w_hh, None, None, torch.zeros(16), norms, None, False, 2, False, out
        )


@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_parametrized_weights_run_as_in_the_reference(kernel, cell):
    """A weight under ``torch.nn.utils.parametrize`` (an orthogonal W_hh, a weight-normed W_ih
    and peephole) is a property computed at each access, not an entry of the cell's parameters:
    the kernel runs what the property gives, and the gradients reach the parametrizations'
    originals as on the reference backend."""
    from torch.nn.utils import parametrizations

    lstms = {}
    for backend in ("reference", "kernel"):
        torch.manual_seed(4)
        lstm = LSTM(5, 6, cell=cell, backend=backend).double()
        parametrizations.orthogonal(lstm.cells[0], "weight_hh")
        parametrizations.weight_norm(lstm.cells[0], "weight_ih")
        if cell == "peephole":
            parametrizations.weight_norm(lstm.cells[0], "peephole_forget", dim=None)
        lstms[backend] = lstm
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    results = {}
    for backend, lstm in lstms.items():
        out, (h, c) = lstm(x)
        ((out * out).sum() + h.sum() + c.sum()).backward()
        grads = {n: p.grad for n, p in lstm.named_parameters()}
        assert any("original" in n for n in grads)  # the parametrizations' own parameters
        results[backend] = {"output": out.detach(), **grads}
    for name, expected in results["reference"].items():
        torch.testing.assert_close(results["kernel"][name], expected, atol=1e-10, rtol=1e-10)


def test_higher_order_gradients_say_which_backend_has_them(kernel):
    lstm = LSTM(3, 4, backend="kernel")
    out, _ = lstm(torch.randn(2, 5, 3))
    with pytest.raises(RuntimeError, match=r"create_graph=True.*backend='reference'"):
        torch.autograd.grad(out.sum(), lstm.cells[0].weight_hh, create_graph=True)
    reference = LSTM(3, 4, backend="reference")  # which does have them
    out, _ = reference(torch.randn(2, 5, 3))
    (grad,) = torch.autograd.grad(out.sum(), reference.cells[0].weight_hh, create_graph=True)
    assert grad.requires_grad


@pytest.mark.parametrize(
    "cell,split_units",  # the layer-norm cell always takes the row split
    [*itertools.product(["lstm", "peephole", "cifg"], [False, True]), ("layernorm", False)],
)
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_biases_enter_in_the_step_exactly(unit_split, split_units, cell, bias):
    """The step adds b_ih + b_hh (the layer-norm cell keeps them in its projection); without
    biases there is nothing to add. Both threadings, both directions, padding."""
    if not split_units:
        unit_split.set_column_split_min_work(1 << 40)
    torch.manual_seed(7)
    reference = _perturbed(
        LSTM(5, 32, 2, bidirectional=True, bias=bias, cell=cell, backend="reference"),
        torch.float64,
    )
    ours = _with_backend(reference, "kernel")
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    state = tuple(torch.randn(4, 2, 32, dtype=torch.float64) for _ in range(2))
    lengths = torch.tensor([6, 3])
    out, _ = reference(x, state, lengths=lengths)
    weights = [torch.randn(s.shape, dtype=torch.float64) for s in (out, *state)]
    expected = _run(reference, x, state, lengths, weights)
    got = _run(ours, x, state, lengths, weights)
    assert got.keys() == expected.keys()
    assert ("cells.0.bias_ih.grad" in got) == bias
    for name, value in expected.items():
        torch.testing.assert_close(
            got[name], value, atol=1e-10, rtol=1e-10, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_the_unit_split_is_only_for_small_batches_of_unit_local_cells(unit_split):
    split = unit_split.column_split_threads
    assert split(1, 128, 0, CELL_KINDS["lstm"]) == 2
    assert split(8, 128, 0, CELL_KINDS["lstm"]) == 1  # four rows per thread: the row split
    assert split(1, 128, 0, CELL_KINDS["layernorm"]) == 1  # its norm spans all units
    assert split(1, 128, 64, CELL_KINDS["lstm"]) == 1  # projection
    unit_split.set_column_split_min_work(4 * 128 * 128 + 1)
    assert split(1, 128, 0, CELL_KINDS["lstm"]) == 1  # too little work per step


def test_the_unit_split_runs_no_more_threads_than_the_process_has_cpus(unit_split):
    cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(cpus + 2)  # its threads wait for each other at every step
    assert unit_split.column_split_threads(1, 128, 0, CELL_KINDS["lstm"]) == min(cpus, 128)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "layernorm", "cifg"])
def test_kernel_gradcheck_float64(kernel, cell):
    torch.manual_seed(0)
    lstm = _perturbed(
        LSTM(3, 4, 2, bidirectional=True, proj_size=2, cell=cell, backend="kernel"), torch.float64
    )
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])

    def run(x, h0, c0):
        out, (h, c) = lstm(x, (h0, c0), lengths=lengths)
        return out, h, c

    assert torch.autograd.gradcheck(run, (x, h0, c0))


def test_training_regularisers_match_reference(kernel):
    """Weight drop and dropout between layers are drawn by the layer, so the same seed gives
    the same masks on both backends."""
    torch.manual_seed(0)
    reference = LSTM(
        5, 6, 2, weight_dropout=0.3, dropout=0.2, input_dropout=0.1, backend="reference"
    ).train()
    ours = _with_backend(reference, "kernel")
    x = torch.randn(3, 4, 5)
    results = []
    for lstm in (reference, ours):
        torch.manual_seed(1)
        out, (h, c) = lstm(x)
        (out.sum() + h.sum()).backward()
        results.append([out, h, c, *(p.grad for p in lstm.parameters())])
    for got, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_no_grad_forward_matches(kernel):
    torch.manual_seed(0)
    reference = LSTM(5, 8, 2, proj_size=3, cell="peephole", backend="reference").eval()
    ours = _with_backend(reference, "kernel")
    x = torch.randn(2, 7, 5)
    with torch.no_grad():
        expected = reference(x, lengths=torch.tensor([7, 4]))
        got = ours(x, lengths=torch.tensor([7, 4]))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- automatic choice
def test_auto_prefers_the_kernel_for_training_on_cpu(kernel):
    for cell in ("lstm", "peephole", "layernorm"):
        lstm = LSTM(3, 4, cell=cell).train()
        assert lstm.backend_choice.name == "kernel"
        assert lstm.explain_backend() == "kernel backend: fastest backend for this configuration"


def test_auto_prefers_the_fused_kernel_for_standard_inference(kernel):
    assert LSTM(3, 4).eval().backend_choice.name == "fused"
    assert LSTM(3, 4, cell="layernorm").eval().explain_backend() == (
        "kernel backend: layer-normalised cells are not supported by the fused kernel"
    )


def test_auto_runs_small_batch_inference_on_the_kernel(kernel):
    """Inference follows the training order at small batches without a projection: up to
    hidden 256 below four rows per thread or while rows per thread x hidden <= 512, and up to
    hidden 768 at batch 1 only; there the kernel's forward pass is the faster one
    (benchmarks/results/kernel_selection_small*.md). Elsewhere, or with the batch unknown,
    PyTorch's goes first."""
    from lstmkit.nn.backends import select_backend

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            small = ((16, 1), (32, 4 * n - 1), (256, 4 * n - 1), (512, 1), (768, 1))
            for hidden, batch in (*small, (128, 4 * n), (32, 16 * n)):  # 4 and 16 rows a thread
                placement = Placement(cpu, torch.float32, batch)
                got = select_backend(LSTM(3, hidden).config, False, placement=placement)
                assert got == (
                    "kernel",
                    f"fastest backend at {batch} row(s): at batches this small the C++ "
                    "kernel's forward pass beats PyTorch's",
                ), (n, hidden, batch)
            for config, batch in (
                (LSTM(3, 128).config, 4 * n + 1),  # 5 rows a thread x 128 > 512
                (LSTM(3, 32).config, 16 * n + 1),  # 17 rows a thread x 32 > 512
                (LSTM(3, 128).config, None),  # batch unknown (lstm.backend_choice)
                (LSTM(3, 512).config, 2),  # above hidden 256: batch 1 only
                (LSTM(3, 1024).config, 1),  # above KERNEL_MAX_HIDDEN
                (LSTM(3, 128, cell="peephole").config, 64),  # fused cannot: the kernel
            ):
                placement = Placement(cpu, torch.float32, batch)
                want = "kernel" if config.cell == "peephole" else "fused"
                assert select_backend(config, False, placement=placement).name == want
        standard = LSTM(3, 128).config
        assert select_backend(standard, True, placement=Placement(cpu, torch.float32, 1)) == (
            "kernel",
            "fastest backend for this configuration",
        )
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_auto_takes_the_kernel_where_the_fused_kernel_leaves_onednn(kernel, training):
    """PyTorch's fused LSTM runs projections and packed (variable-length) batches off oneDNN, on
    a path the C++ kernel beat 1.7-7.3x at every measured shape, hidden 1150 included
    (benchmarks/results/kernel_selection_fallback.md): there ``auto`` takes the kernel in both
    modes, at any batch and above KERNEL_MAX_HIDDEN too. Full-length batches without a
    projection keep the choice by batch and size."""
    from lstmkit.nn.backends import select_backend

    cpu = torch.device("cpu")
    projection = (
        "PyTorch's fused LSTM runs projections (proj_size > 0) off oneDNN, on a slower path"
    )
    packed = (
        "PyTorch's fused LSTM runs sequences of different lengths packed, off oneDNN, on a "
        "slower path"
    )
    for hidden in (128, 1024):
        for batch in (None, 1, 64):  # None: the batch unknown (lstm.backend_choice)
            config = LSTM(3, hidden, proj_size=32).config
            got = select_backend(config, training, placement=Placement(cpu, torch.float32, batch))
            assert got == ("kernel", f"fastest backend here: {projection}"), (hidden, batch)
        for batch in (16, 64):  # (not small enough for the small-batch rule)
            padded = Placement(cpu, torch.float32, batch, padded=True)
            got = select_backend(LSTM(3, hidden).config, training, placement=padded)
            assert got == ("kernel", f"fastest backend here: {packed}"), (hidden, batch)
    full = Placement(cpu, torch.float32, 64)
    assert select_backend(LSTM(3, 128).config, training, placement=full).name == (
        "kernel" if training else "fused"
    )
    assert select_backend(LSTM(3, 1024).config, training, placement=full).name == "fused"
    # the variants: fused cannot run them, so nothing changes
    peephole = LSTM(3, 128, cell="peephole", proj_size=32).config
    assert select_backend(peephole, training, placement=full).name == "kernel"


def test_the_layer_says_what_a_padded_call_runs_on(kernel):
    """``backend_choice`` does not know the call; where a call with sequences of different
    lengths runs on another backend than a full one, its reason says so."""
    padded = (
        "; a call whose sequences differ in length (lengths or mask) runs on the kernel backend: "
        "PyTorch's fused LSTM runs sequences of different lengths packed, off oneDNN, on a "
        "slower path"
    )
    assert LSTM(3, 128).eval().explain_backend() == (
        "fused backend: fastest backend for this configuration" + padded
    )
    wide = LSTM(3, 1024).train().explain_backend()
    assert wide.startswith("fused backend: the C++ kernel trains slower") and wide.endswith(padded)
    assert LSTM(3, 128).train().explain_backend() == (
        "kernel backend: fastest backend for this configuration"
    )


def test_a_padded_call_tells_auto_so(kernel, monkeypatch):
    """The layer passes the call's padding to ``select_backend``: lengths or a mask with a short
    sequence, not lengths that are all full."""
    from lstmkit.nn import recurrent

    seen = []
    choose = recurrent.select_backend

    def spy(config, training, tracing=False, placement=None):
        seen.append(placement.padded)
        return choose(config, training, tracing, placement)

    monkeypatch.setattr(recurrent, "select_backend", spy)
    lstm = LSTM(3, 8, batch_first=True).eval()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        lstm(x)
        lstm(x, lengths=torch.tensor([5, 5]))
        lstm(x, lengths=torch.tensor([5, 2]))
        lstm(x, mask=torch.tensor([[True] * 5, [True, True, True, False, False]]))
    assert seen == [False, False, True, True]


def test_auto_passes_the_kernel_over_and_says_why(kernel):
    assert LSTM(3, 4, zoneout_cell=0.1).explain_backend() == (
        "reference backend: zoneout is not supported by the C++ kernel; "
        "zoneout is not supported by the fused kernel; "
        "the compiled step is picked automatically on CUDA devices only (got cpu)"
    )
    # the fused kernel cannot run the coupled-gate cell: ours is its fast path
    assert LSTM(3, 4, cell="cifg").explain_backend() == (
        "kernel backend: fastest backend for this configuration"
    )
    recurrent = LSTM(3, 4, recurrent_dropout=0.2)
    assert recurrent.train().backend_choice.name == "reference"
    assert recurrent.eval().backend_choice.name == "fused"
    assert (
        LSTM(3, 4)
        .to(torch.float16)
        .backend_choice.reason.startswith(
            "the C++ kernel runs float32 and float64, got torch.float16"
        )
    )


@pytest.mark.parametrize("cell", ["lstm", "cifg"])  # fused runs the plain cell, not CIFG
def test_torch_func_transforms_and_forward_ad_pass_the_kernel_over(kernel, cell):
    """Under torch.func.grad, vmap or a forward-AD dual level ``auto`` takes a PyTorch path,
    with the same gradients as outside it; asking for the kernel there names the reason."""
    torch.manual_seed(7)
    lstm = _perturbed(LSTM(3, 4, cell=cell), torch.float64)
    assert lstm.backend_choice.name == "kernel"
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    params = dict(lstm.named_parameters())

    def loss(p, x):
        return (torch.func.functional_call(lstm, p, (x,))[0] ** 2).sum()

    grads = torch.func.grad(loss)(params, x)
    loss(params, x).backward()  # the kernel, outside any transform
    for name, p in params.items():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-10, rtol=1e-10, msg=name)
    per_sample = torch.func.vmap(lambda xi: lstm(xi)[0])(x)  # each (T, I) unbatched
    torch.testing.assert_close(per_sample, lstm(x)[0], atol=1e-10, rtol=1e-10)

    import torch.autograd.forward_ad as fwAD

    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        out = lstm(fwAD.make_dual(x, tangent))[0]
        jvp = fwAD.unpack_dual(out).tangent
    step = 1e-6  # the directional derivative by central differences
    with torch.no_grad():
        numeric = (lstm(x + step * tangent)[0] - lstm(x - step * tangent)[0]) / (2 * step)
    torch.testing.assert_close(jvp, numeric, atol=1e-7, rtol=1e-6)

    pinned = _with_backend(lstm, "kernel")
    with pytest.raises(ValueError, match="a torch.func transform .* cannot run through the C"):
        torch.func.grad(lambda p, x: torch.func.functional_call(pinned, p, (x,))[0].sum())(
            dict(pinned.named_parameters()), x
        )


def test_kernel_declines_gpu_tensors():
    reason = BACKENDS["kernel"].unsupported_placement(
        Placement(torch.device("cuda"), torch.float32)
    )
    assert reason == (
        "the C++ kernel runs on CPU tensors, got cuda (PyTorch's fused kernel, cuDNN, runs there)"
    )
    meta = BACKENDS["kernel"].unsupported_placement(Placement(torch.device("meta"), torch.float32))
    assert meta == "the C++ kernel runs on CPU tensors, got meta"


def test_asking_for_the_kernel_where_it_cannot_run_is_an_error(kernel):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "backend 'kernel' cannot run this configuration: "
            "zoneout is not supported by the C++ kernel"
        ),
    ):
        LSTM(3, 4, zoneout_hidden=0.1, backend="kernel").explain_backend()


# ---------------------------------------------------------------- fallback
def test_disabled_kernel_falls_back_and_says_why(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert kernel_unavailable() == "the C++ kernel is disabled (LSTMKIT_DISABLE_KERNEL=1)"
    lstm = LSTM(3, 4)
    assert lstm.explain_backend() == (
        "fused backend: the C++ kernel is disabled (LSTMKIT_DISABLE_KERNEL=1)"
    )
    out, _ = lstm(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4)
    with pytest.raises(ValueError, match="backend 'kernel' cannot run this configuration"):
        LSTM(3, 4, backend="kernel").explain_backend()


@pytest.mark.parametrize(
    "m,k,n",
    [
        (1, 32, 512),  # one row
        (5, 7, 33),  # fewer than 32 rows a thread: at::mm
        (70, 7, 33),  # rows shared out, a ragged rest of rows and columns
        (100, 32, 512),  # the input projection at (1, 100, 32, 128): rows shared out
        (100, 512, 32),  # dx there
        (512, 100, 160),  # the weight gradients there
        (70, 600, 48),  # deeper than mm_small takes: oneDNN
    ],
)
@pytest.mark.parametrize("layout", ["rows", "views", "strided-views"])
def test_products_over_all_steps_match_torch(two_threads, m, k, n, layout):
    """mm_fast (csrc/gemm.h): small float products on every thread, a share of the rows each, the
    rest on oneDNN or at::mm; operands given as transposed views too, and as transposes of
    matrices whose rows lie apart (which mm_fast copies by rows before oneDNN sees them)."""
    torch.manual_seed(m + k + n)
    a, w = torch.randn(m, k), torch.randn(n, k)  # linear_forward(a, w) = a @ w.t()
    if layout == "views":
        a = torch.randn(k, m).t()
        w = torch.randn(k, n).t()
    if layout == "strided-views":
        a = torch.randn(k, 2 * m)[:, m:].t()  # strides (1, 2m)
        w = torch.randn(k, 3 * n)[:, :n].t()
    got = two_threads.linear_forward(a, w)
    torch.testing.assert_close(got, a @ w.t(), rtol=1e-5, atol=1e-4)


def _check_weight_gradients(module, dtype, n, g, i, p) -> None:
    """Each gradient against float64 products, without and with the biases' sum (which only
    the products on the BRGEMM micro-kernel add: float, dW^T and its row of ones in 512 KiB)."""
    torch.manual_seed(0)
    da = torch.randn(n, 2 * g, dtype=dtype)[:, g:]  # a direction's slice, rows 2G apart
    operand = torch.randn(n, i + p, dtype=dtype)
    exact = da.double().t() @ operand.double()
    in_chunks = dtype == torch.float32 and (i + p + 1) * g * 4 <= 512 * 1024
    for bias in (False, True):
        dw_ih, dw_hh, db = module.weight_gradients(da, operand, i, bias)
        assert dw_hh.is_contiguous() and dw_hh.shape == (g, p)
        torch.testing.assert_close(dw_hh.double(), exact[:, i:], rtol=1e-5, atol=1e-4)
        if i == 0:
            assert dw_ih is None
        else:
            assert dw_ih.is_contiguous() and dw_ih.shape == (g, i)
            torch.testing.assert_close(dw_ih.double(), exact[:, :i], rtol=1e-5, atol=1e-4)
        if bias and in_chunks:
            assert db.shape == (g,) and db.dtype == dtype
            torch.testing.assert_close(db.double(), da.double().sum(0), rtol=1e-5, atol=1e-4)
        else:
            assert db is None


def test_weight_gradients_match_torch(two_threads):
    """Both weight gradients from one da and [x | h'] (weights.h): on the BRGEMM micro-kernel
    where dW^T fits in 512 KiB, straight from da's columns for one chunk of rows (128), in
    chunks split by rows (partial sums added up) from 128 rows a thread, else by columns; two
    products below mm_small's threshold; one merged product and copies otherwise (float64, or
    dW^T too large). Each contiguous."""
    for dtype, shape in (
        (torch.float32, (100, 512, 32, 128)),  # one chunk: (1, 100, 32, 128)
        (torch.float32, (1, 64, 8, 16)),  # one chunk, one row
        (torch.float32, (120, 200, 0, 27)),  # one chunk, no x, columns no multiple of 16
        (torch.float32, (255, 200, 5, 27)),  # by columns, two chunks (the last 127), columns
        # no multiple of 16
        (torch.float32, (300, 200, 5, 27)),  # by rows: 150 rows a thread (two chunks each)
        (torch.float32, (0, 64, 8, 16)),  # no rows: zeros
        (torch.float32, (600, 64, 8, 16)),  # by rows: 300 rows a thread, the last chunk 44
        (torch.float32, (6400, 512, 32, 128)),  # by rows: (64, 100, 32, 128)
        (torch.float32, (700, 200, 5, 27)),  # by rows, columns no multiple of 16 or of 256
        (torch.float32, (1000, 520, 0, 24)),  # by rows without x (no dW_ih)
        (torch.float32, (40, 1024, 32, 256)),  # the two small products (1.1 MiB of dW^T)
        (torch.float32, (2000, 512, 64, 256)),  # merged on oneDNN (640 KiB of dW^T)
        (torch.float64, (9, 8, 3, 2)),  # merged, copied out
        (torch.float64, (700, 64, 8, 16)),  # merged, copied out
    ):
        _check_weight_gradients(two_threads, dtype, *shape)


def test_weight_gradients_name_mismatched_operands(two_threads):
    """The raw entry checks what it is given before any product reads it."""
    da, operand = torch.randn(2000, 64), torch.randn(500, 24)
    with pytest.raises(RuntimeError, match=r"got da \[2000, 64\] and \[x \| h'\] \[500, 24\]"):
        two_threads.weight_gradients(da, operand, 8)
    with pytest.raises(RuntimeError, match="x's columns must lie in 0..24, got -1"):
        two_threads.weight_gradients(torch.randn(500, 64), operand, -1)
    with pytest.raises(RuntimeError, match="one dtype, got Float and Double"):
        two_threads.weight_gradients(torch.randn(500, 64), operand.double(), 8)


@pytest.mark.parametrize(
    "batch,steps,bidirectional",
    [(2, 50, False), (1, 200, False), (8, 40, False), (8, 40, True)],
    ids=["one-chunk", "by-columns", "by-rows", "by-rows-bidirectional"],
)
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_every_gradient_of_a_float32_layer_through_each_weight_product(
    two_threads, cell, batch, steps, bidirectional
):
    """A float32 layer's gradients, the biases' included (which the products on the BRGEMM
    micro-kernel sum as one more row, sparing the loops), through each way weights.h runs them:
    one chunk of T B = 100 rows, 200 rows split by columns, 320 split by rows; against the
    reference loop."""
    torch.manual_seed(batch * steps)
    layer = LSTM(6, 24, cell=cell, bidirectional=bidirectional, backend="reference")
    reference = _perturbed(layer, torch.float32)
    assert any("bias" in name for name, _ in reference.named_parameters())
    _assert_kernel_matches(
        reference, torch.randn(batch, steps, 6), lambda v: dict(atol=1e-4, rtol=1e-4)
    )


def test_weight_gradients_when_openmp_grants_fewer_threads_than_asked(kernel):
    """OMP_THREAD_LIMIT (or OMP_DYNAMIC) can give a parallel region fewer threads than the
    kernel asks for; each product then shares its rows or columns by the team it got. Three
    threads asked, two granted: every way of weights.h against float64 (one chunk had written
    past its share of scratch into the next thread's)."""
    env = dict(os.environ, OMP_THREAD_LIMIT="2")
    env.pop(DISABLE_ENV, None)
    script = (
        "import torch\n"
        "from lstmkit.nn.backends.kernel import load_kernel\n"
        "k = load_kernel(); torch.set_num_threads(3); k.set_cpu_count_override(3)\n"
        "torch.manual_seed(0)\n"
        "for n, g, i, p in ((100, 192, 8, 40), (300, 320, 5, 27), (1000, 192, 8, 40)):\n"
        "    da, xh = torch.randn(n, g), torch.randn(n, i + p)\n"
        "    dw_ih, dw_hh, db = k.weight_gradients(da, xh, i, True)\n"
        "    exact = da.double().t() @ xh.double()\n"
        "    err = max((dw_ih.double() - exact[:, :i]).abs().max().item(),\n"
        "              (dw_hh.double() - exact[:, i:]).abs().max().item(),\n"
        "              (db.double() - da.double().sum(0)).abs().max().item())\n"
        "    print(n, err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for line in done.stdout.strip().splitlines():
        rows, err = line.split()
        assert float(err) < 1e-3, f"{rows} rows: off by {err}"


def test_the_biases_gradient_at_the_products_size_limit(two_threads):
    """At I = P = H = 128, [x | h'] (256 columns) and dW^T fit the products' 512 KiB exactly, but
    not with the biases' row of ones: the loops sum the biases there, and one input fewer the
    products do. Both against the reference, as the layer decides (with weights.h's own test)."""
    for inputs in (128, 127):
        torch.manual_seed(inputs)
        reference = _perturbed(LSTM(inputs, 128, backend="reference"), torch.float32)
        _assert_kernel_matches(
            reference, torch.randn(1, 30, inputs), lambda v: dict(atol=1e-4, rtol=1e-4)
        )


@pytest.mark.parametrize("threads", [1, 3])
def test_weight_gradients_in_chunks_on_other_thread_counts(two_threads, threads):
    """The chunked product's threads each sum their own rows, then add up the partial sums over
    their own columns, or (fewer rows, and for one chunk) each multiply their own columns: with
    one thread there is nothing to add, with three the middle thread's columns lie between the
    others' (the machine may have fewer CPUs: the kernel is told it has more)."""
    torch.set_num_threads(threads)
    previous = two_threads.set_cpu_count_override(threads)
    try:
        # (100 rows: one chunk; 300: by rows on one thread, by columns in three chunks on three)
        shapes = ((600, 64, 8, 16), (1000, 200, 5, 27), (400, 48, 0, 24), (100, 200, 5, 27))
        for shape in (*shapes, (300, 200, 5, 27)):
            _check_weight_gradients(two_threads, torch.float32, *shape)
    finally:
        two_threads.set_cpu_count_override(previous)


@pytest.mark.parametrize("frozen", [False, True], ids=["weight-trained", "weight-frozen"])
def test_the_layer_norm_projection_on_the_kernels_products(kernel, frozen):
    """The layer-norm cell's x W_ih^T runs on the kernel's GEMM (``_Linear``): gradcheck in
    float64, from a transposed input (as batch-first input gives) and with W_ih frozen."""
    from lstmkit.nn.backends.kernel import _Linear

    torch.manual_seed(5)
    x = torch.randn(7, 40, dtype=torch.float64).t().requires_grad_()  # (40, 7), a view
    weight = torch.randn(12, 7, dtype=torch.float64, requires_grad=not frozen)
    assert torch.autograd.gradcheck(_Linear.apply, (x, weight))
    out = _Linear.apply(x, weight)
    torch.testing.assert_close(out, x @ weight.t())
    out.sum().backward()
    assert (weight.grad is None) == frozen


def test_products_of_mismatched_shapes_are_refused(kernel):
    with pytest.raises(RuntimeError, match=r"mm_small: cannot multiply \[100, 3\] by \[7, 4\]"):
        load_kernel().linear_forward(torch.randn(100, 3), torch.randn(4, 7))


@pytest.mark.skipif(
    shutil.which((os.environ.get("CXX") or "c++").split()[-1]) is None
    or os.environ.get(DISABLE_ENV, "") not in ("", "0"),
    reason="no C++ compiler on PATH (or the kernel is disabled): the fallback is tested instead",
)
def test_the_kernel_builds_where_a_compiler_is_present():
    """Every kernel test skips when the build fails; where a compiler is present, a failed
    build is a failure here, not a run of skips."""
    assert kernel_unavailable() is None


def test_a_failed_build_is_explained_by_its_cause():
    """torch's message starts with the compiler command line; the reason keeps the cause."""
    command = "/nonexistent/g++ -MMD -MF k.o.d -Werror -O3 -c /src/lstm_kernel.cpp -o k.o "
    message = (
        f"Error building extension 'lstmkit_kernel_8ce6': [1/2] {command}\n"
        f"FAILED: [code=127] k.o \n{command}\n/bin/sh: 1: /nonexistent/g++: not found\n"
        "ninja: build stopped: subcommand failed.\n"
    )
    assert build_failure(RuntimeError(message)) == (
        "Error building extension 'lstmkit_kernel_8ce6': /bin/sh: 1: /nonexistent/g++: not found"
    )
    assert build_failure(OSError("[Errno 20] Not a directory: '/x/ext'")) == (
        "[Errno 20] Not a directory: '/x/ext'"
    )
    assert build_failure(RuntimeError("")) == "RuntimeError"


def test_unbuildable_kernel_falls_back_in_a_fresh_process(tmp_path):
    """A build that fails (here: a cache directory that cannot be created) leaves auto on the
    fused backend, with the reason."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = dict(os.environ, LSTMKIT_EXT_DIR=str(blocker / "ext"))
    env.pop(DISABLE_ENV, None)
    script = (
        "import torch; from lstmkit.nn import LSTM; lstm = LSTM(3, 4); "
        "print(lstm.explain_backend()); print(tuple(lstm(torch.randn(2, 5, 3))[0].shape))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("fused backend: the C++ kernel could not be built (")
    assert lines[1] == "(2, 5, 4)"


def test_the_pair_step_says_what_it_cannot_run(kernel):
    from lstmkit.nn.backends.pairs import pair_step

    x, h, c = torch.zeros(2, 3, 16), torch.zeros(5, 2, 16), torch.zeros(5, 2, 4)
    with pytest.raises(ValueError, match="runs the lstm, peephole, cifg cells, not 'layernorm'"):
        pair_step(LSTM(3, 4, cell="layernorm").cell(0), x, h, c)
    with pytest.raises(ValueError, match=r"no projection \(proj_size > 0\)"):
        pair_step(LSTM(3, 4, proj_size=2).cell(0), x, h, c)
    with pytest.raises(ValueError, match="of one dtype, got torch.float16 on cpu, torch.float32"):
        pair_step(LSTM(3, 4).cell(0), x.half(), h.half(), c.half())
    with pytest.raises(ValueError, match="of one dtype, got torch.float32 on cpu, torch.float64"):
        pair_step(LSTM(3, 4).cell(0), x, h.double(), c)
    with pytest.raises(RuntimeError, match=r"do not match: xq \[2, 3, 16\], hh \[5, 2, 12\]"):
        pair_step(LSTM(3, 4).cell(0), x, h[..., :12], c)


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_the_pair_step_on_two_threads(kernel, cell):
    """Enough pairs for the threaded loops of csrc/pairs.h (rows split among threads, dxq and
    the peephole gradients summed per thread): against the same step in PyTorch ops."""
    from lstmkit.nn.backends.pairs import pair_step

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(11)
        lstm_cell = _perturbed(LSTM(6, 16, cell=cell), torch.float64).cell(0)
        queries = torch.randn(7, 8, 6, dtype=torch.float64, requires_grad=True)
        h = torch.randn(64, 7, 16, dtype=torch.float64, requires_grad=True)
        c = torch.randn(64, 7, 16, dtype=torch.float64, requires_grad=True)
        weights = torch.randn(64, 7, 8, 16, dtype=torch.float64)
        results = []
        for fused in (True, False):
            x_proj = lstm_cell.project_input(queries)
            h_proj = lstm_cell.project_hidden(h, lstm_cell.weight_hh)
            if fused:
                out = pair_step(lstm_cell, x_proj, h_proj, c)
            else:
                out = lstm_cell.activate(x_proj + h_proj.unsqueeze(2), c.unsqueeze(2))[0].h
            (out * weights).sum().backward()
            tensors = [queries, h, c, *lstm_cell.parameters()]
            results.append([out.detach()] + [t.grad.clone() for t in tensors])
            for t in tensors:
                t.grad = None
        for got, expected in zip(*results, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    finally:
        torch.set_num_threads(threads)
