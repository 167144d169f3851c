"""FID's statistics and Frechet distance, and the Inception Score (`sngan.metrics.formulas`), against
pytorch-fid's own distance and by hand."""

import subprocess
import sys

import numpy as np
import pytest

from sngan.errors import SnganError
from sngan.metrics import formulas


@pytest.mark.parametrize("n", [300, 40])  # more images than dimensions, and fewer (singular covariance)
def test_frechet_distance_equals_pytorch_fids(n):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n)
    d = 64
    mix = rng.normal(size=(d, d))
    m1, s1 = formulas.statistics(rng.normal(size=(n, d)) @ mix)
    m2, s2 = formulas.statistics(rng.normal(0.3, 1, size=(n, d)) @ (mix + 0.5 * rng.normal(size=(d, d))))
    ours = formulas.frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-6)
    assert formulas.frechet_distance(m2, s2, m1, s1) == pytest.approx(ours, rel=1e-7)  # symmetric, to round-off
    assert formulas.frechet_distance(m1, s1, m2, s2, sqrt_sigma2=formulas.sqrt_psd(s2)) == ours
    assert abs(formulas.frechet_distance(m1, s1, m1, s1)) < 1e-7 * ours


def test_frechet_distance_by_hand():
    """Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 4 + (1 + 1 + 9)
    assert formulas.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(SnganError, match="NaN or infinite"):
        formulas.frechet_distance(mu1, np.diag([1.0, np.nan, 1.0]), mu2, np.diag(b))
    with pytest.raises(SnganError, match="different dimensions"):
        formulas.frechet_distance(mu1, np.diag(a), mu2[:2], np.diag(b[:2]))


def test_statistics_are_numpys_mean_and_covariance():
    x = np.random.default_rng(0).normal(size=(5, 3))
    mu, sigma = formulas.statistics(x)
    np.testing.assert_array_equal(mu, x.mean(axis=0))
    np.testing.assert_array_equal(sigma, np.cov(x, rowvar=False))
    with pytest.raises(SnganError, match="at least 2 images"):
        formulas.statistics(x[:1])


def test_inception_score_by_hand():
    assert formulas.inception_score(np.zeros((20, 1008))) == pytest.approx((1.0, 0.0))
    k = 10
    confident = 50.0 * np.eye(1008)[np.arange(100) % k]  # every split holds each of k classes once
    mean, std = formulas.inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
    assert formulas.inception_score(confident[:k], splits=1)[0] == pytest.approx(k, rel=1e-6)
    assert formulas.inception_score(confident[:3], splits=10) == pytest.approx((1.0, 0.0))  # 3 splits of 1


def test_metrics_need_no_torch():
    """The maths is numpy alone: importing it pulls in neither torch nor pytorch-fid."""
    code = "import sys, sngan.metrics.formulas; sys.exit(int(any(m in sys.modules for m in ('torch', 'pytorch_fid'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------------
# KID and precision/recall, against torch-fidelity's own functions on the same features


def _feature_sets(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(generated, real) features. `random`: non-negative and correlated like pool3 features.
    `lattice`: small integer points with many duplicates, so distances tie exactly and the
    closed balls (`<=`) and the leaving out of the sample itself decide the counts."""
    rng = np.random.default_rng(3)
    if kind == "random":
        mix = rng.normal(size=(32, 32))
        return np.abs(rng.normal(size=(120, 32)) @ mix) / 4, np.abs(rng.normal(0.3, 1, size=(90, 32)) @ mix) / 4
    return rng.integers(0, 4, size=(60, 4)).astype(np.float64), rng.integers(1, 5, size=(70, 4)).astype(np.float64)


@pytest.mark.parametrize("kind", ["random", "lattice"])
def test_kid_equals_torch_fidelitys(kind):
    """Same features in float64, same draws: torch-fidelity's KID to ~1e-12 relative (measured
    ~1e-13; with its float32 features the two differ by ~2e-6 relative, its round-off)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    gen, real = _feature_sets(kind)
    theirs = kid_features_to_metric(torch_tensor(gen), torch_tensor(real), kid_subsets=10, kid_subset_size=50,
                                    verbose=False)
    mean, std = formulas.kernel_inception_distance(gen, real, subsets=10, subset_size=50)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-10)
    assert mean > 0 and std > 0  # a case that tests something


def test_kid_uses_torch_fidelitys_defaults_and_the_smaller_side():
    """Defaults: 100 subsets of 1000, seed 2020. With fewer images than 1000, subsets are as big
    as the smaller side (torch-fidelity refuses; told that size, it agrees)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    gen, real = _feature_sets("random")
    theirs = kid_features_to_metric(torch_tensor(gen), torch_tensor(real), kid_subset_size=90, verbose=False)
    assert formulas.kid_subset_size(len(gen), len(real)) == 90
    mean, std = formulas.kernel_inception_distance(gen, real)
    assert (mean, std) == pytest.approx((theirs["kernel_inception_distance_mean"],
                                         theirs["kernel_inception_distance_std"]), rel=1e-10)


