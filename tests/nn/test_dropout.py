"""Regulariser semantics: one mask per sequence, identity (or expectation) in eval mode.

The reference computations below redraw each mask with the same seed and apply it by hand, so
a mask that changed from step to step, or was drawn at the wrong place, would not match.
"""

import pytest
import torch

from lstmkit.nn import LSTM, LockedDropout, LSTMState, WeightDrop, Zoneout
from lstmkit.nn.dropout import Dropout, dropout_mask


def test_locked_dropout_mask_is_the_same_at_every_step():
    torch.manual_seed(0)
    x = torch.ones(20, 8, 16)  # (T, B, F)
    out = LockedDropout(0.5).train()(x)
    for t in range(1, 20):
        assert torch.equal(out[t], out[0])
    assert set(out.unique().tolist()) == {0.0, 2.0}  # dropped, or scaled by 1/(1-p)
    assert not torch.equal(out[0, 0], out[0, 1])  # but each sequence has its own mask


def test_input_dropout_is_one_mask_over_time():
    torch.manual_seed(0)
    lstm = LSTM(6, 5, input_dropout=0.5, backend="reference").train()
    x = torch.randn(3, 7, 6)
    torch.manual_seed(42)
    out, _ = lstm(x)
    torch.manual_seed(42)
    mask = dropout_mask(0.5, (1, 3, 6), x).transpose(0, 1)  # (B, 1, I) drawn once
    expected, _ = lstm.eval()(x * mask)
    torch.testing.assert_close(out, expected)


def test_recurrent_dropout_is_one_mask_over_time():
    torch.manual_seed(0)
    lstm = LSTM(3, 5, recurrent_dropout=0.4).train()
    assert lstm.backend_choice.name == "reference"
    x = torch.randn(2, 6, 3)
    torch.manual_seed(7)
    out, (h_n, _) = lstm(x)
    torch.manual_seed(7)
    mask = dropout_mask(0.4, (2, 5), x)  # (B, H), the same for every step
    cell = lstm.cell(0)
    state = cell.initial_state(2, x)
    outputs = []
    for t in range(6):
        state = cell(x[:, t], LSTMState(state.h * mask, state.c))
        outputs.append(state.h)
    torch.testing.assert_close(out, torch.stack(outputs, dim=1))
    torch.testing.assert_close(h_n[0], state.h)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_weight_drop_masks_recurrent_weights_once_per_forward(backend):
    torch.manual_seed(0)
    lstm = LSTM(3, 5, weight_dropout=0.5, backend=backend).train()
    x = torch.randn(2, 6, 3)
    torch.manual_seed(3)
    out, _ = lstm(x)
    torch.manual_seed(3)
    dropped = WeightDrop(0.5).train()(lstm.cell(0).weight_hh)
    plain = LSTM(3, 5, backend=backend)
    plain.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        plain.cell(0).weight_hh.copy_(dropped)
    torch.testing.assert_close(out, plain.eval()(x)[0])


def test_zoneout_eval_uses_the_expectation():
    torch.manual_seed(0)
    zone = Zoneout(cell_p=0.3, hidden_p=0.1).eval()
    new = LSTMState(torch.randn(2, 4), torch.randn(2, 4))
    old = LSTMState(torch.randn(2, 4), torch.randn(2, 4))
    mixed = zone(new, old)
    torch.testing.assert_close(mixed.h, 0.1 * old.h + 0.9 * new.h)
    torch.testing.assert_close(mixed.c, 0.3 * old.c + 0.7 * new.c)


def test_zoneout_training_keeps_each_unit_either_old_or_new():
    torch.manual_seed(0)
    zone = Zoneout(cell_p=0.5, hidden_p=0.5).train()
    new = LSTMState(torch.zeros(1000, 8), torch.zeros(1000, 8))
    old = LSTMState(torch.ones(1000, 8), torch.ones(1000, 8))
    mixed = zone(new, old)
    assert set(mixed.h.unique().tolist()) == {0.0, 1.0}
    assert abs(mixed.c.mean().item() - 0.5) < 0.02  # kept with probability 0.5


ALL_RATES = dict(
    dropout=0.3,
    hidden_dropout=0.3,
    input_dropout=0.3,
    output_dropout=0.3,
    recurrent_dropout=0.3,
    weight_dropout=0.3,
)


def test_eval_is_deterministic_and_dropout_free():
    torch.manual_seed(0)
    regularised = LSTM(4, 6, 2, bidirectional=True, **ALL_RATES).eval()
    plain = LSTM(4, 6, 2, bidirectional=True).eval()
    plain.load_state_dict(regularised.state_dict())
    x = torch.randn(3, 5, 4)
    first, _ = regularised(x)
    second, _ = regularised(x)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, plain(x)[0])


def test_training_mode_applies_dropout():
    torch.manual_seed(0)
    lstm = LSTM(4, 6, 2, **ALL_RATES).train()
    x = torch.randn(3, 5, 4)
    assert not torch.allclose(lstm(x)[0], lstm(x)[0])


def test_regulariser_rates_are_validated():
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\), got 1.5"):
        LockedDropout(1.5)
    with pytest.raises(ValueError, match=r"zoneout_cell must be a number in \[0, 1\), got -0.1"):
        LSTM(3, 4, zoneout_cell=-0.1)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_drops_each_unit_with_probability_p(p):
    torch.manual_seed(0)
    mask = dropout_mask(p, (400, 500), torch.empty(0))
    keep = 1.0 - p
    torch.testing.assert_close(mask.unique(), torch.tensor([0.0, 1.0 / keep]))
    dropped = (mask == 0).double().mean().item()
    assert abs(dropped - p) < 4 * (p * keep / mask.numel()) ** 0.5  # within 4 standard errors
    assert mask.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted: unbiased in expectation


def test_dropout_module_is_elementwise_and_scales_its_gradient():
    torch.manual_seed(1)
    drop = Dropout(0.3).train()
    x = torch.randn(64, 32, requires_grad=True)
    out = drop(x)
    kept = out != 0
    assert 0.6 < kept.double().mean().item() < 0.8
    assert not torch.equal(kept[0], kept[1])  # a mask per element, not per row
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(x.dtype) / 0.7)
    assert drop.eval()(x) is x
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\), got 1.0"):
        Dropout(1.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_masks_keep_their_rate(dtype):
    """The draw is compared with 1 - p in float32: in bfloat16, 0.999 would round to 1.0."""
    torch.manual_seed(2)
    for p in (0.001, 0.01):
        mask = dropout_mask(p, (1000, 1000), torch.empty(0, dtype=dtype))
        assert mask.dtype == dtype
        dropped = (mask == 0).double().mean().item()
        assert abs(dropped - p) < 4 * (p * (1 - p) / mask.numel()) ** 0.5, (p, dropped)
