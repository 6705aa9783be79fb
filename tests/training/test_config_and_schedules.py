"""Training configuration errors, schedules, early stopping decisions, device choice."""

import math

import pytest
import torch

from lstmkit.training import EarlyStopping, EarlyStoppingConfig, ScheduleConfig, TrainConfig
from lstmkit.training.config import OptimConfig
from lstmkit.training.device import resolve_device
from lstmkit.training.optim import Schedule, lr_multiplier


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: OptimConfig(lr=-0.1), "optim.lr must be a positive number, got -0.1"),
        (lambda: OptimConfig(name="adam"), "optim.name must be one of 'adamw', 'sgd'; got 'adam'"),
        (
            lambda: ScheduleConfig(name="linear"),
            "schedule.name must be one of 'constant', 'cosine', 'step', 'plateau', 'onecycle'; "
            "got 'linear'",
        ),
        (
            lambda: EarlyStoppingConfig(patience=-1),
            "early_stopping.patience must be an integer >= 0, got -1",
        ),
        (
            lambda: TrainConfig(clip_value="none"),
            r"clip_value must be a positive number, or None \(also 0 or false\) to turn it off; "
            "got 'none'",
        ),
        (
            lambda: TrainConfig(clip_norm=-1.0),
            r"clip_norm must be a positive number, or None \(also 0 or false\) .*; got -1.0",
        ),
        (lambda: TrainConfig(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (
            lambda: TrainConfig(precision="int8"),
            "precision must be one of 'fp32', 'bf16', 'fp16'; got 'int8'",
        ),
        (
            lambda: ScheduleConfig(name="onecycle", warmup_steps=10),
            "schedule.warmup_steps must be 0 with the onecycle schedule",
        ),
        (
            lambda: TrainConfig.from_dict({"optim": {"learning_rate": 1}}),
            r"unknown training option\(s\) in \[optim\]: \['learning_rate'\]",
        ),
        (
            lambda: TrainConfig.from_dict({"epochs": 3}),
            r"unknown training option\(s\): \['epochs'\]",
        ),
    ],
)
def test_bad_training_config(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_clipping_turns_off_with_zero_or_false_as_toml_has_no_null():
    import tomllib

    values = tomllib.loads("clip_norm = false\nclip_value = 0\n")
    config = TrainConfig.from_dict(values)
    assert config.clip_norm is None and config.clip_value is None
    assert TrainConfig(clip_norm=0.0).clip_norm is None
    assert TrainConfig(clip_norm=2).clip_norm == 2


def test_config_round_trip():
    config = TrainConfig(
        batch_size=8,
        optim=OptimConfig(name="sgd", lr=0.3),
        schedule=ScheduleConfig(name="cosine", warmup_steps=5),
    )
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_warmup_then_cosine_to_min():
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(cfg, 0, 110) == pytest.approx(0.1)
    assert lr_multiplier(cfg, 9, 110) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 10, 110) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 60, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(cfg, 110, 110) == pytest.approx(0.1)


def test_step_decay():
    cfg = ScheduleConfig(name="step", step_size=10, gamma=0.5)
    assert [lr_multiplier(cfg, s, 100) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    # a held start: the full lr for 3 epochs of 10 steps, then x0.8 each epoch
    held = ScheduleConfig(name="step", step_size=10, gamma=0.8, step_delay=20)
    got = [lr_multiplier(held, s, 100) for s in (0, 29, 30, 39, 40, 55)]
    assert got == pytest.approx([1.0, 1.0, 0.8, 0.8, 0.64, 0.512])
    with pytest.raises(ValueError, match="step_delay"):
        ScheduleConfig(name="step", step_delay=-1)


def _optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_decays_after_patience_and_onecycle_peaks_at_the_lr():
    opt = _optimizer()
    schedule = Schedule(
        opt, ScheduleConfig(name="plateau", plateau_patience=1, plateau_factor=0.5), total_steps=100
    )
    for value in (1.0, 1.0, 1.0):
        schedule.after_eval(value)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)

    opt = _optimizer(lr=0.1)
    schedule = Schedule(opt, ScheduleConfig(name="onecycle", pct_start=0.5), total_steps=20)
    lrs = []
    for _ in range(19):
        opt.step()
        schedule.after_step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and lrs[-1] < 0.01


def test_schedule_state_round_trip():
    opt = _optimizer()
    config = ScheduleConfig(name="cosine", warmup_steps=3)
    schedule = Schedule(opt, config, total_steps=30)
    for _ in range(7):
        opt.step()
        schedule.after_step()
    opt2 = _optimizer()
    other = Schedule(opt2, config, total_steps=30)
    other.load_state_dict(schedule.state_dict())
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for _ in range(5):
        opt.step()
        schedule.after_step()
        opt2.step()
        other.after_step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_early_stopping_decisions_and_state():
    stopper = EarlyStopping(EarlyStoppingConfig(patience=2, min_delta=0.01))
    assert stopper.update(1.0, 1).improved
    assert not stopper.update(0.995, 2).improved  # within min_delta
    decision = stopper.update(0.999, 3)
    assert decision.stop and "stopping (patience 2)" in decision.reason
    clone = EarlyStopping(EarlyStoppingConfig(patience=2))
    clone.load_state_dict(stopper.state_dict())
    assert clone.best == 1.0 and clone.bad_evals == 2
    with pytest.raises(ValueError, match="non-finite val_loss = nan at step 4"):
        stopper.update(math.nan, 4)


def test_max_mode_early_stopping():
    stopper = EarlyStopping(EarlyStoppingConfig(mode="max", patience=1, monitor="val_acc"))
    assert stopper.update(0.5, 1).improved and stopper.update(0.6, 2).improved
    assert stopper.update(0.55, 3).stop


def test_device_choice():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' was requested but no CUDA device"):
            resolve_device("cuda")
