"""FID's statistics and Frechet distance, and the Inception Score (`sngan.metrics`), against
pytorch-fid's own distance and by hand."""

import subprocess
import sys

import numpy as np
import pytest

from sngan import metrics
from sngan.errors import SnganError


@pytest.mark.parametrize("n", [300, 40])  # more images than dimensions, and fewer (singular covariance)
def test_frechet_distance_equals_pytorch_fids(n):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n)
    d = 64
    mix = rng.normal(size=(d, d))
    m1, s1 = metrics.statistics(rng.normal(size=(n, d)) @ mix)
    m2, s2 = metrics.statistics(rng.normal(0.3, 1, size=(n, d)) @ (mix + 0.5 * rng.normal(size=(d, d))))
    ours = metrics.frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-6)
    assert metrics.frechet_distance(m2, s2, m1, s1) == pytest.approx(ours, rel=1e-7)  # symmetric, to round-off
    assert metrics.frechet_distance(m1, s1, m2, s2, sqrt_sigma2=metrics.sqrt_psd(s2)) == ours
    assert abs(metrics.frechet_distance(m1, s1, m1, s1)) < 1e-7 * ours


def test_frechet_distance_by_hand():
    """Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 4 + (1 + 1 + 9)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(SnganError, match="NaN or infinite"):
        metrics.frechet_distance(mu1, np.diag([1.0, np.nan, 1.0]), mu2, np.diag(b))
    with pytest.raises(SnganError, match="different dimensions"):
        metrics.frechet_distance(mu1, np.diag(a), mu2[:2], np.diag(b[:2]))


def test_statistics_are_numpys_mean_and_covariance():
    x = np.random.default_rng(0).normal(size=(5, 3))
    mu, sigma = metrics.statistics(x)
    np.testing.assert_array_equal(mu, x.mean(axis=0))
    np.testing.assert_array_equal(sigma, np.cov(x, rowvar=False))
    with pytest.raises(SnganError, match="at least 2 images"):
        metrics.statistics(x[:1])


def test_inception_score_by_hand():
    assert metrics.inception_score(np.zeros((20, 1008))) == pytest.approx((1.0, 0.0))
    k = 10
    confident = 50.0 * np.eye(1008)[np.arange(100) % k]  # every split holds each of k classes once
    mean, std = metrics.inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
    assert metrics.inception_score(confident[:k], splits=1)[0] == pytest.approx(k, rel=1e-6)
    assert metrics.inception_score(confident[:3], splits=10) == pytest.approx((1.0, 0.0))  # 3 splits of 1


def test_metrics_need_no_torch():
    """The maths is numpy alone: importing it pulls in neither torch nor pytorch-fid."""
    code = "import sys, sngan.metrics; sys.exit(int(any(m in sys.modules for m in ('torch', 'pytorch_fid'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
