"""The moving average of the weights (``TrainConfig.ema_decay``), against hand-computed values."""

import re

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lstmkit.training import EarlyStoppingConfig, OptimConfig, StepOutput, TrainConfig, Trainer
from lstmkit.training import trainer as trainer_module
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


# SGD at lr 0.1 on (w - 2)^2 from w = -1: w <- w - 0.2 (w - 2) at each of the 6 steps (2 per epoch)
RAW = [-0.4, 0.08, 0.464, 0.7712, 1.01696, 1.213568]
# the average with decay 0.75: a copy of the first step's weights, then a quarter of the way
# toward the new weights at every step
AVERAGED = [-0.4, -0.28, -0.094, 0.1223, 0.345965, 0.56286575]


def _config(**changes):
    settings = {
        "max_epochs": 3,
        "batch_size": 4,  # 8 items: two optimiser steps per epoch
        "clip_norm": None,
        "ema_decay": 0.75,
        "shuffle": False,
        "optim": OptimConfig(name="sgd", lr=0.1, momentum=0.0),
    }
    return TrainConfig(**(settings | changes))


TRAIN, VAL = TensorDataset(torch.full((8,), 2.0)), TensorDataset(torch.zeros(8))


def test_without_validation_the_model_ends_with_the_hand_computed_average():
    model = Scalar()
    result = Trainer(model, pull_step, _config()).fit(TRAIN)
    assert result.steps == 6
    assert model.w.item() == pytest.approx(AVERAGED[-1], abs=1e-6)
    assert "averaged weights" in result.reason


def test_validation_scores_the_average_and_keeps_the_best_average(tmp_path):
    # validation (at steps 2, 4, 6) is best at w = 0: the raw weights are closest at step 2
    # (0.08), the average at step 4 (0.1223), so the restored weight tells which was validated
    config = _config(early_stopping=EarlyStoppingConfig(patience=10))
    model = Scalar()
    result = Trainer(model, pull_step, config, run_dir=tmp_path).fit(TRAIN, VAL)
    losses = [h["val_loss"] for h in result.history]
    assert losses == pytest.approx([AVERAGED[k] ** 2 for k in (1, 3, 5)], abs=1e-6)
    assert result.best_step == 4
    assert model.w.item() == pytest.approx(AVERAGED[3], abs=1e-6)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    assert best["model"]["w"].item() == pytest.approx(AVERAGED[3], abs=1e-6)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert last["model"]["w"].item() == pytest.approx(RAW[-1], abs=1e-6)  # training's weights
    assert last["average"]["module.w"].item() == pytest.approx(AVERAGED[-1], abs=1e-6)


def test_off_by_default_validates_the_raw_weights():
    config = _config(ema_decay=0.0, early_stopping=EarlyStoppingConfig(patience=10))
    model = Scalar()
    result = Trainer(model, pull_step, config).fit(TRAIN, VAL)
    assert [h["val_loss"] for h in result.history] == pytest.approx(
        [RAW[k] ** 2 for k in (1, 3, 5)], abs=1e-6
    )
    assert model.w.item() == pytest.approx(RAW[1], abs=1e-6)


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_steps_the_fp16_scaler_skips_are_not_averaged(monkeypatch):
    # the first step's gradient overflows: the scaler skips it and halves its scale, so the
    # average starts from the second step, whose weights are the first step's above
    class CpuScaler(torch.amp.GradScaler):
        def __init__(self):
            super().__init__("cpu", init_scale=2.0**16)

    monkeypatch.setattr(trainer_module, "grad_scaler", lambda precision, device: CpuScaler())
    calls = []

    def step(model, batch, state):
        calls.append(1)
        out = pull_step(model, batch, state)
        return out._replace(loss=out.loss * (1e36 if len(calls) == 1 else 1.0))

    model = Scalar()
    Trainer(model, step, _config(max_epochs=2)).fit(TRAIN)
    # raw weights: skipped, -0.4, 0.08, 0.464; average: -0.4, -0.28, -0.094
    assert model.w.item() == pytest.approx(AVERAGED[2], abs=1e-6)


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


@pytest.mark.parametrize(("before", "after"), [(0.0, 0.9), (0.9, 0.0), (0.9, 0.99)])
def test_resuming_with_another_decay_names_both(tmp_path, before, after):
    config = TrainConfig(max_epochs=1, max_steps=2, batch_size=16, ema_decay=before)
    Trainer(Tiny(), mse_step, config, run_dir=tmp_path).fit(_regression_data())
    changed = TrainConfig(max_epochs=1, max_steps=4, batch_size=16, ema_decay=after)
    message = f"was trained with ema_decay={before}, but this run has ema_decay={after}"
    with pytest.raises(ValueError, match=re.escape(message)):
        Trainer(Tiny(), mse_step, changed, run_dir=tmp_path).fit(_regression_data(), resume=True)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.9", True])
def test_bad_decay_is_refused_with_the_value(bad):
    message = f"ema_decay must be a non-negative number below 1, got {bad!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(ema_decay=bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, "0.9", None])
def test_an_average_needs_a_decay_between_0_and_1(bad):
    with pytest.raises(ValueError, match=re.escape(f"strictly between 0 and 1, got {bad!r}")):
        WeightAverage(Scalar(), bad)


def test_the_setting_round_trips_through_the_saved_config():
    config = TrainConfig(ema_decay=0.99)
    assert TrainConfig.from_dict(config.to_dict()).ema_decay == 0.99
