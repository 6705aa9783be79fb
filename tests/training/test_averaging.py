"""The moving average of the weights (``TrainConfig.ema_decay``), against hand-computed values."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lstmkit.training import EarlyStoppingConfig, OptimConfig, StepOutput, TrainConfig, Trainer
from lstmkit.training.averaging import WeightAverage
from lstmkit.training.checkpoint import load_checkpoint

from .test_trainer import Tiny, _regression_data, mse_step


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([-1.0]))


def pull_step(model, batch, state):
    (target,) = batch
    return StepOutput(((model.w - target) ** 2).mean(), weight=len(target))


# SGD at lr 0.1 on (w - 2)^2 from w = -1: w <- w - 0.2 (w - 2), one step per epoch
RAW = [-0.4, 0.08, 0.464, 0.7712]
# the average with decay 0.5: a copy of the first step's weights, then halfway each step
AVERAGED = [-0.4, -0.16, 0.152, 0.4616]


def _config(**changes):
    settings = {
        "max_epochs": len(RAW),
        "batch_size": 8,
        "clip_norm": None,
        "ema_decay": 0.5,
        "optim": OptimConfig(name="sgd", lr=0.1, momentum=0.0),
    }
    return TrainConfig(**(settings | changes))


def test_without_validation_the_model_ends_with_the_hand_computed_average():
    model = Scalar()
    result = Trainer(model, pull_step, _config()).fit(TensorDataset(torch.full((8,), 2.0)))
    assert result.steps == 4
    assert model.w.item() == pytest.approx(AVERAGED[-1], abs=1e-6)
    assert "averaged weights" in result.reason


def test_validation_scores_the_average_and_keeps_the_best_average(tmp_path):
    # validation is best at w = 0: the raw weights are closest at step 2 (0.08), the average
    # at step 3 (0.152), so the restored weight tells which of the two was validated
    train, val = TensorDataset(torch.full((8,), 2.0)), TensorDataset(torch.zeros(8))
    config = _config(early_stopping=EarlyStoppingConfig(patience=10))
    model = Scalar()
    result = Trainer(model, pull_step, config, run_dir=tmp_path).fit(train, val)
    losses = [h["val_loss"] for h in result.history]
    assert losses == pytest.approx([a * a for a in AVERAGED], abs=1e-6)
    assert result.best_step == 3
    assert model.w.item() == pytest.approx(AVERAGED[2], abs=1e-6)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    assert best["model"]["w"].item() == pytest.approx(AVERAGED[2], abs=1e-6)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert last["model"]["w"].item() == pytest.approx(RAW[-1], abs=1e-6)  # training's weights
    assert last["average"]["module.w"].item() == pytest.approx(AVERAGED[-1], abs=1e-6)


def test_off_by_default_validates_the_raw_weights():
    train, val = TensorDataset(torch.full((8,), 2.0)), TensorDataset(torch.zeros(8))
    config = _config(ema_decay=0.0, early_stopping=EarlyStoppingConfig(patience=10))
    model = Scalar()
    result = Trainer(model, pull_step, config).fit(train, val)
    assert [h["val_loss"] for h in result.history] == pytest.approx([r * r for r in RAW])
    assert model.w.item() == pytest.approx(RAW[1], abs=1e-6)


def test_resume_mid_epoch_continues_the_average_exactly(tmp_path):
    def run(max_steps, run_dir, resume=False):
        torch.manual_seed(0)
        model = Tiny()
        config = TrainConfig(max_epochs=3, max_steps=max_steps, batch_size=16, ema_decay=0.9)
        Trainer(model, mse_step, config, run_dir=run_dir).fit(_regression_data(), resume=resume)
        return model

    straight = run(6, tmp_path / "straight")
    run(3, tmp_path / "cut")  # stops after 3 of the 4 steps of the first epoch
    resumed = run(6, tmp_path / "cut", resume=True)
    after_resume = resumed.state_dict()
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(after_resume[name], value, rtol=0, atol=0, msg=name)


def test_resuming_a_run_without_an_average_names_the_setting(tmp_path):
    config = TrainConfig(max_epochs=1, max_steps=2, batch_size=16)
    Trainer(Tiny(), mse_step, config, run_dir=tmp_path).fit(_regression_data())
    averaged = TrainConfig(max_epochs=1, max_steps=4, batch_size=16, ema_decay=0.9)
    with pytest.raises(ValueError, match="holds no weight average, but ema_decay is 0.9"):
        Trainer(Tiny(), mse_step, averaged, run_dir=tmp_path).fit(_regression_data(), resume=True)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.9", True])
def test_bad_decay_is_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=r"ema_decay must be a non-negative number below 1, got"):
        TrainConfig(ema_decay=bad)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        WeightAverage(Scalar(), 0.0 if bad is True else 1.0)


def test_the_setting_round_trips_through_the_saved_config():
    config = TrainConfig(ema_decay=0.99)
    assert TrainConfig.from_dict(config.to_dict()).ema_decay == 0.99
