"""Tests for lstmkit.data.windowing: window starts, dataset items against hand-built arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lstmkit.data.timeseries import Series, SeriesSet, SeriesSpec
from lstmkit.data.windowing import SeriesArrays, Window, WindowDataset, window_starts


def _arrays(length: int = 10, offset: float = 0.0) -> SeriesArrays:
    """Values that encode their position: target[t] = [t, 100 + t] (+ offset), etc."""
    steps = np.arange(length, dtype=np.float32)[:, None] + offset  # (T, 1)
    return SeriesArrays(
        target=np.concatenate([steps, 100 + steps], axis=1),  # (T, 2)
        past=-steps,  # (T, 1)
        future=np.concatenate([1000 + steps, 2000 + steps], axis=1),  # (T, 2)
        static=np.array([offset, 7.0], dtype=np.float32),  # (2,)
    )


# --------------------------------------------------------------------------- window_starts


def test_window_starts_golden_with_stride() -> None:
    np.testing.assert_array_equal(window_starts(10, 3, 2, stride=2), [0, 2, 4])
    np.testing.assert_array_equal(window_starts(10, 3, 2), [0, 1, 2, 3, 4, 5])
    assert window_starts(10, 3, 2).dtype == np.int64


def test_first_target_lets_inputs_look_back() -> None:
    starts = window_starts(10, 3, 2, first_target=7)
    np.testing.assert_array_equal(starts, [4, 5])  # targets begin at 7 and 8
    np.testing.assert_array_equal(window_starts(10, 3, 2, stride=2, first_target=5), [2, 4])


def test_first_target_before_input_len_starts_at_zero() -> None:
    np.testing.assert_array_equal(window_starts(10, 3, 2, first_target=1), window_starts(10, 3, 2))


def test_no_window_fits() -> None:
    assert window_starts(4, 3, 2).size == 0
    assert window_starts(10, 3, 2, first_target=9).size == 0  # 9 + horizon 2 > 10


@given(
    length=st.integers(0, 40),
    input_len=st.integers(1, 8),
    horizon=st.integers(1, 8),
    stride=st.integers(1, 5),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_window_starts_property(
    length: int, input_len: int, horizon: int, stride: int, data: st.DataObject
) -> None:
    first_target = data.draw(st.integers(0, length))
    starts = window_starts(length, input_len, horizon, stride, first_target)
    everything = [
        s
        for s in range(length)
        if s + input_len >= first_target and s + input_len + horizon <= length
    ]
    assert starts.tolist() == everything[::stride]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride": 0}, "stride must be an integer >= 1, got 0"),
        ({"input_len": 0}, "input_len must be an integer >= 1, got 0"),
        ({"horizon": 2.0}, "horizon must be an integer >= 1, got 2.0 of type float"),
        ({"first_target": -1}, "first_target must be an integer >= 0, got -1"),
        ({"first_target": 11}, r"first_target must be <= length 10 \(the series end\), got 11"),
    ],
)
def test_window_starts_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"length": 10, "input_len": 3, "horizon": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        window_starts(**arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- WindowDataset


def test_item_shapes_and_values_against_hand_built_arrays() -> None:
    dataset = WindowDataset([_arrays(10), _arrays(8, offset=0.5)], input_len=3, horizon=2)
    assert len(dataset) == 6 + 4
    assert dataset.windows[6] == Window(series_index=1, start=0)
    item = dataset[8]  # series 1, start 2: input steps 2..4, target steps 5..6
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "past_target": (3, 2),
        "past_covariates": (3, 3),
        "future_covariates": (2, 2),
        "static": (2,),
        "target": (2, 2),
        "series": (),
        "start": (),
    }
    assert all(v.dtype == torch.float32 for k, v in item.items() if k not in ("series", "start"))
    steps_in = torch.tensor([2.5, 3.5, 4.5])
    steps_out = torch.tensor([5.5, 6.5])
    torch.testing.assert_close(item["past_target"], torch.stack([steps_in, 100 + steps_in], 1))
    torch.testing.assert_close(
        item["past_covariates"],  # past covariate first, then the future ones
        torch.stack([-steps_in, 1000 + steps_in, 2000 + steps_in], 1),
    )
    torch.testing.assert_close(
        item["future_covariates"], torch.stack([1000 + steps_out, 2000 + steps_out], 1)
    )
    torch.testing.assert_close(item["target"], torch.stack([steps_out, 100 + steps_out], 1))
    torch.testing.assert_close(item["static"], torch.tensor([0.5, 7.0]))
    assert item["series"].dtype == torch.int64 and int(item["series"]) == 1
    assert int(item["start"]) == 2


def test_items_do_not_alias_the_series() -> None:
    arrays = _arrays(10)
    item = WindowDataset([arrays], input_len=3, horizon=2)[0]
    item["target"].add_(1.0)
    item["past_target"].add_(1.0)
    assert arrays.target[3, 0] == 3.0 and arrays.target[0, 0] == 0.0


def test_per_series_first_target_and_last() -> None:
    dataset = WindowDataset(
        [_arrays(10), _arrays(12)], input_len=3, horizon=2, first_target=[7, 8], last=[10, 11]
    )
    assert [(w.series_index, w.start) for w in dataset.windows] == [(0, 4), (0, 5), (1, 5), (1, 6)]
    assert int(dataset[3]["target"][-1, 0]) == 10  # last=11 is exclusive


def test_default_collate_batches_items() -> None:
    dataset = WindowDataset([_arrays(10)], input_len=3, horizon=2, stride=2)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["past_target"].shape == (3, 3, 2)
    assert batch["future_covariates"].shape == (3, 2, 2)
    assert batch["start"].tolist() == [0, 2, 4]


def test_channel_independence_gives_one_sample_per_channel() -> None:
    dataset = WindowDataset(
        [_arrays(10), _arrays(8, offset=0.5)], input_len=3, horizon=2, channel_independent=True
    )
    assert dataset.n_channels == 2
    assert len(dataset) == len(dataset.windows) * 2 == 20
    first, second = dataset[0], dataset[1]  # same window, channels 0 and 1
    assert first["past_target"].shape == (3, 1) and first["target"].shape == (2, 1)
    assert int(first["channel"]) == 0 and int(second["channel"]) == 1
    torch.testing.assert_close(second["target"][:, 0], torch.tensor([103.0, 104.0]))
    torch.testing.assert_close(first["past_covariates"], second["past_covariates"])
    last = dataset[-1]
    assert (int(last["series"]), int(last["start"]), int(last["channel"])) == (1, 3, 1)
    torch.testing.assert_close(last["target"][:, 0], torch.tensor([106.5, 107.5]))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["channel"].tolist() == [0, 1, 0, 1]


def test_built_from_a_series_set() -> None:
    time = pd.date_range("2020-01-01", periods=6, freq="D")
    arrays = _arrays(6)
    series = Series("a", time, arrays.target, arrays.past, arrays.future, arrays.static)
    spec = SeriesSpec("date", ["y", "z"])
    dataset = WindowDataset(SeriesSet(spec, "D", [series]), input_len=2, horizon=1, stride=3)
    assert [w.start for w in dataset.windows] == [0, 3]


def test_index_out_of_range() -> None:
    dataset = WindowDataset([_arrays(6)], input_len=3, horizon=2)
    with pytest.raises(IndexError, match="index 2 out of range for 2 samples"):
        dataset[2]


def test_series_without_windows_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    WindowDataset([_arrays(10), _arrays(4)], input_len=3, horizon=2)
    assert "series 1 gives no window: 4 usable steps" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": []}, "data must hold at least one series, got none"),
        (
            {"data": [_arrays(3)]},
            r"no window fits: input_len 3 \+ horizon 2 = 5 steps .*series lengths \[3\]",
        ),
        ({"last": 11}, "last for series 0 is 11, beyond the series length 10"),
        ({"first_target": [1, 2]}, "first_target has 2 values but there are 1 series"),
        ({"first_target": -2}, "first_target for series 0 must be an integer >= 0, got -2"),
        ({"stride": 0}, "stride must be an integer >= 1, got 0"),
    ],
)
def test_dataset_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"data": [_arrays(10)], "input_len": 3, "horizon": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        WindowDataset(**arguments)  # type: ignore[arg-type]


def test_series_must_share_channel_counts() -> None:
    narrow = SeriesArrays(np.zeros((10, 1)), np.zeros((10, 1)), np.zeros((10, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="series 1 has 1 target channel\\(s\\), series 0 has 2"):
        WindowDataset([_arrays(10), narrow], input_len=3, horizon=2)


def test_series_arrays_must_share_a_length() -> None:
    bad = SeriesArrays(np.zeros((10, 1)), np.zeros((9, 1)), np.zeros((10, 0)), np.zeros(0))
    with pytest.raises(ValueError, match="series 0 past has 9 steps but its target has 10"):
        WindowDataset([bad], input_len=3, horizon=2)