@pytest.mark.parametrize("kind", ["random", "lattice"])
@pytest.mark.parametrize("block", [formulas.PR_BLOCK, 7])  # one block, and rows split across many
def test_precision_recall_equal_torch_fidelitys(kind, block, monkeypatch):
    """Exactly torch-fidelity's counts (k = 3), ties on the lattice included."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    monkeypatch.setattr(formulas, "PR_BLOCK", block)
    gen, real = _feature_sets(kind)
    theirs = prc_features_to_metric(torch_tensor(gen), torch_tensor(real), verbose=False)
    precision, recall = formulas.precision_recall(gen, real)
    # torch-fidelity averages in float32; the counts themselves are equal.
    assert round(precision * len(gen)) == round(theirs["precision"] * len(gen))
    assert round(recall * len(real)) == round(theirs["recall"] * len(real))
    assert 0 < precision < 1 and 0 < recall < 1  # a case that tests something
    assert (precision, recall) != formulas.precision_recall(real, gen)  # generated and real are not swapped


def test_precision_recall_memory_is_one_block_of_distances(monkeypatch):
    """Distances are made PR_BLOCK rows at a time and dropped: peak memory stays near one
    block, not N_gen x N_real (here 60 x 4000 float64 is 1.9 MB, one block of 10 is 0.3 MB)."""
    import tracemalloc

    monkeypatch.setattr(formulas, "PR_BLOCK", 10)
    rng = np.random.default_rng(0)
    gen, real = rng.normal(size=(60, 2)), rng.normal(size=(4000, 2))
    tracemalloc.start()
    try:
        formulas.precision_recall(gen, real)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    block = 8 * 10 * len(real)
    assert peak < 2 * block + 4 * real.nbytes, (peak, block)


def test_a_set_against_itself():
    """KID of a set with itself is ~0 next to another distribution's; with subsets of the whole
    set it is exactly the unbiased estimate's -2 (mean diag K - mean K) / (m - 1). Every sample
    lies in its own ball, so precision and recall are 1."""
    rng = np.random.default_rng(3)
    x, y = np.abs(rng.normal(size=(400, 16))), np.abs(rng.normal(0.5, 1, size=(400, 16)))
    same = formulas.kernel_inception_distance(x, x, subsets=20, subset_size=100)[0]
    assert abs(same) < 0.2 * formulas.kernel_inception_distance(x, y, subsets=20, subset_size=100)[0]
    k = (x @ x.T / 16 + 1) ** 3
    whole = formulas.kernel_inception_distance(x, x, subsets=2, subset_size=400)
    assert whole == pytest.approx((-2 * (np.diag(k).mean() - k.mean()) / 399, 0), rel=1e-9, abs=1e-12)
    assert formulas.precision_recall(x, x) == (1.0, 1.0)
    lattice, _ = _feature_sets("lattice")
    assert formulas.precision_recall(lattice, lattice) == (1.0, 1.0)


@pytest.mark.parametrize("gen, real, fragment", [
    (np.zeros((1, 8)), np.zeros((5, 8)), "at least 2 images on each side, got 1 and 5"),
    (np.zeros((5, 8)), np.zeros((5, 4)), r"of one D, got \(5, 8\) and \(5, 4\)"),
    (np.zeros(5), np.zeros((5, 8)), "two \\(N, D\\) feature arrays"),
    (np.full((5, 8), np.nan), np.zeros((5, 8)), "NaN or infinite"),
])
def test_kid_errors(gen, real, fragment):
    with pytest.raises(SnganError, match=fragment):
        formulas.kernel_inception_distance(gen, real)


def test_precision_recall_errors():
    with pytest.raises(SnganError, match="k=3 needs at least 4 images on each side, got 4 and 3"):
        formulas.precision_recall(np.zeros((4, 8)), np.zeros((3, 8)))
    with pytest.raises(SnganError, match="NaN or infinite"):
        formulas.precision_recall(np.zeros((5, 8)), np.full((5, 8), np.inf))


def torch_tensor(x: np.ndarray):
    """float64 tensor: torch-fidelity computes in its input's dtype."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))
