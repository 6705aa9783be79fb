"""The layer learns: the adding problem at T=50, seeded, within the CI budget."""

import pytest
import torch

from lstmkit.data.synthetic import adding_problem
from lstmkit.tasks.adding import AddingConfig, default_train_config, train_adding
from lstmkit.training import OptimConfig


def test_adding_problem_layout():
    x, y = adding_problem(16, 10, torch.Generator().manual_seed(0))
    assert x.shape == (16, 10, 2) and y.shape == (16, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(dim=1) == 2)
    assert torch.all(markers[:, :5].sum(dim=1) == 1)  # one marker in each half
    torch.testing.assert_close((x[..., 0] * markers).sum(dim=1, keepdim=True), y)


def test_lstm_solves_the_adding_problem_at_t50():
    result = train_adding(AddingConfig(seq_len=50, seed=0))
    assert result.test_mse < 0.01, result
    assert 0.14 < result.baseline_mse < 0.19  # always-1.0 baseline ≈ 1/6
    assert result.skill > 0.9


def test_adding_config_errors():
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got 0"):
        AddingConfig(seq_len=0)
    with pytest.raises(ValueError, match="cell must be one of .*; got 'gru'"):
        AddingConfig(lstm={"cell": "gru"})
    with pytest.raises(ValueError, match="optim.lr must be a positive number, got -0.1"):
        default_train_config(optim=OptimConfig(lr=-0.1))
    with pytest.raises(ValueError, match="seq_len must be at least 2"):
        adding_problem(4, 1)
