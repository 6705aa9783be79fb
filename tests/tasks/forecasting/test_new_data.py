"""A fitted forecaster on data other than its training frame: known-future covariates over the
horizon, a subset or reordering of its series, and data it cannot use."""

import numpy as np
import pandas as pd
import pytest

from lstmkit.tasks.forecasting import Forecaster

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
    import dataclasses

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
