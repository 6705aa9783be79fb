"""The graphed backend (the compiled loop recorded as CUDA graphs and replayed).

The choice ``auto`` makes and the reasons it gives; that the function a graph records (the
layer as a function of its flattened inputs: masked W_hh, recurrent masks, padding) computes
what the layer computes. Then the backend itself, against the reference backend (outputs,
final states, every gradient) across the first call (compiled step), the second (recording)
and later ones (replays), with training masks, and the calls that must not replay: on a CUDA
device with real graphs in float32, and on the CPU in float64 with ``record_eagerly``, a
stand-in that gives a recording a graph's semantics (replays write the same static tensors;
a backward replay reads the activations of the latest forward replay).
"""

import gc
import weakref

import pytest
import torch

from lstmkit.nn import LSTM
from lstmkit.nn.backends import Placement, compiled, graphed, select_backend
from lstmkit.nn.backends.base import LayerRun
from lstmkit.nn.backends.reference import run_layer

from .conftest import outputs_and_grads, perturbed_twins

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = Placement(torch.device("cuda"), torch.float32)
CPU = Placement(torch.device("cpu"), torch.float32)


pytestmark = pytest.mark.usefixtures("exact_float32")


# ------------------------------------------------------------------------------ choice
def test_auto_leaves_graphs_to_be_asked_for_by_name(monkeypatch):
    """Until a GPU session has checked the graphed backend in full, ``auto`` keeps the compiled
    step on CUDA; asked for by name, it runs what it supports."""
    monkeypatch.setattr(compiled, "_has_triton", lambda: True)
    peephole = LSTM(3, 4, cell="peephole").config
    assert select_backend(peephole, training=True, placement=CUDA).name == "compiled"
    named = peephole.replace(backend="graphed")
    assert select_backend(named, training=True, placement=CUDA).name == "graphed"
    assert select_backend(named, training=False, placement=CUDA).name == "graphed"


def test_zoneout_in_training_is_refused_and_says_why():
    config = LSTM(3, 4, zoneout_cell=0.1, backend="graphed").config
    with pytest.raises(ValueError, match="zoneout in training draws its masks inside each step"):
        select_backend(config, training=True, placement=CUDA)
    # in eval zoneout mixes by its rate, the same every call: a graph can hold it
    assert select_backend(config, training=False, placement=CUDA).name == "graphed"


def test_graphed_by_name_is_refused_off_cuda_and_under_transforms():
    config = LSTM(3, 4, cell="peephole", backend="graphed").config
    off_cuda = r"CUDA graphs are recorded on CUDA devices only \(got cpu\)"
    with pytest.raises(ValueError, match=off_cuda):
        select_backend(config, training=True, placement=CPU)
    with pytest.raises(ValueError, match="gate tracing needs the reference backend"):
        select_backend(config, training=True, tracing=True)
    reason = []
    torch.func.vmap(
        lambda x: reason.append(graphed.GraphedBackend().unsupported(config, True, False)) or x
    )(torch.zeros(2))
    assert reason[0].startswith("a torch.func transform (grad, vmap, jvp) needs the reference")


