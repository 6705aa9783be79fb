"""lstmkit.nn.LSTM against torch.nn.LSTM with copied weights, on every backend."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstmkit.nn import LSTM
from lstmkit.nn.backends.kernel import kernel_unavailable

TOL = dict(atol=1e-5, rtol=1e-5)
CASES = list(itertools.product([1, 2, 3], [False, True], [0, 3], [True, False], [False, True]))


def _torch_run(ref, x, state, lengths, batch_first):
    if lengths is None:
        return ref(x, state)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, final = ref(packed, state)
    out, _ = pad_packed_sequence(
        out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0]
    )
    return out, final


def _loss(out, h, c, weights):
    return (out * weights[0]).sum() + (h * weights[1]).sum() + (c * weights[2]).sum()


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("layers,bidirectional,proj,batch_first,variable", CASES)
def test_matches_torch_lstm(backend, layers, bidirectional, proj, batch_first, variable):
    torch.manual_seed(layers * 100 + proj)
    batch, steps, inputs, hidden = 4, 6, 5, 7
    ref = torch.nn.LSTM(
        inputs, hidden, layers, batch_first=batch_first, bidirectional=bidirectional, proj_size=proj
    )
    ours = LSTM.from_torch(ref, backend=backend)
    assert ours.backend_choice.name == backend

    x = torch.randn((batch, steps, inputs) if batch_first else (steps, batch, inputs))
    lengths = torch.tensor([6, 2, 5, 1]) if variable else None
    d = 2 if bidirectional else 1
    h0 = torch.randn(layers * d, batch, proj or hidden)
    c0 = torch.randn(layers * d, batch, hidden)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    h0_ref, h0_ours = h0.clone().requires_grad_(), h0.clone().requires_grad_()

    out_ref, (h_ref, c_ref) = _torch_run(ref, x_ref, (h0_ref, c0), lengths, batch_first)
    out, (h, c) = ours(x_ours, (h0_ours, c0), lengths=lengths)
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(c, c_ref, **TOL)

    weights = [torch.randn_like(t) for t in (out, h, c)]
    _loss(out_ref, h_ref, c_ref, weights).backward()
    _loss(out, h, c, weights).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **TOL)
    torch.testing.assert_close(h0_ours.grad, h0_ref.grad, **TOL)
    theirs = dict(ref.named_parameters())
    for layer in range(layers):
        for direction in range(d):
            cell = ours.cell(layer, direction)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name, param in cell.named_parameters():
                torch.testing.assert_close(param.grad, theirs[name + suffix].grad, **TOL)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_padded_outputs_are_zero_and_padding_never_leaks(backend):
    torch.manual_seed(0)
    lstm = LSTM(3, 5, 2, bidirectional=True, backend=backend)
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 3])
    out, (h, c) = lstm(x, lengths=lengths)
    assert torch.all(out[1, 3:] == 0)
    garbage = x.clone()
    garbage[1, 3:] = 1e3  # whatever sits in the padding must not change anything
    out2, (h2, c2) = lstm(garbage, lengths=lengths)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(c2, c)
    # the short sequence on its own gives the same result as in the padded batch
    alone, (h_alone, _) = lstm(x[1:, :3])
    torch.testing.assert_close(out[1:, :3], alone)
    torch.testing.assert_close(h[:, 1:], h_alone)


def test_mask_is_equivalent_to_lengths():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, bidirectional=True)
    x = torch.randn(3, 5, 3)
    lengths = torch.tensor([5, 1, 3])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    by_len = lstm(x, lengths=lengths)
    by_mask = lstm(x, mask=mask)
    torch.testing.assert_close(by_mask[0], by_len[0])
    torch.testing.assert_close(by_mask[1][0], by_len[1][0])


def test_unbatched_input_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    ours = LSTM.from_torch(ref)
    x = torch.randn(5, 3)
    h0, c0 = torch.randn(4, 4), torch.randn(4, 4)
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    out, (h, c) = ours(x, (h0, c0))
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(c, c_ref, **TOL)


def test_single_cell_matches_torch_lstm_cell():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(3, 4)
    ours = LSTM(3, 4).cell(0)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours, name).copy_(getattr(ref, name))
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    h_ref, c_ref = ref(x, (h, c))
    state = ours(x, (h, c))
    torch.testing.assert_close(state.h, h_ref, **TOL)
    torch.testing.assert_close(state.c, c_ref, **TOL)


@pytest.mark.parametrize("backend", ["reference", "fused", "kernel"])
def test_whatever_the_padding_holds_it_never_reaches_a_gradient(backend):
    """NaN or huge values past a sequence's length change nothing, gradients included (0 * NaN
    would otherwise be NaN in dW_ih, and NaN gate derivatives would leak into valid steps)."""
    if backend == "kernel" and kernel_unavailable() is not None:
        pytest.skip(kernel_unavailable())
    torch.manual_seed(8)
    lstm = LSTM(4, 6, 2, bidirectional=True, batch_first=True, backend=backend).double()
    lengths = torch.tensor([5, 2, 3])
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    results = []
    for fill in (0.0, float("nan"), 1e30):
        padded = x.clone()
        for row, n in enumerate(lengths.tolist()):
            padded[row, n:] = fill
        padded.requires_grad_()
        lstm.zero_grad()
        out, (h, c) = lstm(padded, lengths=lengths)
        ((out * out).sum() + h.sum() + c.sum()).backward()
        grads = [padded.grad] + [p.grad for p in lstm.parameters()]
        assert all(torch.isfinite(g).all() for g in grads), fill
        results.append([out.detach(), *grads])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
