"""The forecasting conformance harness and the models, on small synthetic series."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from lstmkit.tasks.forecasting import (
    DataConfig,
    ForecastConfig,
    Forecaster,
    ModelConfig,
    backtest,
    evaluate,
)
from lstmkit.training import EarlyStoppingConfig, OptimConfig, TrainConfig
from lstmkit.training.checkpoint import load_checkpoint

FAST = TrainConfig(
    max_epochs=3,
    batch_size=16,
    optim=OptimConfig(lr=5e-3),
    early_stopping=EarlyStoppingConfig(patience=2),
)


def long_config(**data_changes) -> ForecastConfig:
    data = dict(
        time_col="date",
        targets=("sales",),
        id_col="store",
        input_len=14,
        horizon=7,
        test_size=7,
        past_covariates=("temp",),
        future_covariates=("promo",),
        static_covariates=("size",),
    )
    data.update(data_changes)
    return ForecastConfig(
        data=DataConfig(**data), model=ModelConfig(hidden_size=16), train=FAST, quantiles=(0.1, 0.9)
    )


@pytest.mark.parametrize("kind", ["direct", "autoregressive"])
def test_fit_predict_save_load_predict_is_identical(kind, long_frame, tmp_path):
    config = long_config()
    config = ForecastConfig(
        data=config.data,
        model=ModelConfig(kind=kind, hidden_size=16),
        train=FAST,
        quantiles=(0.1, 0.9),
    )
    forecaster = Forecaster(config)
    forecaster.fit(long_frame)
    frame = long_frame.copy()
    first = evaluate(forecaster, frame)
    forecaster.save(tmp_path / "f.safetensors")
    loaded = Forecaster.load_from(tmp_path / "f.safetensors")
    second = evaluate(loaded, frame)
    assert first == second
    assert config.quantiles == (0.1, 0.5, 0.9)  # the median is always forecast
    assert first["interval"]["crossings"] == 0


def test_predict_after_the_end_with_quantiles_that_do_not_cross(wide_frame, tmp_path):
    config = ForecastConfig(
        data=DataConfig(time_col="time", targets=("a", "b"), input_len=24, horizon=6),
        model=ModelConfig(hidden_size=16),
        train=FAST,
        quantiles=(0.05, 0.25, 0.75, 0.95),
    )
    forecaster = Forecaster(config)
    forecaster.fit(wide_frame)
    table = forecaster.predict(wide_frame)
    assert len(table) == 6 * 2
    assert table["time"].min() == wide_frame["time"].iloc[-1] + pd.Timedelta(hours=1)
    q = table[["q0.05", "q0.25", "q0.5", "q0.75", "q0.95"]].to_numpy()
    assert np.all(np.diff(q, axis=1) >= 0)
    np.testing.assert_allclose(table["forecast"], table["q0.5"])
    forecaster.save(tmp_path / "f.safetensors")
    again = Forecaster.load_from(tmp_path / "f.safetensors").predict(wide_frame)
    pd.testing.assert_frame_equal(table, again)


def test_segment_model_channel_independent(wide_frame):
    config = ForecastConfig(
        data=DataConfig(
            time_col="time",
            targets=("a", "b"),
            input_len=24,
            horizon=12,
            test_size=12,
            channel_independent=True,
        ),
        model=ModelConfig(kind="segment", hidden_size=16, segment_len=6),
        train=FAST,
    )
    forecaster = Forecaster(config)
    forecaster.fit(wide_frame)
    report = evaluate(forecaster, wide_frame)
    assert report["windows"] == 2  # one test window, two channels as separate samples
    table = forecaster.predict(wide_frame)
    assert sorted(table["target"].unique()) == ["a", "b"]


def test_the_lstm_learns_a_seasonal_series_better_than_the_naive_baseline(long_frame):
    config = long_config()
    config = ForecastConfig(
        data=config.data,
        model=ModelConfig(hidden_size=32),
        train=TrainConfig(
            max_epochs=40,
            batch_size=16,
            seed=0,
            optim=OptimConfig(lr=1e-2),
            early_stopping=EarlyStoppingConfig(patience=8),
        ),
        quantiles=(0.1, 0.9),
    )
    forecaster = Forecaster(config)
    forecaster.fit(long_frame)
    report = evaluate(forecaster, long_frame)
    assert report["beats"]["naive"], report
    assert report["model"]["mae"] < report["naive"]["mae"]


def test_evaluate_in_scaled_units_matches_the_scaler(wide_frame):
    config = ForecastConfig(
        data=DataConfig(time_col="time", targets=("a", "b"), input_len=24, horizon=6, test_size=6),
        model=ModelConfig(hidden_size=8),
        train=FAST,
    )
    forecaster = Forecaster(config)
    forecaster.fit(wide_frame)
    data_units = evaluate(forecaster, wide_frame)
    scaled = evaluate(forecaster, wide_frame, scaled=True)
    assert scaled["units"] == "scaled" and data_units["units"] == "data"
    assert scaled["model"]["mse"] != pytest.approx(data_units["model"]["mse"])


@pytest.mark.parametrize("mode", ["expanding", "sliding"])
def test_backtest_refits_at_each_origin(mode, long_frame):
    config = long_config(test_size=0)
    result = backtest(config, long_frame, folds=2, mode=mode)
    assert [f["steps_before_end"] for f in result["folds"]] == [7, 0]
    assert all(f["windows"] == 3 for f in result["folds"])  # one test window per store
    mean = result["mean"]
    assert set(mean) >= {"model", "naive", "seasonal_naive", "skill", "beats", "interval"}
    folds = result["folds"]
    assert mean["model"]["mae"] == pytest.approx(np.mean([f["model"]["mae"] for f in folds]))
    naive_mae = mean["naive"]["mae"]
    assert mean["skill"]["vs_naive"]["mae"] == pytest.approx(1 - mean["model"]["mae"] / naive_mae)
    coverage = np.mean([f["interval"]["coverage"] for f in folds])
    assert mean["interval"]["coverage"] == pytest.approx(coverage)


def test_metrics_by_hand_on_a_known_forecast(wide_frame):
    # A zero-epoch-like check: the naive baseline's MAE equals the mean |y - last value|.
    config = ForecastConfig(
        data=DataConfig(time_col="time", targets=("a",), input_len=24, horizon=6, test_size=6),
        model=ModelConfig(hidden_size=8),
        train=FAST,
    )
    forecaster = Forecaster(config)
    forecaster.fit(wide_frame)
    report = evaluate(forecaster, wide_frame)
    a = wide_frame["a"].to_numpy()
    expected = np.mean(np.abs(a[-6:] - a[-7]))
    assert report["naive"]["mae"] == pytest.approx(expected, rel=1e-5)
    assert report["seasonal_period"] == 24
    # MASE (M4): scaled by the seasonal naive's in-sample error over all 90 steps before the
    # origin, the validation part included
    scale = np.mean(np.abs(a[24:90] - a[:66]))
    assert report["naive"]["mase"] == pytest.approx(expected / scale, rel=1e-5)


def test_a_test_part_the_model_was_fitted_to_is_refused(long_frame, tmp_path):
    """A frame cut 10 steps short puts its test part inside what fit trained and validated on;
    scoring it would flatter the model. The fitted frame and later data are fine."""
    forecaster = Forecaster(long_config())
    forecaster.fit(long_frame)
    cut = long_frame[long_frame.groupby("store").cumcount(ascending=False) >= 10]
    message = r"series 's0': its test part starts at 2020-03-0.* up to 2020-03-1"
    with pytest.raises(ValueError, match=message):
        evaluate(forecaster, cut)
    assert np.isfinite(evaluate(forecaster, long_frame)["model"]["mae"])
    loaded = Forecaster.load_from(forecaster.save(tmp_path / "f.safetensors"))
    with pytest.raises(ValueError, match=message):
        evaluate(loaded, cut)


def _daily_config(test_size: int, fill: str) -> ForecastConfig:
    """One daily series "y" at "t": two weeks in, one week out, a small quick model."""
    return ForecastConfig(
        data=DataConfig(
            time_col="t", targets="y", input_len=14, horizon=7, test_size=test_size, fill=fill
        ),
        model=ModelConfig(hidden_size=8),
        train=FAST,
    )


@pytest.mark.parametrize("fill", ["interpolate", "ffill"])
def test_interpolation_never_reads_the_held_out_parts(fill):
    """A gap over the last training step and the validation part: changing only the test
    values must change neither the training data nor the scaler (interpolate once read the
    first test value to fill them)."""
    n, days = 60, pd.date_range("2020-01-01", periods=60, freq="D")
    config = _daily_config(test_size=14, fill=fill)
    seen = []
    for level in (0.0, 1000.0):
        y = 10 + np.sin(np.arange(n))
        y[n - 22 : n - 14] = np.nan  # the last training step and all 7 validation steps
        y[n - 14 :] += level  # the test part only
        forecaster = Forecaster(config)
        forecaster.fit(pd.DataFrame({"t": days, "y": y}))
        series = forecaster.load(pd.DataFrame({"t": days, "y": y}))[0]
        seen.append((forecaster.scaler.state_dict()["target"], series.target[: n - 14, 0]))
    assert seen[0][0] == seen[1][0]
    np.testing.assert_array_equal(seen[0][1], seen[1][1])
    assert (seen[0][1][n - 22 :] == seen[0][1][n - 23]).all()  # filled forward, causally


def test_predict_interpolates_all_of_the_new_data():
    """New data to forecast from has no held-out part: a gap near its end is interpolated, as
    a gap anywhere in the training part was."""
    n, days = 60, pd.date_range("2020-01-01", periods=60, freq="D")
    y = 10 + np.sin(np.arange(n) / 3)
    config = _daily_config(test_size=7, fill="interpolate")
    forecaster = Forecaster(config)
    forecaster.fit(pd.DataFrame({"t": days, "y": y}))
    gappy = y.copy()
    gappy[n - 4 : n - 2] = np.nan
    by_hand = y.copy()
    by_hand[n - 4 : n - 2] = y[n - 5] + (y[n - 2] - y[n - 5]) * np.array([1, 2]) / 3
    got = forecaster.predict(pd.DataFrame({"t": days, "y": gappy}))["forecast"]
    want = forecaster.predict(pd.DataFrame({"t": days, "y": by_hand}))["forecast"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_nan_forecast_shows_in_mase_and_a_flat_series_does_not():
    from lstmkit.tasks.forecasting.evaluation import _scores

    y, scale = np.ones((2, 3)), np.array([[1.0], [0.0]])  # the second row's history is flat
    assert _scores(y, y + 0.5, scale)["mase"] == 0.5  # the flat row left out
    nan_forecast = y + 0.5
    nan_forecast[0, 0] = np.nan
    assert np.isnan(_scores(y, nan_forecast, scale)["mase"])


def test_a_backtest_fold_trains_on_values_filled_without_its_held_out_parts(monkeypatch):
    """Interpolated once for the whole frame, a gap across fold 0's training end was filled
    from fold 0's validation values; each fold now fills with its own parts held out."""
    n, days = 90, pd.date_range("2020-01-01", periods=90, freq="D")
    config = _daily_config(test_size=7, fill="interpolate")
    trained_on = []
    fit = Forecaster.fit
    monkeypatch.setattr(
        Forecaster,
        "fit",
        lambda self, s, **k: (
            trained_on.append(s[0].target[: len(s[0]) - 14, 0].copy()) or fit(self, s, **k)
        ),
    )
    for level in (0.0, 1000.0):
        y = 10 + np.sin(np.arange(n))
        y[n - 24 : n - 19] = np.nan  # across fold 0's training end, n - 7 - 14
        y[n - 19 :] += level  # fold 0's validation and test parts, and fold 1
        backtest(config, pd.DataFrame({"t": days, "y": y}), folds=2)
    np.testing.assert_array_equal(trained_on[0], trained_on[2])  # fold 0, both variants


