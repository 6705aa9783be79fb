"""One step of each cell with constant weights, against values computed by hand.

The expected numbers come from the cell equations evaluated in scalar arithmetic (see each
test's comment), not from lstmkit.
"""

import torch

from lstmkit.nn import CIFGLSTMCell, LayerNormLSTMCell, LSTMCell, LSTMState, PeepholeLSTMCell


def _constant(cell, value):
    with torch.no_grad():
        for name, p in cell.named_parameters():
            if not name.startswith("norm_"):
                p.fill_(value)
    return cell


def test_standard_cell_golden():
    # I=1, H=1, all weights 0.5, biases 0; x=1, h0=0.2, c0=1:
    # z = 0.5*1 + 0.5*0.2 = 0.6 for every gate; i=f=o=σ(0.6)=0.645656, g=tanh(0.6)=0.537050
    # c = 0.645656*1 + 0.645656*0.537050 = 0.992406; h = 0.645656*tanh(0.992406) = 0.489657
    cell = _constant(LSTMCell(1, 1), 0.5)
    with torch.no_grad():
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    state, gates = cell.step(
        cell.project_input(torch.ones(1, 1)), LSTMState(torch.full((1, 1), 0.2), torch.ones(1, 1))
    )
    torch.testing.assert_close(gates.input, torch.tensor([[0.6456563062]]))
    torch.testing.assert_close(gates.candidate, torch.tensor([[0.5370495670]]))
    torch.testing.assert_close(state.c, torch.tensor([[0.9924057459]]))
    torch.testing.assert_close(state.h, torch.tensor([[0.4896568792]]))


def test_peephole_cell_golden():
    # I=1, H=1, every weight and peephole 0.5, biases 0; x=1, h0=0.2, c0=1.
    # z = 0.6; i = f = σ(0.6 + 0.5*c0) = σ(1.1) = 0.750260; g = tanh(0.6) = 0.537050
    # c = 0.750260*1 + 0.750260*0.537050 = 1.153187
    # o = σ(0.6 + 0.5*c) = σ(1.176593) = 0.764335 (the output peephole sees the new cell)
    # h = o * tanh(c) = 0.625843
    cell = _constant(PeepholeLSTMCell(1, 1), 0.5)
    with torch.no_grad():
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    state, gates = cell.step(
        cell.project_input(torch.ones(1, 1)), LSTMState(torch.full((1, 1), 0.2), torch.ones(1, 1))
    )
    torch.testing.assert_close(gates.input, torch.tensor([[0.7502601056]]))
    torch.testing.assert_close(gates.forget, torch.tensor([[0.7502601056]]))
    torch.testing.assert_close(gates.candidate, torch.tensor([[0.5370495670]]))
    torch.testing.assert_close(gates.output, torch.tensor([[0.7643347506]]))
    torch.testing.assert_close(state.c, torch.tensor([[1.1531869704]]))
    torch.testing.assert_close(state.h, torch.tensor([[0.6258427237]]))


def test_layer_norm_cell_golden():
    # I=1, H=2. W_ih is constant within each gate block: 0.1 (i), 0.2 (f), 0.3 (g), 0.4 (o);
    # W_hh = 0.5 everywhere, biases 0, norms with gain 1 and shift 0, eps 1e-5.
    # x=1: W_x x = [.1 .1 .2 .2 .3 .3 .4 .4], mean .25, variance .0125
    #   LN = (v - .25)/sqrt(.0125 + 1e-5) = [-1.3411, -0.4470, 0.4470, 1.3411] per block
    # h0 = [0.2, 0.2]: W_h h is constant (0.2), so its LN is 0.
    # i = σ(-1.3411) = 0.207328, f = σ(-0.4470) = 0.390066, g = tanh(0.4470) = 0.419459,
    # o = σ(1.3411) = 0.792672
    # c0 = [0.5, -0.5]: c = f*c0 + i*g = [0.281999, -0.108067]
    # LN(c) = [+0.99987, -0.99987] (two units); h = o * tanh(LN(c)) = [0.603650, -0.603650]
    cell = LayerNormLSTMCell(1, 2)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4])[:, None])
        cell.weight_hh.fill_(0.5)
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    state, gates = cell.step(
        cell.project_input(torch.ones(1, 1)),
        LSTMState(torch.full((1, 2), 0.2), torch.tensor([[0.5, -0.5]])),
    )
    torch.testing.assert_close(gates.input, torch.full((1, 2), 0.2073284905))
    torch.testing.assert_close(gates.forget, torch.full((1, 2), 0.3900659956))
    torch.testing.assert_close(gates.candidate, torch.full((1, 2), 0.4194585756))
    torch.testing.assert_close(gates.output, torch.full((1, 2), 0.7926715095))
    torch.testing.assert_close(state.c, torch.tensor([[0.2819987111, -0.1080672845]]))
    torch.testing.assert_close(state.h, torch.tensor([[0.6036502342, -0.6036502342]]))


def test_layer_norm_input_projection_adds_both_biases_after_the_norm():
    # The projection of the golden test above, x = 1: LN(W_x x) per unit is
    # (v - .25) / sqrt(.0125 + 1e-5) for v = .1 .1 .2 .2 .3 .3 .4 .4. With gain 2, shift 0.05,
    # b_ih 0.1 and b_hh 0.2 each unit is 2 LN + 0.35; without biases, 2 LN + 0.05. The
    # gradient of sum(w * projection) with respect to each bias (and the shift) is w itself.
    values = [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4]
    normed = [(v - 0.25) / (0.0125 + 1e-5) ** 0.5 for v in values]
    w = torch.arange(1.0, 9.0, dtype=torch.float64)[None]
    for bias, offset in ((True, 0.35), (False, 0.05)):
        cell = LayerNormLSTMCell(1, 2, bias=bias).double()
        with torch.no_grad():
            cell.weight_ih.copy_(torch.tensor(values)[:, None])
            cell.norm_input.weight.fill_(2.0)
            cell.norm_input.bias.fill_(0.05)
            if bias:
                cell.bias_ih.fill_(0.1)
                cell.bias_hh.fill_(0.2)
        projection = cell.project_input(torch.ones(1, 1, dtype=torch.float64))
        expected = torch.tensor([[2 * n + offset for n in normed]], dtype=torch.float64)
        torch.testing.assert_close(projection, expected)
        (w * projection).sum().backward()
        torch.testing.assert_close(cell.norm_input.bias.grad, w[0])
        if bias:
            torch.testing.assert_close(cell.bias_ih.grad, w[0])
            torch.testing.assert_close(cell.bias_hh.grad, w[0])


def test_cifg_cell_couples_gates():
    # I=1, H=1, all weights 0.5, biases 0; x=1, h0=0.2, c0=1: f = σ(0.6) = 0.645656,
    # i = 1 - f = 0.354344, g = tanh(0.6) = 0.537050, c = 0.645656 + 0.354344*0.537050 = 0.835956
    cell = _constant(CIFGLSTMCell(1, 1), 0.5)
    with torch.no_grad():
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    state, gates = cell.step(
        cell.project_input(torch.ones(1, 1)), LSTMState(torch.full((1, 1), 0.2), torch.ones(1, 1))
    )
    assert cell.weight_ih.shape == (3, 1)
    torch.testing.assert_close(gates.input, torch.tensor([[0.3543436938]]))
    torch.testing.assert_close(state.c, torch.tensor([[0.8359564335]]))
