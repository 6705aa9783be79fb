"""Tests for lstmkit.data.scaling: exact inverse, train-only fitting, state round trip, errors."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.utils.data import DataLoader

from lstmkit.data.scaling import SCALERS, SeriesScaler
from lstmkit.data.timeseries import Series, SeriesSet, SeriesSpec
from lstmkit.data.windowing import WindowDataset

SPEC = SeriesSpec("date", ["y", "z"], past_covariates="p", static_covariates="s")


def _series_set(targets: list[np.ndarray], pasts: list[np.ndarray] | None = None) -> SeriesSet:
    """A SeriesSet of hand-built series: targets (T_i, C), pasts (T_i, 1), static [i]."""
    series = []
    for index, target in enumerate(targets):
        steps = target.shape[0]
        past = pasts[index] if pasts is not None else np.arange(steps, dtype=float)[:, None]
        series.append(
            Series(
                id=f"s{index}",
                time=pd.date_range("2020-01-01", periods=steps, freq="D"),
                target=target,
                past=past,
                future=np.zeros((steps, 0)),
                static=np.array([float(index)]),
            )
        )
    return SeriesSet(SPEC, "D", series)


def _example() -> SeriesSet:
    first = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [100.0, -5.0]])  # (4, 2)
    second = np.array([[0.0, 4.0], [4.0, 8.0], [8.0, 12.0]])  # (3, 2)
    return _series_set([first, second])


# --------------------------------------------------------------------------- fitting


def test_standard_fits_on_the_training_part_only() -> None:
    series_set = _example()
    scaler = SeriesScaler("standard").fit(series_set, stop=3)
    scaled = scaler.transform(series_set)
    train = scaled[0].target[:3]  # (3, 2)
    np.testing.assert_allclose(train[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
    np.testing.assert_array_equal(train[:, 1], [0.0, 0.0, 0.0])  # constant: std 1
    np.testing.assert_allclose(scaled[0].target[3], [(100 - 2) / np.sqrt(2 / 3), -15.0])
    np.testing.assert_allclose(scaled[1].target.mean(axis=0), [0.0, 0.0], atol=1e-7)
    assert scaled[0].target.dtype == np.float32


def test_values_after_stop_do_not_change_the_statistics() -> None:
    series_set = _example()
    changed = _example()
    changed[0].target[3] = [1e6, -1e6]
    changed[1].past[2] = 123.0
    for kind in SCALERS:
        before = SeriesScaler(kind).fit(series_set, stop=[3, 2]).state_dict()
        after = SeriesScaler(kind).fit(changed, stop=[3, 2]).state_dict()
        assert before == after


def test_minmax_maps_the_training_range_to_unit_interval() -> None:
    series_set = _example()
    scaled = SeriesScaler("minmax").fit(series_set, stop=3).transform(series_set)
    np.testing.assert_array_equal(scaled[0].target[:3, 0], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(scaled[1].target[:3, 1], [0.0, 0.5, 1.0])
    assert scaled[0].target[3, 0] == pytest.approx(49.5)  # past the training range: > 1
    np.testing.assert_array_equal(scaled[0].past[:3, 0], [0.0, 0.5, 1.0])


def test_none_is_the_identity() -> None:
    series_set = _example()
    scaled = SeriesScaler("none").fit(series_set).transform(series_set)
    np.testing.assert_array_equal(scaled[0].target, series_set[0].target)
    np.testing.assert_array_equal(scaled[1].static, series_set[1].static)
    standard = SeriesScaler().fit(series_set).transform(series_set)
    assert standard.ids == series_set.ids and standard.spec == series_set.spec


@pytest.mark.parametrize(
    "kind,expected",
    [("standard", [-1.2247449, 0.0, 1.2247449]), ("minmax", [0.0, 0.5, 1.0]), ("none", [1, 2, 3])],
)
def test_static_covariates_share_statistics_across_the_series(kind, expected) -> None:
    """A store size of 100 to 300 fed raw swamps the scaled inputs: the static values are
    scaled by statistics of all the fitted series, and a series selected later keeps them."""
    values = [1.0, 2.0, 3.0] if kind == "none" else [100.0, 200.0, 300.0]
    targets = [np.arange(8.0).reshape(4, 2) for _ in values]
    fitted = SeriesSet(
        SPEC,
        "D",
        [
            replace(series, static=np.array([value]))
            for series, value in zip(_series_set(targets), values, strict=True)
        ],
    )
    scaler = SeriesScaler(kind).fit(fitted, stop=2)
    got = [float(series.static[0]) for series in scaler.transform(fitted)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    alone = SeriesSet(SPEC, "D", [fitted[2]])
    np.testing.assert_allclose(scaler.select(["s2"]).transform(alone)[0].static, expected[2:])


def test_static_covariates_round_trip_and_old_states_pass_them_through() -> None:
    series_set = _example()  # static 0.0 and 1.0
    scaler = SeriesScaler().fit(series_set)
    state = json.loads(json.dumps(scaler.state_dict()))
    restored = SeriesScaler.from_state_dict(state)
    np.testing.assert_allclose([x.static[0] for x in restored.transform(series_set)], [-1, 1])
    state.pop("static")  # as saved before static covariates were scaled
    old = SeriesScaler.from_state_dict(state)
    np.testing.assert_array_equal([x.static[0] for x in old.transform(series_set)], [0.0, 1.0])


def test_a_missing_static_value_is_refused() -> None:
    series_set = _example()
    missing = replace(series_set[1], static=np.array([np.nan]))
    broken = SeriesSet(SPEC, "D", [series_set[0], missing])
    with pytest.raises(ValueError, match="series 's1' has a NaN or infinite static covariate"):
        SeriesScaler().fit(broken)


def test_constant_channel_gets_scale_one_and_a_log_note(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lstmkit.data.scaling"):
        scaler = SeriesScaler("minmax").fit(_example(), stop=3)
    assert "series 's0' target channel 1 is constant on its training part" in caplog.text
    assert scaler.state_dict()["target"]["scale"][0][1] == 1.0  # type: ignore[index]


def test_transform_returns_a_new_set() -> None:
    series_set = _example()
    original = series_set[0].target.copy()
    SeriesScaler().fit(series_set).transform(series_set)
    np.testing.assert_array_equal(series_set[0].target, original)


# --------------------------------------------------------------------------- inverse


@st.composite
def _series_sets(draw: st.DrawFn) -> tuple[SeriesSet, list[int]]:
    """1-3 series of 2-12 steps and 1-3 target channels, with a training end each."""
    channels = draw(st.integers(1, 3))
    targets, stops = [], []
    for _ in range(draw(st.integers(1, 3))):
        steps = draw(st.integers(2, 12))
        values = hnp.arrays(
            np.float32,
            (steps, channels),
            elements=st.floats(-1e4, 1e4, allow_nan=False, width=32),
        )
        targets.append(draw(values))
        stops.append(draw(st.integers(1, steps)))
    return _series_set(targets), stops


@given(case=_series_sets(), kind=st.sampled_from(SCALERS))
@settings(max_examples=60, deadline=None)
def test_inverse_of_transform_is_exact_to_float32_precision(
    case: tuple[SeriesSet, list[int]], kind: str
) -> None:
    series_set, stops = case
    scaler = SeriesScaler(kind).fit(series_set, stop=stops)
    scaled = scaler.transform(series_set)
    for index, (original, transformed) in enumerate(zip(series_set, scaled, strict=True)):
        restored = scaler.inverse_target(transformed.target, index)  # numpy in, numpy out
        assert isinstance(restored, np.ndarray) and restored.dtype == np.float32
        tolerance = 1e-6 * (np.abs(original.target).max() + 1.0)
        np.testing.assert_allclose(restored, original.target, rtol=1e-6, atol=tolerance)


def test_inverse_target_on_a_torch_batch() -> None:
    series_set = _example()
    scaler = SeriesScaler().fit(series_set, stop=[3, 2])
    dataset = WindowDataset(scaler.transform(series_set), input_len=1, horizon=2)
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    restored = scaler.inverse_target(batch["target"], batch["series"])  # (B, H, 2)
    assert isinstance(restored, torch.Tensor) and restored.dtype == torch.float32
    raw = next(iter(DataLoader(WindowDataset(series_set, input_len=1, horizon=2), batch_size=9)))
    torch.testing.assert_close(restored, raw["target"], rtol=1e-6, atol=1e-4)


def test_inverse_target_channel_independent() -> None:
    series_set = _example()
    scaler = SeriesScaler().fit(series_set, stop=[3, 2])
    scaled = scaler.transform(series_set)
    dataset = WindowDataset(scaled, input_len=1, horizon=2, channel_independent=True)
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    restored = scaler.inverse_target(batch["target"][..., 0], batch["series"], batch["channel"])
    raw = WindowDataset(series_set, input_len=1, horizon=2, channel_independent=True)
    expected = torch.stack([raw[i]["target"][:, 0] for i in range(len(raw))])  # (B, H)
    torch.testing.assert_close(restored, expected, rtol=1e-6, atol=1e-4)


def test_inverse_target_is_differentiable() -> None:
    scaler = SeriesScaler("minmax").fit(_example(), stop=3)
    values = torch.zeros(2, 3, 2, requires_grad=True)
    scaler.inverse_target(values, torch.tensor([0, 1])).sum().backward()
    assert values.grad is not None
    torch.testing.assert_close(values.grad[1, 0], torch.tensor([8.0, 8.0]))  # the scales


# --------------------------------------------------------------------------- state


def test_state_dict_round_trips_through_json() -> None:
    series_set = _example()
    scaler = SeriesScaler("minmax").fit(series_set, stop=[3, 2])
    state = json.loads(json.dumps(scaler.state_dict()))
    assert state["ids"] == ["s0", "s1"] and state["stops"] == [3, 2]
    restored = SeriesScaler.from_state_dict(state)
    assert restored.kind == "minmax"
    for got, want in zip(restored.transform(series_set), scaler.transform(series_set), strict=True):
        np.testing.assert_array_equal(got.target, want.target)
        np.testing.assert_array_equal(got.past, want.past)


def test_load_state_dict_checks_keys_and_scales() -> None:
    state = SeriesScaler().fit(_example()).state_dict()
    with pytest.raises(ValueError, match=r"scaler state is missing key\(s\) \['ids'\]"):
        SeriesScaler.from_state_dict({k: v for k, v in state.items() if k != "ids"})
    state["past"] = {"loc": [[0.0], [0.0]], "scale": [[1.0], [0.0]]}
    with pytest.raises(ValueError, match="scaler state 'past': scales must be finite and > 0"):
        SeriesScaler.from_state_dict(state)


# --------------------------------------------------------------------------- errors


def test_unknown_kind_lists_the_scalers() -> None:
    with pytest.raises(
        ValueError, match=r"kind must be one of \('standard', 'minmax', 'none'\), got 'robust'"
    ):
        SeriesScaler("robust")


def test_transform_before_fit() -> None:
    with pytest.raises(ValueError, match="SeriesScaler is not fitted; call fit"):
        SeriesScaler().transform(_example())
    with pytest.raises(ValueError, match="SeriesScaler is not fitted"):
        SeriesScaler().inverse_target(np.zeros((2, 2)), 0)


def test_series_count_and_order_must_match_the_fit() -> None:
    scaler = SeriesScaler().fit(_example())
    one = _series_set([np.zeros((3, 2))])
    with pytest.raises(
        ValueError, match="the scaler was fitted on 2 series, got a SeriesSet with 1"
    ):
        scaler.transform(one)
    swapped = SeriesSet(SPEC, "D", list(reversed(_example().series)))
    with pytest.raises(ValueError, match="series 0 is 's1' but the scaler was fitted with 's0'"):
        scaler.transform(swapped)


@pytest.mark.parametrize(
    ("stop", "message"),
    [
        (5, "stop for series 's0' is 5, beyond its length 4"),
        (0, "stop for series 's0' must be an integer >= 1, got 0"),
        ([3], "stop has 1 values but there are 2 series"),
    ],
)
def test_fit_stop_errors(stop: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SeriesScaler().fit(_example(), stop=stop)  # type: ignore[arg-type]


def test_inverse_target_argument_errors() -> None:
    scaler = SeriesScaler().fit(_example())
    with pytest.raises(ValueError, match=r"values must be \(\.\.\., H, n_targets=2\)"):
        scaler.inverse_target(np.zeros((3, 5)), 0)
    with pytest.raises(ValueError, match=r"series_index must lie in \[0, 1\], got 2"):
        scaler.inverse_target(np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match=r"channel must lie in \[0, 1\], got 3"):
        scaler.inverse_target(np.zeros(3), 0, channel=3)


def test_eps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="eps must be a positive number, got 0"):
        SeriesScaler(eps=0)
