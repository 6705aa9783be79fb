"""Forecast metrics and baselines against values computed by hand."""

import math

import numpy as np
import pytest

from lstmkit.tasks.forecasting import metrics as M

Y = np.array([2.0, 4.0, 5.0, 0.0])
Y_HAT = np.array([1.0, 5.0, 5.0, 1.0])  # errors -1, +1, 0, +1


def test_point_metrics_by_hand():
    assert M.mae(Y, Y_HAT) == pytest.approx(3 / 4)
    assert M.mse(Y, Y_HAT) == pytest.approx(3 / 4)
    assert M.rmse(Y, Y_HAT) == pytest.approx(math.sqrt(3 / 4))
    # MAPE skips y = 0: (1/2 + 1/4 + 0) / 3 = 0.25 -> 25 %
    assert M.mape(Y, Y_HAT) == pytest.approx(25.0)
    # sMAPE: 200/4 * (1/3 + 1/9 + 0 + 1/1)
    assert M.smape(Y, Y_HAT) == pytest.approx(50.0 * (1 / 3 + 1 / 9 + 1.0))


def test_mase_uses_the_in_sample_seasonal_naive_error():
    history = np.array([1.0, 3.0, 2.0, 6.0])  # period 2: |2-1| + |6-3| = 4 over 2 -> scale 2
    assert M.mase_scale(history, 2) == pytest.approx(2.0)
    assert M.mase(Y, Y_HAT, 2.0) == pytest.approx(0.75 / 2.0)
    assert M.mase_scale(history, 1) == pytest.approx((2 + 1 + 4) / 3)
    with pytest.raises(ValueError, match="MASE needs a history longer than the period 4, got 4"):
        M.mase_scale(history, 4)


def test_coverage_and_pinball():
    assert M.coverage(Y, Y - 0.5, Y_HAT) == pytest.approx(3 / 4)  # only y=2 > 1.0 falls out
    # quantile 0.9: under-forecast costs 0.9 per unit, over-forecast 0.1
    assert M.pinball(np.array([1.0, 1.0]), np.array([0.0, 2.0]), 0.9) == pytest.approx(0.5)


def test_baselines():
    history = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    np.testing.assert_array_equal(M.naive_forecast(history, 3), [[5.0], [5.0], [5.0]])
    np.testing.assert_array_equal(
        M.seasonal_naive_forecast(history, 5, 2), [[4.0], [5.0], [4.0], [5.0], [4.0]]
    )
    with pytest.raises(ValueError, match=r"at least one season \(12 steps\)"):
        M.seasonal_naive_forecast(history, 3, 12)


def test_skill():
    assert M.skill(1.0, 4.0) == pytest.approx(0.75)
    assert M.skill(5.0, 4.0) == pytest.approx(-0.25)
    assert math.isnan(M.skill(1.0, 0.0))


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"same shape, got \(4,\) and \(3,\)"):
        M.mae(Y, Y_HAT[:3])