# ------------------------------------------------------------------------------ what is recorded
@pytest.mark.parametrize("lengths", [None, torch.tensor([5, 2, 4])])
def test_recorded_function_is_the_layer(lengths):
    """``_body`` rebuilds the layer from the flattened inputs a recording copies in: the
    DropConnect-masked W_hh of one direction (the other uses its parameter in place), the
    recurrent masks and the padding. It must compute what the layer run computes."""
    torch.manual_seed(0)
    lstm = LSTM(3, 4, bidirectional=True, cell="peephole", backend="reference").double()
    cells = list(lstm.cells)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    masked_whh = cells[1].weight_hh * (torch.rand_like(cells[1].weight_hh) > 0.3)
    run = LayerRun(
        cells=cells,
        x=x,
        lengths=lengths,
        h0=torch.randn(2, 3, 4, dtype=torch.float64),
        c0=torch.randn(2, 3, 4, dtype=torch.float64),
        weights_hh=[cells[0].weight_hh, masked_whh],
        recurrent_masks=[None, (torch.rand(3, 4) > 0.5).double() / 0.5],
        zoneout=None,
    )
    inputs, shape = graphed._inputs(run)
    assert shape == (False, True, False, True, lengths is not None)
    assert len(inputs) == 3 + 1 + 1 + (2 if lengths is not None else 0)
    got = graphed._body(run, shape)(*inputs)
    want = run_layer(run, advance=graphed._advance())  # the same step (compiled with Triton)
    for name, g, w in zip(("output", "h_n", "c_n"), got, want, strict=True):
        torch.testing.assert_close(g, w, atol=0, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


# ------------------------------------------------------------------------------ the backend
class _EagerGraph:
    def __init__(self, work) -> None:
        self.replay = work


def record_eagerly(body, static, wrt):
    """``graphed._record_cuda`` on the CPU: the same returns, with replays that re-run ``body``
    on the static inputs into the same static outputs and gradients."""
    grad = bool(wrt)
    latest = {}
    with torch.set_grad_enabled(grad):
        first = tuple(body(*static))
    outputs = tuple(torch.empty_like(o, requires_grad=False) for o in first)

    def forward():
        with torch.set_grad_enabled(grad):
            latest["out"] = tuple(body(*static))
        for s, o in zip(outputs, latest["out"], strict=True):
            s.copy_(o.detach())

    if not grad:
        return _EagerGraph(forward), outputs, None, [], []
    grad_outputs = [torch.empty_like(o) for o in outputs]
    ones = [torch.ones_like(o) for o in first]
    grads = [
        None if g is None else torch.empty_like(g)
        for g in torch.autograd.grad(first, wrt, ones, allow_unused=True)
    ]

    def backward():
        got = torch.autograd.grad(
            latest["out"], wrt, grad_outputs, allow_unused=True, retain_graph=True
        )
        for s, g in zip(grads, got, strict=True):
            if s is not None:
                s.copy_(g)

    return _EagerGraph(forward), outputs, _EagerGraph(backward), grad_outputs, grads


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def device(request, monkeypatch):
    """cuda: real graphs; cpu: ``record_eagerly``, and the backend allowed off CUDA."""
    if request.param == "cpu":
        monkeypatch.setattr(graphed, "RECORD", record_eagerly)
        # the reference step: the compiled one's backward refuses the second (retained) pass
        # that record_eagerly runs for a repeated backward replay
        monkeypatch.setattr(compiled, "_has_triton", lambda: False)
        monkeypatch.setattr(graphed.GraphedBackend, "unsupported_placement", lambda self, p: None)
    return request.param


def _dtype(device: str) -> torch.dtype:
    return torch.float32 if device == "cuda" else torch.float64


def _tol(device: str) -> dict:
    return dict(atol=2e-5, rtol=1e-4) if device == "cuda" else dict(atol=1e-12, rtol=1e-12)


def _twins(device: str, **options) -> tuple[LSTM, LSTM]:
    return perturbed_twins("graphed", device, _dtype(device), **options)


def _randn(device: str, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=_dtype(device))


def _run(lstm: LSTM, x: torch.Tensor, lengths, seed: int = 0) -> dict[str, torch.Tensor]:
    return outputs_and_grads(lstm, x, lengths, seed)


def _assert_same(got: dict, want: dict, tol: dict, call: int) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(
            got[name], value, **tol, msg=lambda m, n=name: f"call {call}, {n}: {m}"
        )


def _recordings(lstm: LSTM) -> int:
    """Recordings kept by the layers of ``lstm``."""
    count = 0
    for cell in lstm.cells:
        layer = graphed._LAYERS.get(cell)
        if layer is not None:
            count += sum(isinstance(v, graphed._Recording) for v in layer.seen.values())
    return count


@pytest.mark.parametrize(
    "cell,options",
    [
        ("peephole", {}),
        ("layernorm", {}),
        ("cifg", {"proj_size": 3}),
        ("lstm", {"recurrent_dropout": 0.3, "weight_dropout": 0.2}),
        ("peephole", {"zoneout_cell": 0.2, "zoneout_hidden": 0.1}),  # eval: a fixed mix
    ],
)
def test_graphed_matches_reference_over_calls(device, cell, options):
    """Call 1 runs the compiled step, call 2 records, calls 3-4 replay; each call's input is
    new, so a replay that failed to copy its inputs in would give the previous answer."""
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell=cell, **options)
    if options.get("zoneout_cell"):
        reference.eval(), graphed_lstm.eval()
    assert graphed_lstm.backend_choice.name == "graphed"
    for call in range(4):
        x = _randn(device, 4, 7, 5)
        got, want = _run(graphed_lstm, x, None, call), _run(reference, x, None, call)
        _assert_same(got, want, _tol(device), call)
    assert _recordings(graphed_lstm) == 2  # one per layer, replayed by calls 3 and 4


