"""The Trainer's remedies, one test each: clipping, NaN guard, early stopping, accumulation,
truncated BPTT, precision, logging, run directory."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from lstmkit.nn import LSTM
from lstmkit.training import (
    EarlyStoppingConfig,
    OptimConfig,
    StepOutput,
    TrainConfig,
    Trainer,
    TrainingDiverged,
)
from lstmkit.training.checkpoint import load_checkpoint
from lstmkit.training.progress import Progress


def _regression_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, 2, generator=g)
    return TensorDataset(x, x.sum(dim=(1, 2)).unsqueeze(-1))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = LSTM(2, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[1][0][-1])


def mse_step(model, batch, state):
    x, y = batch
    return StepOutput(F.mse_loss(model(x), y), weight=len(x))


def _metrics(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_clip_norm_caps_the_update_and_logs_the_pre_clip_norm(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = TrainConfig(
        max_epochs=1,
        max_steps=1,
        batch_size=64,
        clip_norm=0.01,
        optim=OptimConfig(name="sgd", lr=1.0, momentum=0.0),
    )
    result = Trainer(model, mse_step, config, run_dir=tmp_path).fit(_regression_data())
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # lr 1 x clipped
    row = _metrics(tmp_path)[0]
    assert float(row["grad_norm"]) > 0.01 and row["clipped"] == "1.0"
    assert result.clip_events == 1


def test_clip_value_caps_each_gradient_element():
    torch.manual_seed(0)
    model = Tiny()
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(
        max_epochs=1,
        max_steps=1,
        batch_size=64,
        clip_norm=None,
        clip_value=1e-3,
        optim=OptimConfig(name="sgd", lr=1.0, momentum=0.0),
    )
    result = Trainer(model, mse_step, config).fit(_regression_data())
    for old, new in zip(before, model.parameters(), strict=True):
        assert (new.detach() - old).abs().max().item() <= 1e-3 + 1e-7
    assert result.clip_events == 1


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    calls = {"n": 0}

    def poisoned(model, batch, state):
        calls["n"] += 1
        out = mse_step(model, batch, state)
        return out._replace(loss=out.loss * math.nan) if calls["n"] == 7 else out

    config = TrainConfig(max_epochs=1, batch_size=8, checkpoint_every=5)
    with pytest.raises(
        TrainingDiverged,
        match=r"loss became nan at step 7 \(epoch 0, batch 6\)"
        r"; training stopped and the last good "
        r"checkpoint is .*last.safetensors",
    ):
        Trainer(Tiny(), poisoned, config, run_dir=tmp_path).fit(_regression_data())
    kept = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert kept["position"]["step"] == 5
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_early_stopping_restores_the_best_weights(tmp_path):
    # One weight w. Training pulls it towards 2; validation is best at w = 0. Starting from
    # w = -1, validation improves while w < 0, then gets worse: early stopping must stop and
    # put back the weight of the best validation.
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([-1.0]))

    def step(model, batch, state):
        (target,) = batch
        return StepOutput(((model.w - target) ** 2).mean(), weight=len(target))

    train, val = TensorDataset(torch.full((8,), 2.0)), TensorDataset(torch.zeros(8))
    config = TrainConfig(
        max_epochs=50,
        batch_size=8,
        optim=OptimConfig(name="sgd", lr=0.05, momentum=0.0),
        early_stopping=EarlyStoppingConfig(patience=2),
    )
    model = Scalar()
    result = Trainer(model, step, config, run_dir=tmp_path).fit(train, val)
    assert result.stopped_early and result.epochs < 50
    losses = [h["val_loss"] for h in result.history]
    assert result.best_metric == min(losses)
    assert model.w.item() ** 2 == pytest.approx(min(losses), rel=1e-5)
    assert losses[-1] > min(losses)  # it did get worse before stopping
    best = load_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    torch.testing.assert_close(best["model"]["w"], model.w.detach())


def test_gradient_accumulation_matches_one_big_batch():
    data = _regression_data(n=32)
    results = []
    for batch_size, accum in ((32, 1), (8, 4)):
        torch.manual_seed(0)
        model = Tiny()
        config = TrainConfig(
            max_epochs=1,
            batch_size=batch_size,
            grad_accum=accum,
            shuffle=False,
            clip_norm=None,
            optim=OptimConfig(name="sgd", lr=0.1, momentum=0.0),
        )
        Trainer(model, mse_step, config).fit(data)
        results.append([p.detach() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_truncated_bptt_carries_a_detached_state_across_batches():
    lstm = LSTM(1, 3)
    seen, returned = [], []

    def step(model, batch, state):
        (x,) = batch
        seen.append(state)
        out, new_state = model(x.unsqueeze(0), state)
        returned.append(tuple(t.detach().clone() for t in new_state))
        return StepOutput(out.pow(2).mean(), weight=x.shape[0], state=new_state)

    stream = TensorDataset(torch.randn(40, 1))  # one continuous stream, 10 steps per batch
    config = TrainConfig(
        max_epochs=2,
        batch_size=10,
        shuffle=False,
        early_stopping=EarlyStoppingConfig(enabled=False),
    )
    Trainer(lstm, step, config).fit(stream)
    assert seen[0] is None and seen[4] is None  # fresh state at each epoch start
    for state in seen[1:4] + seen[5:]:
        h, c = state
        assert h.shape == (1, 1, 3) and not h.requires_grad and not c.requires_grad
    # what arrives is exactly what the previous batch returned, cut from its graph
    for k in (1, 2, 3, 5, 6, 7):
        assert torch.equal(seen[k][0], returned[k - 1][0])
        assert torch.equal(seen[k][1], returned[k - 1][1])


def test_bf16_on_cpu_trains_and_fp16_needs_cuda():
    torch.manual_seed(0)
    config = TrainConfig(max_epochs=1, batch_size=16, precision="bf16", device="cpu")
    result = Trainer(Tiny(), mse_step, config).fit(_regression_data())
    assert result.steps == 4
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device .got cpu."):
        Trainer(Tiny(), mse_step, TrainConfig(precision="fp16", device="cpu"))


def test_run_directory_records_config_versions_and_metrics(tmp_path):
    config = TrainConfig(max_epochs=2, batch_size=16, tensorboard=True)
    Trainer(Tiny(), mse_step, config, run_dir=tmp_path, saved_config={"model": {"hidden": 4}}).fit(
        _regression_data(), _regression_data(16, 1)
    )
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["batch_size"] == 16 and saved["model"] == {"hidden": 4}
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and "git_commit" in env
    rows = _metrics(tmp_path)
    train_rows = [r for r in rows if r["grad_norm"]]
    assert [int(r["step"]) for r in train_rows] == list(range(1, 9))  # every step
    assert sum(1 for r in rows if r["val_loss"]) == 2  # once per epoch
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_from_a_model_of_another_shape_is_refused(tmp_path):
    config = TrainConfig(max_epochs=1, batch_size=16)
    Trainer(Tiny(), mse_step, config, run_dir=tmp_path).fit(_regression_data())

    class Wider(Tiny):
        def __init__(self):
            super().__init__()
            self.lstm = LSTM(2, 6)
            self.head = nn.Linear(6, 1)

    with pytest.raises(
        ValueError,
        match=r"does not fit this model: lstm.cells.0.weight_ih has "
        r"shape \(16, 2\) in the checkpoint but \(24, 2\)",
    ):
        Trainer(Wider(), mse_step, TrainConfig(max_epochs=2, batch_size=16), run_dir=tmp_path).fit(
            _regression_data(), resume=True
        )


def test_progress_bar_is_silent_off_a_terminal(capsys):
    bar = Progress(enabled=True, total=10)
    bar.update(1, "loss 1.0")
    bar.close()
    assert bar.bar is None
    assert capsys.readouterr().err == ""


def test_training_set_smaller_than_a_batch():
    with pytest.raises(
        ValueError,
        match="the training set has 8 examples, fewer than one batch "
        r"\(32\)",
    ):
        Trainer(Tiny(), mse_step, TrainConfig()).fit(_regression_data(n=8))


def test_unknown_monitor_lists_what_validation_reports():
    config = TrainConfig(
        max_epochs=1, batch_size=16, early_stopping=EarlyStoppingConfig(monitor="val_acc")
    )
    with pytest.raises(
        ValueError,
        match=r"early_stopping.monitor is 'val_acc', but validation "
        r"reports \['val_loss'\]",
    ):
        Trainer(Tiny(), mse_step, config).fit(_regression_data(), _regression_data(16))


def test_time_budget_epoch_hook_extras_and_checkpoint_at_each_validation(tmp_path):
    seen = []

    class Epochs(TensorDataset):
        def set_epoch(self, epoch):
            seen.append(epoch)

    data = _regression_data()
    train = Epochs(*data.tensors)
    config = TrainConfig(max_epochs=3, batch_size=16, eval_every=2)
    trainer = Trainer(
        Tiny(),
        mse_step,
        config,
        run_dir=tmp_path,
        checkpoint_extras={"tokenizer": {"kind": "char", "vocab": ["a", "b"]}},
    )
    result = trainer.fit(train, _regression_data(16, 1))
    assert seen == [0, 1, 2]
    assert all(h["elapsed_s"] >= 0 for h in result.history)
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert saved["extras"]["tokenizer"]["vocab"] == ["a", "b"]
    assert "tokenizer" not in json.loads((tmp_path / "config.json").read_text())
    assert saved["position"]["step"] == 12

    slow = TrainConfig(max_epochs=1000, batch_size=16, max_seconds=0.2)
    result = Trainer(Tiny(), mse_step, slow).fit(_regression_data())
    assert "reached max_seconds=0.2" in result.reason and result.steps < 4000


def test_resuming_a_finished_or_early_stopped_run_trains_no_further(tmp_path):
    config = TrainConfig(max_epochs=5, max_steps=3, batch_size=16)
    first = Trainer(Tiny(), mse_step, config, run_dir=tmp_path / "a").fit(_regression_data())
    again = Trainer(Tiny(), mse_step, config, run_dir=tmp_path / "a").fit(
        _regression_data(), resume=True
    )
    assert first.steps == again.steps == 3