def test_large_values_are_scored_unrounded():
    """y = 1e8 + t: float32 storage scored the naive at MAE 8 instead of 2.5."""
    frame = pd.DataFrame(
        {"t": pd.date_range("2020-01-01", periods=60, freq="D"), "y": 1e8 + np.arange(60.0)}
    )
    config = ForecastConfig(
        data=DataConfig(time_col="t", targets="y", input_len=8, horizon=4, test_size=4),
        model=ModelConfig(hidden_size=8),
        train=FAST,
    )
    forecaster = Forecaster(config)
    forecaster.fit(frame)
    report = evaluate(forecaster, frame)
    assert report["naive"]["mae"] == 2.5 and report["seasonal_naive"]["mae"] == 7.0
    forecast = forecaster.predict(frame)["forecast"].to_numpy()
    assert forecast.dtype == np.float64 and np.abs(forecast - (1e8 + 62.0)).max() < 50


def test_a_series_with_a_flat_history_leaves_the_panel_mase_finite(wide_frame):
    """Its own MASE is undefined (no seasonal change to scale by); the others' still count."""
    frame = wide_frame.copy()
    frame.loc[: len(frame) - 7, "b"] = 3.0  # flat up to its test part
    config = ForecastConfig(
        data=DataConfig(time_col="time", targets=("a", "b"), input_len=24, horizon=6,
                        test_size=6, channel_independent=True),
        model=ModelConfig(hidden_size=8),
        train=FAST,
    )  # fmt: skip
    forecaster = Forecaster(config)
    forecaster.fit(frame)
    report = evaluate(forecaster, frame)
    a = frame["a"].to_numpy()
    only_a = np.mean(np.abs(a[-6:] - a[-7])) / np.mean(np.abs(a[24:90] - a[:66]))
    assert report["naive"]["mase"] == pytest.approx(only_a, rel=1e-5)
    assert np.isfinite(report["model"]["mase"])