@pytest.mark.parametrize("cell", ["peephole", "layernorm"])
def test_padded_batches_are_recorded(device, cell):
    """Padding enters a recording as tensors built on the device before each call (valid
    steps, the backward direction's within-length reversal): new lengths of the same shape
    replay the same recording, with gradients and without."""
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell=cell)
    batches = ([7, 3, 5, 1], [2, 7, 7, 4], [1, 1, 6, 7], [7, 7, 7, 6], [3, 3, 3, 3])
    for call, lengths in enumerate(batches):  # (all lengths 7 would be no padding at all)
        lengths = torch.tensor(lengths)
        x = _randn(device, 4, 7, 5)
        got, want = _run(graphed_lstm, x, lengths, call), _run(reference, x, lengths, call)
        _assert_same(got, want, _tol(device), call)
        with torch.no_grad():
            torch.testing.assert_close(
                graphed_lstm(x, lengths=lengths), reference(x, lengths=lengths), **_tol(device)
            )
    # per layer, with and without gradients; the first call of each ran unrecorded, and each
    # later one replayed (a training call replays forward and backward: two generations)
    assert _recordings(graphed_lstm) == 4
    layer = graphed._LAYERS[graphed_lstm.cells[0]]
    generations = sorted(v.generation for v in layer.seen.values())
    assert generations == [len(batches) - 1, 2 * (len(batches) - 1)]


def test_recording_while_an_earlier_call_is_still_referenced(device):
    """A training loop usually still holds the previous call's loss or output when it makes
    the next call, and with it the graph that made the parameters' gradient accumulators on
    the default stream. Recording a backward pass against those parameters failed on an H100
    ("operation would make the legacy stream depend on a capturing blocking stream"); the
    recording now differentiates with respect to aliases of them (``_on_aliases``)."""
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell="peephole")
    kept = []
    for call in range(4):
        x = _randn(device, 3, 4, 5)
        for lstm in (graphed_lstm, reference):
            lstm.zero_grad(set_to_none=True)
            out, _ = lstm(x)
            (out * out).sum().backward()
            kept.append(out)  # its graph, and the accumulators it made, stay alive
        for got, want in zip(graphed_lstm.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(got.grad, want.grad, **_tol(device), msg=f"call {call}")
    assert _recordings(graphed_lstm) == 2


def test_inference_replays_and_outputs_are_copies(device):
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell="layernorm")
    reference.eval(), graphed_lstm.eval()
    held = []
    with torch.no_grad():
        for _ in range(4):
            x = _randn(device, 3, 6, 5)
            got, want = graphed_lstm(x), reference(x)
            torch.testing.assert_close(got, want, **_tol(device))  # output, (h_n, c_n)
            held.append((got, want))
    assert _recordings(graphed_lstm) == 2
    for got, want in held:  # a later replay did not overwrite what an earlier call returned
        torch.testing.assert_close(got, want, **_tol(device))


def test_a_second_call_before_backward_does_not_replay_over_the_first(device):
    """Two calls of one shape, then both backward passes (as a seq2seq decoder or a siamese
    model does): the second call must not overwrite the activations the first one saved."""
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell="peephole")
    x1, x2 = _randn(device, 2, 4, 7, 5)
    for _ in range(graphed.CAPTURE_AT):  # record the shape first
        graphed_lstm(x1)[0].sum().backward()
    assert _recordings(graphed_lstm) == 2
    grads = {}
    for name, lstm in (("graphed", graphed_lstm), ("reference", reference)):
        lstm.zero_grad(set_to_none=True)
        out1, _ = lstm(x1)
        out2, _ = lstm(x2)
        (out1.square().sum() + out2.sum()).backward()
        grads[name] = [p.grad.clone() for p in lstm.parameters()]
    for got, want in zip(grads["graphed"], grads["reference"], strict=True):
        torch.testing.assert_close(got, want, **_tol(device))


def test_a_backward_over_used_up_activations_raises(device):
    """A recording keeps one call's activations, and its backward pass uses them up (the
    recorded kernels reuse their memory): a second backward pass through the same call, or one
    after a later call of the same shape replayed, must raise, not return wrong gradients."""
    torch.manual_seed(0)
    _, graphed_lstm = _twins(device, cell="cifg")
    x = _randn(device, 2, 4, 5)
    for _ in range(graphed.CAPTURE_AT):
        graphed_lstm(x)[0].sum().backward()
    out, _ = graphed_lstm(x)  # a replay
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="a second backward pass through the same call"):
        out.square().sum().backward()
    out, _ = graphed_lstm(x)
    loss = out.sum()
    graphed_lstm(x)[0].sum().backward()  # out's backward is pending: this one runs unrecorded
    loss.backward()  # still fine
    assert _recordings(graphed_lstm) == 2


