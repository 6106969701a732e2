import numpy as np
import pytest

from curator.exceptions import ValidationError
from curator.forecast import fit_curve, forecast


def test_fit_recovers_a_known_power_law():
    n = np.array([20, 40, 80, 160, 320, 640], dtype=float)
    true = 0.01 + 2.0 * n**-0.7
    noisy = true * (1 + np.random.default_rng(0).normal(0, 0.01, len(n)))
    curve = fit_curve(n, noisy)
    assert abs(curve.b - 0.7) < 0.1 and abs(curve.c - 0.01) < 0.01
    # extrapolation to 4x the largest point stays within 15% of the truth
    assert abs(curve(2560) - (0.01 + 2.0 * 2560**-0.7)) / (0.01 + 2.0 * 2560**-0.7) < 0.15


def test_forecast_band_brackets_the_truth_and_unreachable_targets():
    n = np.array([20, 30, 40, 50, 60, 70, 80, 90, 100], dtype=float)
    err = 0.02 + 3.0 * n**-0.8 + np.random.default_rng(1).normal(0, 0.003, len(n))
    f = forecast(n, err, target=0.06)
    truth = ((0.06 - 0.02) / 3.0) ** (-1 / 0.8)
    assert f.low <= truth <= f.high
    assert f.more_labels == pytest.approx(f.labels_needed - 100)
    assert "more labels" in f.summary() and not f.summary().startswith("rough")
    below_floor = forecast(n, err, target=0.001)
    assert np.isinf(below_floor.labels_needed) and "out of reach" in below_floor.summary()
    assert f.payoff_limit > 100


def test_forecast_bad_input():
    with pytest.raises(ValidationError, match="at least 3 points"):
        fit_curve([10, 20], [0.5, 0.4])
    with pytest.raises(ValidationError, match="target error"):
        forecast([10, 20, 30], [0.5, 0.4, 0.3], target=5)
    with pytest.raises(ValidationError, match="finite"):
        fit_curve([10, 20, 30], [0.5, np.nan, 0.3])


def test_few_points_are_called_a_rough_guess():
    n = np.array([20, 30, 40, 50], dtype=float)
    f = forecast(n, 0.02 + 3.0 * n**-0.8, target=0.06)
    assert f.points == 4 and f.summary().startswith("rough, from 4 points: ")


def test_noisy_short_curves_get_no_offset_but_a_long_floor_does():
    rng = np.random.default_rng(2)
    short = np.array([20, 50, 80, 110, 140, 170], dtype=float)
    noisy = 2.5 * short**-0.75 * np.exp(rng.normal(0, 0.1, len(short)))
    assert fit_curve(short, noisy).c == 0.0  # six noisy points cannot tell a floor from noise
    long = np.geomspace(20, 20000, 12)
    floored = 0.03 + 3.0 * long**-0.8
    assert fit_curve(long, floored).c == pytest.approx(0.03, abs=0.003)
    assert np.isfinite(fit_curve(short, np.r_[noisy[:-1], 0.0]).a)  # an error of 0 still fits


def test_errors_that_do_not_fall_give_an_answer_not_a_crash():
    rising = forecast([20, 30, 40, 50], [0.10, 0.20, 0.30, 0.35], target=0.05)
    assert "has not fallen" in rising.summary() and np.isinf(rising.labels_needed)
    flat = fit_curve([20, 30, 40], [0.2, 0.2, 0.2])
    assert flat.labels_for(0.3) == 0.0 and np.isinf(flat.labels_for(0.1))


def test_any_learning_curve_gets_a_summary():
    rng = np.random.default_rng(5)
    for _ in range(200):
        k = int(rng.integers(3, 12))
        n = np.cumsum(rng.integers(1, 40, k)) + 10
        e = np.clip(rng.choice([0.3, 0.05, 0.5]) * rng.random(k) ** rng.choice([0.2, 1, 3]), 0, 1)
        f = forecast(n, e, target=float(rng.choice([0.01, 0.05, 0.2])), n_boot=20, seed=int(rng.integers(99)))
        assert isinstance(f.summary(), str) and f.labels_needed >= 0
