"""Tests for lstmkit.data.timeseries: golden frames, every validation message, fills, file I/O."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmkit.data.series_loading import load_series, read_table
from lstmkit.data.timeseries import (
    FILL_STRATEGIES,
    Series,
    SeriesSet,
    SeriesSpec,
    check_min_length,
)


def _long_frame() -> pd.DataFrame:
    """Two stores, rows shuffled in time, a future covariate and a static one."""
    return pd.DataFrame(
        {
            "store": ["a", "a", "a", "b", "b", "b", "a"],
            "date": [
                "2020-01-03",
                "2020-01-01",
                "2020-01-02",
                "2020-01-01",
                "2020-01-02",
                "2020-01-03",
                "2020-01-04",
            ],
            "sales": [3.0, 1.0, 2.0, 10.0, 20.0, 30.0, 4.0],
            "promo": [0, 1, 0, 1, 1, 0, 0],
            "size": [5, 5, 5, 7, 7, 7, 5],
        }
    )


LONG_SPEC = SeriesSpec(
    time_col="date",
    targets="sales",
    id_col="store",
    future_covariates="promo",
    static_covariates="size",
)


def _wide_frame(rows: int = 6) -> pd.DataFrame:
    """Hourly ETT-like frame: two targets and one past covariate."""
    return pd.DataFrame(
        {
            "date": pd.date_range("2020-01-01", periods=rows, freq="h").astype(str),
            "OT": np.arange(rows, dtype=float),
            "HUFL": np.arange(rows, dtype=float) * 10,
            "load": np.arange(rows, dtype=float) + 0.5,
        }
    )


WIDE_SPEC = SeriesSpec(time_col="date", targets=["OT", "HUFL"], past_covariates=["load"])


def _gappy_frame() -> pd.DataFrame:
    """Hourly series with 02:00 missing and a NaN target at 04:00 and covariate at 00:00."""
    return pd.DataFrame(
        {
            "date": [
                "2020-01-01 00:00",
                "2020-01-01 01:00",
                "2020-01-01 03:00",
                "2020-01-01 04:00",
                "2020-01-01 05:00",
            ],
            "y": [0.0, 1.0, 3.0, np.nan, 5.0],
            "x": [np.nan, 10.0, 30.0, 40.0, 50.0],
        }
    )


def _gappy_spec(fill: str, freq: str | None = "h") -> SeriesSpec:
    return SeriesSpec(time_col="date", targets="y", past_covariates="x", freq=freq, fill=fill)


# --------------------------------------------------------------------------- golden frames


def test_long_format_golden() -> None:
    series_set = load_series(_long_frame(), LONG_SPEC)
    assert series_set.freq == "D"
    assert series_set.ids == ["a", "b"]  # first-appearance order
    assert series_set.report == []
    a, b = series_set
    assert list(a.time) == list(pd.date_range("2020-01-01", periods=4, freq="D"))
    assert a.target.dtype == np.float64  # the data's own values, unrounded
    np.testing.assert_array_equal(a.target, [[1.0], [2.0], [3.0], [4.0]])  # sorted by time
    np.testing.assert_array_equal(a.future, [[1.0], [0.0], [0.0], [0.0]])
    assert a.past.shape == (4, 0)
    np.testing.assert_array_equal(a.static, [5.0])
    np.testing.assert_array_equal(b.target[:, 0], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(b.static, [7.0])
    assert len(a) == 4 and len(b) == 3 and len(series_set) == 2


def test_wide_format_golden_is_one_multivariate_series() -> None:
    series_set = load_series(_wide_frame(), WIDE_SPEC)
    assert series_set.freq == "h"
    assert series_set.ids == ["series"]
    (series,) = series_set
    assert series.target.shape == (6, 2)
    np.testing.assert_array_equal(series.target[:, 1], np.arange(6) * 10)
    np.testing.assert_array_equal(series.past[:, 0], np.arange(6) + 0.5)
    assert series.future.shape == (6, 0) and series.static.shape == (0,)


def test_integer_ids_become_strings() -> None:
    frame = _long_frame().assign(store=[1, 1, 1, 2, 2, 2, 1])
    assert load_series(frame, LONG_SPEC).ids == ["1", "2"]


def test_given_freq_is_used() -> None:
    frame = pd.DataFrame({"date": ["2020-01-01", "2020-02-01", "2020-03-01"], "y": [1, 2, 3]})
    assert load_series(frame, SeriesSpec("date", "y", freq="MS")).freq == "MS"
    assert load_series(frame, SeriesSpec("date", "y")).freq == "MS"


def test_freq_is_inferred_from_series_without_gaps() -> None:
    frame = _long_frame().drop(index=2)  # series a now misses 2020-01-02
    with pytest.raises(ValueError, match=r"series 'a' has 1 missing timestamp\(s\) for freq 'D'"):
        load_series(frame, LONG_SPEC)


# --------------------------------------------------------------------------- spec


def test_spec_normalises_names_and_round_trips_through_json() -> None:
    spec = SeriesSpec("date", ["OT", "HUFL"], past_covariates="load", freq="15min", fill="ffill")
    assert spec.targets == ("OT", "HUFL") and spec.past_covariates == ("load",)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["targets"] == ["OT", "HUFL"]
    assert SeriesSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"fill": "bfill"},
            r"fill must be one of \('none', 'ffill', 'interpolate', 'zero'\), got 'bfill'",
        ),
        ({"targets": []}, "targets must name at least one column, got none"),
        (
            {"past_covariates": ["OT"]},
            "column 'OT' is used in two roles: targets and past_covariates",
        ),
        ({"id_col": "date"}, "column 'date' is used in two roles: time_col and id_col"),
        ({"targets": ["OT", "OT"]}, "column 'OT' is used twice in targets"),
        ({"freq": "hourly"}, "freq 'hourly' is not a pandas offset alias"),
        ({"targets": [1]}, "targets must hold non-empty column names \\(str\\), got 1"),
    ],
)
def test_spec_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"time_col": "date", "targets": "OT", **kwargs}
    with pytest.raises(ValueError, match=message):
        SeriesSpec(**arguments)  # type: ignore[arg-type]


def test_fill_strategies_are_the_documented_ones() -> None:
    assert FILL_STRATEGIES == ("none", "ffill", "interpolate", "zero")


def test_spec_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown SeriesSpec key\(s\) \['target'\]; known keys"):
        SeriesSpec.from_dict({"time_col": "date", "target": "OT"})


# --------------------------------------------------------------------------- column errors


def test_missing_columns_are_listed_with_the_available_ones() -> None:
    spec = SeriesSpec("date", ["OT", "x"], past_covariates="y")
    with pytest.raises(
        ValueError,
        match=r"column\(s\) \['x', 'y'\] not found; available columns: "
        r"\['date', 'OT', 'HUFL', 'load'\]",
    ):
        load_series(_wide_frame(), spec)


def test_empty_frame() -> None:
    with pytest.raises(ValueError, match=r"frame is empty \(0 rows\)"):
        load_series(_wide_frame().iloc[:0], WIDE_SPEC)


def test_unparseable_time_names_column_value_and_row() -> None:
    frame = _wide_frame()
    frame.loc[4, "date"] = "yesterday"
    with pytest.raises(
        ValueError, match="time column 'date' has unparseable value 'yesterday' at row 4"
    ):
        load_series(frame, WIDE_SPEC)


def test_time_in_another_format_than_the_first_row() -> None:
    frame = _wide_frame()
    frame.loc[3, "date"] = "01/01/2020 03:00"
    with pytest.raises(ValueError, match="in the format of the first value '2020-01-01 00:00:00'"):
        load_series(frame, WIDE_SPEC)


def test_missing_time_value() -> None:
    frame = _wide_frame()
    frame.loc[2, "date"] = None
    with pytest.raises(ValueError, match="time column 'date' has a missing value at row 2"):
        load_series(frame, WIDE_SPEC)


def test_numeric_time_column_is_refused() -> None:
    frame = _wide_frame().assign(date=range(6))
    with pytest.raises(ValueError, match="time column 'date' has numeric dtype int64"):
        load_series(frame, WIDE_SPEC)


def test_non_numeric_target_names_column_row_and_value() -> None:
    frame = _wide_frame(rows=20)
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[17, "OT"] = "abc"
    with pytest.raises(
        ValueError, match="target column 'OT' has non-numeric value 'abc' at row 17"
    ):
        load_series(frame, WIDE_SPEC)


def test_non_numeric_covariate_names_its_role() -> None:
    frame = _wide_frame()
    frame["load"] = frame["load"].astype(object)
    frame.loc[2, "load"] = "n/a"
    with pytest.raises(
        ValueError, match="past covariate column 'load' has non-numeric value 'n/a' at row 2"
    ):
        load_series(frame, WIDE_SPEC)


def test_infinite_value_is_refused() -> None:
    frame = _wide_frame()
    frame.loc[3, "HUFL"] = np.inf
    with pytest.raises(ValueError, match="target column 'HUFL' has non-finite value inf at row 3"):
        load_series(frame, WIDE_SPEC)


def test_duplicate_timestamps_name_series_timestamp_and_count() -> None:
    frame = _long_frame()
    frame.loc[2, "date"] = "2020-01-01"  # a: 01-01 twice
    with pytest.raises(
        ValueError,
        match=r"series 'a' has 1 duplicate timestamp\(s\); first: 2020-01-01 00:00:00 "
        "appears 2 times",
    ):
        load_series(frame, LONG_SPEC)


def test_duplicate_timestamps_in_wide_format_hint_at_id_col() -> None:
    frame = pd.concat([_wide_frame(), _wide_frame()], ignore_index=True)
    with pytest.raises(ValueError, match=r"appears 2 times \(for long-format data, set id_col\)"):
        load_series(frame, WIDE_SPEC)


def test_static_covariate_must_be_constant_within_a_series() -> None:
    frame = _long_frame()
    frame.loc[4, "size"] = 8  # series b, 2020-01-02
    with pytest.raises(
        ValueError,
        match=r"static covariate column 'size' is not constant within series 'b': it takes "
        r"values \[7.0, 8.0\] \(first change at 2020-01-02 00:00:00\)",
    ):
        load_series(frame, LONG_SPEC)


def test_missing_id_value() -> None:
    frame = _long_frame()
    frame.loc[3, "store"] = None
    with pytest.raises(ValueError, match="id column 'store' has a missing value at row 3"):
        load_series(frame, LONG_SPEC)


def test_ids_that_collide_as_text() -> None:
    frame = _long_frame().assign(store=[1, 1, 1, "1", "1", "1", 1])
    with pytest.raises(ValueError, match="distinct values with the same text"):
        load_series(frame, LONG_SPEC)


# --------------------------------------------------------------------------- grid and fills


def test_missing_timestamp_with_fill_none() -> None:
    with pytest.raises(
        ValueError,
        match=r"series 'series' has 1 missing timestamp\(s\) for freq 'h'; first gap at "
        r"2020-01-01 02:00:00 \(after 2020-01-01 01:00:00\); set fill to one of "
        r"\('ffill', 'interpolate', 'zero'\)",
    ):
        load_series(_gappy_frame(), _gappy_spec("none"))


def test_nan_with_fill_none_names_column_count_and_timestamp() -> None:
    frame = _gappy_frame().assign(date=pd.date_range("2020-01-01", periods=5, freq="h"))
    frame.loc[1, "y"] = np.nan  # and 04:00 -> 03:00 is NaN already: 2 NaNs, no gap
    with pytest.raises(
        ValueError,
        match=r"target column 'y' of series 'series' has 2 NaN value\(s\), first at "
        "2020-01-01 01:00:00",
    ):
        load_series(frame, _gappy_spec("none"))


@pytest.mark.parametrize(
    ("fill", "target", "covariate"),
    [
        ("ffill", [0, 1, 1, 3, 3, 5], [10, 10, 10, 30, 40, 50]),  # leading NaN back-filled
        ("interpolate", [0, 1, 2, 3, 4, 5], [10, 10, 20, 30, 40, 50]),
        ("zero", [0, 1, 0, 3, 0, 5], [0, 10, 0, 30, 40, 50]),
    ],
)
def test_fill_strategies_golden(fill: str, target: list[float], covariate: list[float]) -> None:
    series_set = load_series(_gappy_frame(), _gappy_spec(fill))
    (series,) = series_set
    assert list(series.time) == list(pd.date_range("2020-01-01", periods=6, freq="h"))
    np.testing.assert_array_equal(series.target[:, 0], np.asarray(target, dtype=np.float32))
    np.testing.assert_array_equal(series.past[:, 0], np.asarray(covariate, dtype=np.float32))
    assert series_set.report == [
        f"series 'series': 1 missing timestamp(s) filled by {fill} (first 2020-01-01 02:00:00)",
        f"series 'series': column 'y' had 1 NaN value(s) filled by {fill} "
        "(first 2020-01-01 04:00:00)",
        f"series 'series': column 'x' had 1 NaN value(s) filled by {fill} "
        "(first 2020-01-01 00:00:00)",
    ]


def test_fill_notes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lstmkit.data.series_loading"):
        load_series(_gappy_frame(), _gappy_spec("ffill"))
    assert "1 missing timestamp(s) filled by ffill" in caplog.text


def test_column_that_is_all_nan_cannot_be_filled() -> None:
    frame = _gappy_frame().assign(x=np.nan)
    with pytest.raises(
        ValueError, match=r"past covariate column 'x' of series 'series' has no values at all"
    ):
        load_series(frame, _gappy_spec("ffill"))


def test_frequency_that_cannot_be_inferred_reports_the_most_common_step() -> None:
    with pytest.raises(
        ValueError,
        match=r"cannot infer the frequency: .* the most common step is 0 days 01:00:00 "
        r"\(3 times\); pass freq explicitly, e.g. freq='h'",
    ):
        load_series(_gappy_frame(), _gappy_spec("ffill", freq=None))


def test_monthly_data_dated_mid_month_gets_told_how_to_fit_a_grid() -> None:
    months = pd.date_range("2020-01-01", periods=30, freq="MS")
    frame = pd.DataFrame({"t": months + pd.Timedelta(days=14), "y": np.arange(30.0)})
    spec = SeriesSpec(time_col="t", targets="y")
    with pytest.raises(ValueError, match=r"\.dt\.to_period\('M'\)\.dt\.to_timestamp\(\), the 'MS'"):
        load_series(frame, spec)
    frame["t"] = frame["t"].dt.to_period("M").dt.to_timestamp()  # as the message says
    assert load_series(frame, spec).freq == "MS"
    gappy = frame.drop(index=[3, 4, 5, 17])  # on month starts already, with gaps: give freq
    with pytest.raises(ValueError, match=r"pass freq explicitly, e.g. freq='MS' \(with a fill"):
        load_series(gappy, spec)
    filled = load_series(gappy, SeriesSpec(time_col="t", targets="y", freq="MS", fill="ffill"))
    assert len(filled[0]) == 30


def test_series_that_disagree_on_the_frequency() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a"] * 3 + ["b"] * 3,
            "t": [
                *("2020-01-01", "2020-01-02", "2020-01-03"),
                *("2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 02:00"),
            ],
            "y": range(6),
        }
    )
    frame["t"] = pd.to_datetime(frame["t"], format="mixed")
    with pytest.raises(
        ValueError, match=r"series disagree on the inferred frequency: \{'a': 'D', 'b': 'h'\}"
    ):
        load_series(frame, SeriesSpec("t", "y", id_col="id"))


@pytest.mark.parametrize("fill", FILL_STRATEGIES)
def test_off_grid_timestamp_is_always_an_error(fill: str) -> None:
    frame = _wide_frame()
    frame.loc[3, "date"] = "2020-01-01 10:30:00"
    with pytest.raises(
        ValueError,
        match=r"series 'series' has 1 timestamp\(s\) off the regular 'h' grid starting at "
        "2020-01-01 00:00:00; first: 2020-01-01 10:30:00",
    ):
        load_series(frame, SeriesSpec("date", "OT", freq="h", fill=fill))


def test_first_timestamp_off_a_calendar_grid() -> None:
    frame = pd.DataFrame({"date": ["2020-01-15", "2020-02-01"], "y": [1, 2]})
    with pytest.raises(
        ValueError, match="series 'series' starts at 2020-01-15 00:00:00, which is not on the 'MS'"
    ):
        load_series(frame, SeriesSpec("date", "y", freq="MS"))


# --------------------------------------------------------------------------- set helpers


def test_check_min_length_names_series_length_and_minimum() -> None:
    series_set = load_series(_long_frame(), LONG_SPEC)
    check_min_length(series_set, 3, "one window")
    with pytest.raises(
        ValueError,
        match=r"series 'b' has 3 steps, fewer than one window \(input 2 \+ horizon 2 = 4\)$",
    ):
        check_min_length(series_set, 4, "one window (input 2 + horizon 2 = 4)")
    with pytest.raises(
        ValueError,
        match=r"series 'a' has 4 steps, fewer than the minimum \(5 steps\) "
        r"\(and 1 other short series\)",
    ):
        check_min_length(series_set, 5)


def test_slice_time_is_positional_per_series() -> None:
    series_set = load_series(_long_frame(), LONG_SPEC)
    head = series_set.slice_time(0, 2)
    assert head.lengths == [2, 2]
    np.testing.assert_array_equal(head[0].target[:, 0], [1.0, 2.0])
    tail = series_set.slice_time(-1, None)
    np.testing.assert_array_equal([s.target[0, 0] for s in tail], [4.0, 30.0])
    assert tail[0].time[0] == pd.Timestamp("2020-01-04")
    assert tail.spec == series_set.spec and tail.freq == "D"
    with pytest.raises(ValueError, match=r"slice_time\(3, None\) leaves series 'b' \(length 3\)"):
        series_set.slice_time(3, None)


def test_large_values_are_not_rounded() -> None:
    """float32 would turn 1e8 + 75 into 100000072: the baselines and metrics use these values."""
    frame = pd.DataFrame(
        {"t": pd.date_range("2020-01-01", periods=5, freq="D"), "y": 1e8 + np.arange(75.0, 80.0)}
    )
    (series,) = load_series(frame, SeriesSpec(time_col="t", targets="y"))
    np.testing.assert_array_equal(series.target[:, 0], 1e8 + np.arange(75.0, 80.0))


def test_series_checks_array_shapes() -> None:
    time = pd.date_range("2020-01-01", periods=3, freq="D")
    with pytest.raises(ValueError, match=r"series 'x' past must have shape \(3, C\), got \(2, 1\)"):
        Series("x", time, np.zeros((3, 1)), np.zeros((2, 1)), np.zeros((3, 0)), np.zeros(0))
    series = Series("x", time, np.zeros((3, 1)), np.zeros((3, 0)), np.zeros((3, 0)), np.zeros(0))
    assert series.target.dtype == np.float64
    scaled = Series("x", time, np.zeros((3, 1), np.float32), np.zeros((3, 0)), np.zeros((3, 0)), [])
    assert scaled.target.dtype == np.float32  # float32 (scaled values) stays float32
    assert isinstance(SeriesSet(WIDE_SPEC, "D", [series]).report, list)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt", ".parquet", ".pq"])
def test_read_table_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = _long_frame()
    path = tmp_path / f"data{suffix}"
    if suffix in (".parquet", ".pq"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    loaded = load_series(read_table(path), LONG_SPEC)
    expected = load_series(frame, LONG_SPEC)
    assert loaded.ids == expected.ids
    for got, want in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(got.target, want.target)
        np.testing.assert_array_equal(got.static, want.static)


def test_read_table_sniffs_the_separator_of_txt(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    _wide_frame().to_csv(path, index=False, sep=";")
    assert list(read_table(path).columns) == ["date", "OT", "HUFL", "load"]


def test_read_table_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"unsupported suffix '.xlsx'; supported suffixes: "
        r"\['.csv', '.tsv', '.txt', '.parquet', '.pq'\]",
    ):
        read_table(tmp_path / "data.xlsx")


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file: .*nope.csv"):
        read_table(tmp_path / "nope.csv")