def test_not_fitted_and_bad_files(tmp_path):
    forecaster = Forecaster(long_config())
    with pytest.raises(ValueError, match="not fitted yet"):
        forecaster.predict(pd.DataFrame())
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        Forecaster.load_from(tmp_path / "missing.safetensors")
    from lstmkit.training.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other.safetensors", {"format": "something/1", "w": torch.ones(1)})
    with pytest.raises(
        ValueError,
        match=r"is not a saved Forecaster this lstmkit reads \(format 'something/1', expected "
        r"one of \['lstmkit.forecaster/1', 'lstmkit.forecaster/2'\]\)",
    ):
        Forecaster.load_from(tmp_path / "other.safetensors")


def test_seasonal_periods_by_frequency():
    from lstmkit.tasks.forecasting.config import seasonal_period

    expected = {
        "h": 24,
        "2h": 12,
        "15min": 96,
        "5min": 288,
        "D": 7,
        "24h": 7,  # whole days as a tick, as pandas 2 makes "D": weeks of days too
        "48h": 1,
        "B": 5,
        "W-SUN": 52,
        "MS": 12,
        "QS": 4,
        "3D": 1,
    }
    assert {f: seasonal_period(f) for f in expected} == expected
    assert DataConfig(time_col="t", targets="y", seasonal_period=30).period("D") == 30


