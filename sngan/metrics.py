"""The numbers of FID and the Inception Score, from Inception features: pure numpy, no torch.

The statistics are pytorch-fid's, and the Frechet distance is the same formula, evaluated
through symmetric eigendecompositions instead of SciPy's general `sqrtm`, about 6x faster.
"""

from __future__ import annotations

import numpy as np

from sngan.errors import SnganError


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(N, D)` features -> mean `(D,)` and covariance `(D, D)`, exactly as pytorch-fid."""
    if len(features) < 2:
        raise SnganError(f"FID needs at least 2 images, got {len(features)}")
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance matrix (round-off negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     sqrt_sigma2: np.ndarray | None = None) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), the quantity pytorch-fid computes:

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    sigma1 sigma2 is similar to the symmetric PSD matrix M = S sigma1 S with S = sigma2^(1/2), so
    the trace of its square root is the sum of the square roots of M's eigenvalues. Two symmetric
    eigendecompositions (`eigh`) replace SciPy's Schur-based `sqrtm` of a general matrix: about
    2 s instead of 11 s at 2048-d on two CPU cores, and exact where `sqrtm` struggles (covariances
    of fewer images than dimensions are singular). Pass `sqrt_sigma2` (`sqrt_psd(sigma2)`) to
    reuse it across calls against one reference. Agrees with pytorch-fid to ~1e-8 relative.
    """
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise SnganError(f"statistics have different dimensions ({mu1.shape[0]} vs {mu2.shape[0]}); "
                         "both must be 2048-d pool3 statistics (pytorch-fid --dims 2048)")
    arrays = (mu1, sigma1, mu2, sigma2)
    if not all(np.isfinite(a).all() for a in arrays):
        raise SnganError("statistics contain NaN or infinite values; recompute them (non-finite images "
                         "or a damaged statistics file)")
    mu1, sigma1, mu2, sigma2 = (np.asarray(a, dtype=np.float64) for a in arrays)
    s = sqrt_psd(sigma2) if sqrt_sigma2 is None else sqrt_sigma2
    eig = np.linalg.eigvalsh(s @ sigma1 @ s)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score of `(N, C)` logits: mean and std over `splits` equal parts.

    Per part: exp(mean_i KL(p(y|x_i) || p(y))), with p(y) the part's mean prediction. With fewer
    samples than `splits`, there are N parts of one sample each (and an IS of 1 each).
    """
    logits = np.asarray(logits, dtype=np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log-softmax
    n, splits = len(log_p), min(splits, len(log_p))
    scores = []
    for k in range(splits):  # the same contiguous parts as the original TF implementation
        part = log_p[k * n // splits:(k + 1) * n // splits]
        log_py = np.log(np.exp(part).mean(axis=0))
        kl = (np.exp(part) * (part - log_py)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
