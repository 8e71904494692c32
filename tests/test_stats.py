"""Statistics behind qzoo plot, against numbers worked out by hand."""

import numpy as np
import pytest

from qzoo import stats


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4
    assert stats.iqm([100, 0, 1, 2, -100, 3, 4, 5]) == pytest.approx(2.5)  # outliers do not count
    assert stats.iqm([7.0]) == 7.0


def test_bootstrap_ci_brackets_the_mean_and_collapses_on_constants():
    mean, low, high = stats.bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and low < mean < high and 1.0 <= low and high <= 5.0
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_stratified_bootstrap_keeps_each_env_in_every_resample():
    # Env "a" always scores 0 and env "b" always 1: any stratified resample pools four 0s and four 1s,
    # so the IQM is 0.5 every time and the interval has no width.
    point, low, high = stats.stratified_bootstrap_iqm({"a": [0, 0, 0, 0], "b": [1, 1, 1, 1]})
    assert (point, low, high) == (0.5, 0.5, 0.5)


def test_human_normalised_atari_and_reference_normalised_classic_control():
    normalised, scale = stats.normalise("SpaceInvadersNoFrameskip-v4", np.array([148.0, 1668.7]))
    assert normalised.tolist() == pytest.approx([0.0, 1.0]) and scale == "human-normalised"
    normalised, _ = stats.normalise("ALE/Pong-v5", np.array([14.6]))
    assert normalised.tolist() == pytest.approx([1.0])
    normalised, _ = stats.normalise("CartPole-v1", np.array([475.0]))
    assert normalised.tolist() == pytest.approx([1.0])


def test_band_of_identical_curves_has_no_width_and_smoothing_averages():
    mean, low, high = stats.bootstrap_band(np.array([[1.0, 2.0], [1.0, 2.0]]))
    assert mean.tolist() == low.tolist() == high.tolist() == [1.0, 2.0]
    assert stats.smooth(np.array([0.0, 2.0, 4.0, 6.0]), 2).tolist() == [0.0, 1.0, 3.0, 5.0]