def test_a_weight_average_is_what_the_forecaster_keeps_and_saves(wide_frame, tmp_path):
    def fit(decay, run_dir):
        config = ForecastConfig(
            data=DataConfig(
                time_col="time", targets=("a", "b"), input_len=24, horizon=6, test_size=6
            ),
            model=ModelConfig(kind="segment", hidden_size=16, segment_len=6),
            train=dataclasses.replace(FAST, ema_decay=decay),
        )
        forecaster = Forecaster(config)
        return forecaster, forecaster.fit(wide_frame, run_dir=run_dir)

    forecaster, result = fit(0.9, tmp_path / "run")
    _, plain = fit(0.0, tmp_path / "plain")
    # the same seed and data: validation differs only because it scores the average
    assert [h["val_loss"] for h in result.history] != [h["val_loss"] for h in plain.history]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert last["average"] is not None
    assert (
        load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.safetensors")["average"] is None
    )
    # the model keeps the best validated average, not the last step's weights
    for name, value in forecaster.model.state_dict().items():
        torch.testing.assert_close(value, best["model"][name], rtol=0, atol=0)
    assert any(
        not torch.equal(last["model"][name], value)
        for name, value in forecaster.model.state_dict().items()
    )
    forecaster.save(tmp_path / "f.safetensors")
    loaded = Forecaster.load_from(tmp_path / "f.safetensors")
    assert loaded.config.train.ema_decay == 0.9
    pd.testing.assert_frame_equal(loaded.predict(wide_frame), forecaster.predict(wide_frame))
