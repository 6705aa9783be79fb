"""Bad input gets a ValueError that names what was received and what was expected."""

import pytest
import torch

from lstmkit.nn import LSTM, LSTMConfig


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_size=3, hidden_size=4.5), "hidden_size must be a positive integer, got 4.5"),
        (dict(input_size="3", hidden_size=4), "input_size must be a positive integer, got '3'"),
        (dict(input_size=3, hidden_size=0), "hidden_size must be a positive integer, got 0"),
        (
            dict(input_size=3, hidden_size=4, num_layers=1.0),
            "num_layers must be a positive integer, got 1.0",
        ),
        (
            dict(input_size=3, hidden_size=4, proj_size=4),
            r"proj_size must be smaller than hidden_size \(4\), got 4",
        ),
        (
            dict(input_size=3, hidden_size=4, cell="gru"),
            "cell must be one of 'lstm', 'peephole', 'layernorm', 'cifg'; got 'gru'",
        ),
        (
            dict(input_size=3, hidden_size=4, backend="cuda"),
            "backend must be one of 'auto', 'reference', 'fused', 'kernel', 'graphed', "
            "'compiled'; got 'cuda'",
        ),
        (
            dict(input_size=3, hidden_size=4, dropout=1.0),
            r"dropout must be a number in \[0, 1\), got 1.0",
        ),
        (
            dict(input_size=3, hidden_size=4, bidirectional="yes"),
            "bidirectional must be true or false, got 'yes'",
        ),
        (
            dict(input_size=3, hidden_size=4, chrono_init=1),
            "chrono_init must be 0 .off. or at least 2 steps, got 1",
        ),
        (
            dict(input_size=3, hidden_size=4, chrono_init=10, bias=False),
            "chrono_init sets the gate biases, so it needs bias=True",
        ),
    ],
)
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LSTM(**kwargs)


def test_config_round_trips_and_rejects_unknown_fields():
    config = LSTMConfig(3, 4, num_layers=2, cell="peephole", zoneout_cell=0.1)
    assert LSTMConfig.from_dict(config.to_dict()) == config
    assert LSTM.from_config(config).config == config
    with pytest.raises(ValueError, match=r"unknown LSTMConfig field\(s\) \['hiden_size'\]"):
        LSTMConfig.from_dict({**config.to_dict(), "hiden_size": 3})


@pytest.fixture
def lstm():
    return LSTM(3, 4, 2)


def test_wrong_rank(lstm):
    with pytest.raises(
        ValueError,
        match=r"\(batch, seq, features\).*got a 4-D tensor of shape "
        r"\(2, 5, 3, 1\)",
    ):
        lstm(torch.randn(2, 5, 3, 1))


def test_wrong_feature_size(lstm):
    with pytest.raises(
        ValueError,
        match=r"input_size=3 features per step, got input of shape "
        r"\(2, 5, 7\) with 7",
    ):
        lstm(torch.randn(2, 5, 7))


def test_integer_input_is_rejected(lstm):
    with pytest.raises(ValueError, match="floating-point tensor, got dtype torch.int64"):
        lstm(torch.ones(2, 5, 3, dtype=torch.long))


def test_lengths_longer_than_sequence(lstm):
    with pytest.raises(ValueError, match="between 1 and the sequence length 5, got max 6"):
        lstm(torch.randn(2, 5, 3), lengths=torch.tensor([6, 2]))


def test_lengths_below_one(lstm):
    with pytest.raises(ValueError, match="between 1 and the sequence length 5, got min 0"):
        lstm(torch.randn(2, 5, 3), lengths=torch.tensor([0, 2]))


def test_lengths_of_wrong_size(lstm):
    with pytest.raises(ValueError, match=r"expected shape \(2,\), got shape \(3,\)"):
        lstm(torch.randn(2, 5, 3), lengths=torch.tensor([1, 2, 3]))


def test_float_lengths(lstm):
    with pytest.raises(ValueError, match="lengths must have an integer dtype, got torch.float32"):
        lstm(torch.randn(2, 5, 3), lengths=torch.tensor([1.0, 2.0]))


def test_lengths_and_mask_together(lstm):
    with pytest.raises(ValueError, match="give either lengths or mask, not both"):
        lstm(torch.randn(2, 5, 3), lengths=torch.tensor([1, 2]), mask=torch.ones(2, 5).bool())


def test_mask_with_gaps(lstm):
    mask = torch.tensor([[True, False, True, False, False], [True] * 5])
    with pytest.raises(ValueError, match="row 0"):
        lstm(torch.randn(2, 5, 3), mask=mask)


def test_mask_row_without_a_valid_step(lstm):
    mask = torch.tensor([[True] * 5, [False] * 5, [True, True] + [False] * 3])
    with pytest.raises(ValueError, match=r"at least one valid step, but mask row\(s\) \[1\] are"):
        lstm(torch.randn(3, 5, 3), mask=mask)


def test_input_and_state_must_match_the_weights(lstm):
    with pytest.raises(
        ValueError,
        match="LSTM input is torch.float64 on cpu but the weights are torch.float32 on cpu",
    ):
        lstm(torch.randn(2, 5, 3, dtype=torch.float64))
    x = torch.randn(2, 5, 3)
    h0 = torch.zeros(2, 2, 4)
    with pytest.raises(
        ValueError, match="c_0 must be torch.float32 on cpu like the input, got torch.float64"
    ):
        lstm(x, (h0, torch.zeros(2, 2, 4, dtype=torch.float64)))
    assert lstm.double()(x.double(), (h0.double(), h0.double()))[0].dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):  # where mixed dtypes are the point
        out, _ = lstm.float()(x.bfloat16())
    assert out.shape == (2, 5, 4)


def test_mask_of_wrong_shape(lstm):
    with pytest.raises(
        ValueError,
        match=r"mask must be a \(batch, seq\) = \(2, 5\) tensor, got "
        r"\(2, 4\)",
    ):
        lstm(torch.randn(2, 5, 3), mask=torch.ones(2, 4).bool())


def test_mismatched_state_shapes(lstm):
    x = torch.randn(2, 5, 3)
    with pytest.raises(
        ValueError,
        match=r"h_0 must have shape \(num_layers\*num_directions, "
        r"batch, proj_size or hidden_size\) = \(2, 2, 4\), got "
        r"\(1, 2, 4\)",
    ):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"c_0 must have shape .* = \(2, 2, 4\), got \(2, 3, 4\)"):
        lstm(x, (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match=r"state must be a tuple \(h_0, c_0\), got Tensor"):
        lstm(x, torch.zeros(2, 2, 4))


def test_fused_backend_refuses_what_it_cannot_run():
    with pytest.raises(
        ValueError,
        match="backend 'fused' cannot run this configuration: "
        "peephole connections are not supported",
    ):
        LSTM(3, 4, cell="peephole", backend="fused")(torch.randn(1, 2, 3))


def test_cell_input_shape():
    with pytest.raises(ValueError, match=r"LSTMCell expects x of shape \(batch, 3\), got \(3,\)"):
        LSTM(3, 4).cell(0)(torch.randn(3))