def test_replays_follow_weight_updates_and_keep_few_shapes(device):
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell="peephole")
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (reference, graphed_lstm)]
    for step in range(4):
        x = _randn(device, 3, 5, 5)
        _assert_same(_run(graphed_lstm, x, None), _run(reference, x, None), _tol(device), step)
        for opt in opts:
            opt.step()  # in place: the recording reads the new values
    for batch in range(1, 2 + graphed.MAX_GRAPHS):  # more shapes than a layer keeps
        for _ in range(graphed.CAPTURE_AT):
            graphed_lstm(_randn(device, batch, 5, 5))[0].sum().backward()
    assert _recordings(graphed_lstm) == 2 * graphed.MAX_GRAPHS


def test_new_parameter_storage_is_recorded_anew(device):
    """A recording reads the parameters' memory: after ``p.data = ...`` (or loading a state dict
    with ``assign=True``) it must not replay over the old storage."""
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell="layernorm")
    x = _randn(device, 2, 4, 5)
    for call in range(3):
        _assert_same(_run(graphed_lstm, x, None), _run(reference, x, None), _tol(device), call)
    for lstm in (reference, graphed_lstm):
        for p in lstm.parameters():
            p.data = p.data * 0.5  # new storage, new values
    for call in range(3, 6):
        _assert_same(_run(graphed_lstm, x, None), _run(reference, x, None), _tol(device), call)


def test_training_and_inference_calls_of_one_shape_keep_their_own_recordings(device):
    torch.manual_seed(0)
    reference, graphed_lstm = _twins(device, cell="peephole")
    x = _randn(device, 2, 4, 5)  # the same tensor, not needing a gradient, in both modes
    for _ in range(3):
        grads = []
        for lstm in (graphed_lstm, reference):
            lstm.zero_grad(set_to_none=True)
            lstm(x)[0].square().sum().backward()
            grads.append([p.grad for p in lstm.parameters()])
        for got, want in zip(*grads, strict=True):
            torch.testing.assert_close(got, want, **_tol(device))
        with torch.no_grad():
            torch.testing.assert_close(graphed_lstm(x), reference(x), **_tol(device))
    assert _recordings(graphed_lstm) == 4  # per layer: one with gradients, one without


def test_returned_gradients_are_copies(device):
    """``torch.autograd.grad`` hands back exactly what the backward returns: a view of the
    recording's buffers would change under the caller at the next replay."""
    torch.manual_seed(0)
    _, graphed_lstm = _twins(device, cell="peephole")
    params = list(graphed_lstm.parameters())
    for _ in range(graphed.CAPTURE_AT):
        graphed_lstm(_randn(device, 2, 4, 5))[0].sum().backward()
    first = torch.autograd.grad(graphed_lstm(_randn(device, 2, 4, 5))[0].sum(), params)
    kept = [g.clone() for g in first]
    torch.autograd.grad(graphed_lstm(_randn(device, 2, 4, 5))[0].sum(), params)  # a replay
    for g, k in zip(first, kept, strict=True):
        torch.testing.assert_close(g, k, atol=0, rtol=0)


def test_a_failed_recording_raises_and_names_the_way_out(device, monkeypatch):
    def fail(*args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphed, "RECORD", fail)
    _, graphed_lstm = _twins(device, cell="peephole")
    x = _randn(device, 2, 3, 5)
    graphed_lstm(x)[0].sum().backward()  # the first call of a shape is never recorded
    with pytest.raises(
        RuntimeError,
        match=r"(?s)recording an LSTM layer as a CUDA graph failed "
        r"\(operation not permitted.*backend='compiled'",
    ):
        graphed_lstm(x)


@NEEDS_CUDA
def test_recordings_do_not_keep_the_layer_alive():
    _, graphed_lstm = _twins("cuda", cell="peephole")
    for _ in range(graphed.CAPTURE_AT + 1):
        graphed_lstm(_randn("cuda", 2, 3, 5))[0].sum().backward()
    assert _recordings(graphed_lstm) == 2
    cells = [weakref.ref(c) for c in graphed_lstm.cells]
    del graphed_lstm
    gc.collect()
    assert all(c() is None for c in cells)
