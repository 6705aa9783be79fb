"""A fitted forecaster on data other than its training frame: known-future covariates over the
horizon, a subset or reordering of its series, and data it cannot use."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from lstmkit.tasks.forecasting import DataConfig, ForecastConfig, Forecaster, ModelConfig, evaluate
from lstmkit.training import TrainConfig

from .conftest import make_long_frame
from .test_forecaster import long_config


@pytest.fixture(scope="module")
def fitted():
    """A forecaster with past, known-future and static covariates, and the full frame; it is
    fitted on all but the last week, which `predict` forecasts."""
    frame = make_long_frame()
    head = frame[frame.groupby("store").cumcount(ascending=False) >= 7]
    forecaster = Forecaster(long_config())
    forecaster.fit(head)
    return forecaster, frame, head


def _last_week(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.groupby("store").cumcount(ascending=False) < 7]


def test_predict_reads_the_future_covariates_of_the_horizon(fitted):
    forecaster, frame, head = fitted
    future = _last_week(frame)[["date", "store", "promo"]]
    table = forecaster.predict(head, future=future.sample(frac=1.0, random_state=0))
    assert len(table) == 3 * 7
    assert list(table["time"].iloc[:7]) == list(future["date"].iloc[:7])
    # the same forecasts as the windows of the full frame whose origin is the head's end, where
    # the promotions of the last week sit in the frame itself
    full = forecaster.load(frame)
    scaler = forecaster.scaler_for(full)
    ends = [len(s) for s in full.series]
    windows = forecaster.windows(scaler.transform(full), [e - 7 for e in ends], ends, stride=1)
    expected = forecaster.forecast_windows(windows, scaler=scaler)[..., 1]  # (3, 7, 1) median
    np.testing.assert_allclose(table["forecast"].to_numpy(), expected.reshape(-1), rtol=1e-5)
    # other promotions give other forecasts: the covariates are read, not ignored
    changed = future.assign(promo=1.0 - future["promo"])
    assert not np.allclose(forecaster.predict(head, future=changed)["forecast"], table["forecast"])


def test_predict_without_or_with_bad_future_covariates(fitted):
    forecaster, frame, head = fitted
    future = _last_week(frame)[["date", "store", "promo"]]
    with pytest.raises(ValueError, match=r"reads the known-future covariates \['promo'\]"):
        forecaster.predict(head)
    with pytest.raises(ValueError, match=r"future is missing column\(s\) \['promo'\]"):
        forecaster.predict(head, future=future.drop(columns="promo"))
    with pytest.raises(ValueError, match=r"series 's1' must cover the 7 steps after its end"):
        forecaster.predict(head, future=future.drop(index=future.index[8]))
    with pytest.raises(ValueError, match="future has no rows for series 's2'"):
        forecaster.predict(head, future=future[future["store"] != "s2"])
    with pytest.raises(ValueError, match="future covariates must be numbers"):
        forecaster.predict(head, future=future.assign(promo="yes"))
    bad_date = future.astype({"date": str}).reset_index(drop=True)
    bad_date.loc[3, "date"] = "2020-13-28"
    with pytest.raises(
        ValueError,
        match="future covariates table: time column 'date' has unparseable value '2020-13-28' "
        "at row 3",
    ):
        forecaster.predict(head, future=bad_date)


def test_any_subset_of_the_series_in_any_order(fitted):
    forecaster, frame, head = fitted
    future = _last_week(frame)[["date", "store", "promo"]]
    everything = forecaster.predict(head, future=future)
    reordered = head[head["store"] != "s0"].iloc[::-1]  # s2 first, then s1
    part = forecaster.predict(reordered, future=future)
    assert list(part["series"].unique()) == ["s2", "s1"]
    for store in ("s1", "s2"):
        np.testing.assert_allclose(
            part.loc[part["series"] == store, "forecast"].to_numpy(),
            everything.loc[everything["series"] == store, "forecast"].to_numpy(),
            rtol=1e-6,
        )
    stranger = head.assign(store=head["store"].replace("s1", "s9"))
    with pytest.raises(ValueError, match=r"series \['s9'\] was not among the 3 series"):
        forecaster.predict(
            stranger, future=future.assign(store=future["store"].replace("s1", "s9"))
        )


def test_data_at_another_frequency_is_refused(fitted):
    forecaster, _, head = fitted
    hourly = head.assign(
        date=head.groupby("store")
        .cumcount()
        .map(lambda k: pd.Timestamp("2020-01-01") + pd.Timedelta(hours=k))
    )
    with pytest.raises(ValueError, match="frequency is 'h' but the forecaster was fitted on 'D'"):
        forecaster.predict(hourly, future=hourly[["date", "store", "promo"]])


def test_a_config_with_a_short_test_part_is_refused_where_data_is_split(tmp_path):
    """The check sits in split(), not in the config, so a forecaster saved before it existed
    (with a test part shorter than the horizon) still loads and predicts."""
    config = long_config(future_covariates=())
    short = dataclasses.replace(config, data=dataclasses.replace(config.data, test_size=3))
    with pytest.raises(ValueError, match="data.test_size is 3, shorter than the horizon 7"):
        Forecaster(short).fit(make_long_frame())
    forecaster = Forecaster(config)
    forecaster.fit(make_long_frame())
    forecaster.config = short  # as an older version would have saved it
    forecaster.save(tmp_path / "f.safetensors")
    loaded = Forecaster.load_from(tmp_path / "f.safetensors")
    assert len(loaded.predict(make_long_frame())) == 3 * 7


def test_future_rows_are_checked_only_where_they_are_read(fitted):
    forecaster, frame, head = fitted
    future = _last_week(frame)[["date", "store", "promo"]]
    later = future.assign(date=future["date"] + pd.Timedelta(days=30), promo=float("nan"))
    table = forecaster.predict(head, future=pd.concat([future, later, later]))  # NaN, repeats
    assert len(table) == 21
    with pytest.raises(ValueError, match=r"future covariates of series 's0' are NaN at"):
        forecaster.predict(
            head, future=future.assign(promo=future["promo"].where(future.index != future.index[2]))
        )
    with pytest.raises(ValueError, match="future has two rows for series 's0' at"):
        forecaster.predict(head, future=pd.concat([future, future.iloc[:1]]))
    aware = future.assign(date=future["date"].dt.tz_localize("UTC"))
    with pytest.raises(ValueError, match=r"timezone-aware \(UTC\) but the data's are not"):
        forecaster.predict(head, future=aware)


def test_gappy_new_data_is_read_at_the_fitted_frequency(fitted):
    """A gap leaves the frequency uninferable from the new data alone; the fitted one is used,
    and the gap is filled as configured (here: refused, since fill is "none")."""
    forecaster, frame, head = fitted
    future = _last_week(frame)[["date", "store", "promo"]]
    gappy = head.drop(index=head.index[[5, 90, 170]])  # one gap in each store
    with pytest.raises(ValueError, match="missing timestamp"):
        forecaster.predict(gappy, future=future)
    data = dataclasses.replace(forecaster.config.data, fill="interpolate")
    forecaster.config = dataclasses.replace(forecaster.config, data=data)
    try:
        assert len(forecaster.predict(gappy, future=future)) == 21
    finally:
        forecaster.config = long_config()


def test_evaluate_needs_only_the_history_it_reads(fitted):
    forecaster, frame, _ = fitted
    short = frame[frame.groupby("store").cumcount(ascending=False) < 14 + 7]  # input + test
    report = evaluate(forecaster, short)
    assert report["windows"] == 3 and report["fill_notes"] == 0
    with pytest.raises(ValueError, match=r"fewer than input_len 14 \+ test 7"):
        evaluate(forecaster, frame[frame.groupby("store").cumcount(ascending=False) < 20])


def test_a_season_longer_than_the_history_is_refused_before_training():
    times = pd.date_range("2021-01-01", periods=120, freq="15min")  # a season of 96 steps
    frame = pd.DataFrame({"t": times, "y": np.sin(np.arange(120) / 5.0)})
    config = ForecastConfig(
        data=DataConfig(time_col="t", targets="y", input_len=8, horizon=4, test_size=40),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(max_epochs=1),
    )
    forecaster = Forecaster(config)
    with pytest.raises(
        ValueError, match=r"period is 96 steps \(from the frequency .* only 80 steps before"
    ):
        forecaster.fit(frame)
    assert forecaster.model is None  # refused before any training
    too_long = dataclasses.replace(config.data, seasonal_period=90)
    with pytest.raises(ValueError, match=r"is 90 steps \(as set by data.seasonal_period\)"):
        Forecaster(dataclasses.replace(config, data=too_long)).fit(frame)
    fixed = dataclasses.replace(config, data=dataclasses.replace(config.data, seasonal_period=4))
    forecaster = Forecaster(fixed)
    forecaster.fit(frame)
    assert evaluate(forecaster, frame)["seasonal_period"] == 4


@pytest.mark.parametrize(
    "start,freq,read_as",
    [
        ("2021-03-27 20:00", "h", "instants"),  # hours: the same instants, in UTC
        ("2022-03-20", "D", "dates"),  # local midnights: in UTC one day would last 23 hours
    ],
)
def test_local_times_across_a_daylight_saving_change(tmp_path, start, freq, read_as):
    from lstmkit.data.series_loading import load_series, read_table
    from lstmkit.data.timeseries import SeriesSpec

    times = pd.date_range(start, periods=14, freq=freq, tz="Europe/Berlin")
    path = tmp_path / "berlin.csv"
    pd.DataFrame({"t": times.astype(str), "y": np.arange(14.0)}).to_csv(path, index=False)
    series = load_series(read_table(path), SeriesSpec(time_col="t", targets="y"))
    assert series.freq == freq and len(series[0]) == 14
    if read_as == "instants":
        assert series[0].time[0] == times[0]
    else:
        assert list(series[0].time) == list(times.tz_localize(None))


def test_later_data_read_with_an_offset_is_scored_after_dates_read_without(tmp_path):
    """Local-midnight dates across a daylight-saving change are read without a time zone; a
    later stretch with one offset is read with it. The held-out check compares clock times."""
    days = pd.date_range("2022-01-01", "2022-09-30", freq="D", tz="Europe/Berlin")
    frame = pd.DataFrame({"t": days.astype(str), "y": 10 + np.sin(np.arange(len(days)) / 5)})
    first, later = frame.iloc[:180], frame.iloc[180:]  # to 2022-06-29; July to September
    config = ForecastConfig(
        data=DataConfig(time_col="t", targets="y", input_len=14, horizon=7, test_size=7),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(max_epochs=1),
    )
    forecaster = Forecaster(config)
    forecaster.fit(first)
    assert forecaster.load(later)[0].time.tz is not None  # one offset: read with it
    assert np.isfinite(evaluate(forecaster, later)["model"]["mae"])
    with pytest.raises(ValueError, match="its test part starts at"):
        evaluate(forecaster, first.iloc[:170])


def test_quantiles_whose_columns_would_clash_are_refused():
    with pytest.raises(ValueError, match="give the same column name 'q0.1' twice"):
        ForecastConfig(data=long_config().data, quantiles=(0.1, 0.1000001, 0.9))


def test_predict_gives_the_ids_back_as_they_were_given():
    frame = make_long_frame()
    frame["store"] = frame["store"].map({"s0": 10, "s1": 11, "s2": 12})
    forecaster = Forecaster(long_config(future_covariates=()))
    forecaster.fit(frame)
    table = forecaster.predict(frame)
    assert table["series"].tolist()[::7] == [10, 11, 12]  # ints, ready to merge on
