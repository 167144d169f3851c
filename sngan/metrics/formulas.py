"""FID (pytorch-fid's formula), the Inception Score, and KID and precision/recall (torch-fidelity's
conventions, so the same features give the same numbers) from Inception features: numpy, no torch.
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
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's to ~1e-8 relative:

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    sigma1 sigma2 is similar to the symmetric PSD M = S sigma1 S with S = sigma2^(1/2), so the trace
    term is the sum of the square roots of M's eigenvalues: two `eigh` instead of SciPy's `sqrtm`,
    2 s instead of 11 s at 2048-d on two CPU cores, and exact for singular covariances (fewer images
    than dimensions). `sqrt_sigma2` (`sqrt_psd(sigma2)`) saves one `eigh` per call against one reference.
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
    """Inception Score of `(N, C)` logits: mean and std over `splits` equal parts (N parts of one sample,
    each scoring 1, when N < splits). Per part: exp(mean_i KL(p(y|x_i) || p(y))), p(y) the part's mean."""
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


KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED = 100, 1000, 2020  # torch-fidelity's defaults, so numbers compare
PR_NEIGHBOURS = 3  # Kynkaanniemi et al. 2019
# Rows per block of distances in precision/recall: memory is about one PR_BLOCK x max(N_gen, N_real)
# float64 block (80 MB per 10,000 images) besides the features, instead of all N_gen x N_real.
PR_BLOCK = 1000


def _feature_pair(generated: np.ndarray, real: np.ndarray, what: str, least: int) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 `(N, D)`, or a one-line error naming `what` is wrong with them."""
    generated, real = np.asarray(generated, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise SnganError(f"{what} needs two (N, D) feature arrays of one D, got {generated.shape} and {real.shape}")
    if min(len(generated), len(real)) < least:
        raise SnganError(f"{what} needs at least {least} images on each side, got {len(generated)} and {len(real)}")
    if not (np.isfinite(generated).all() and np.isfinite(real).all()):
        raise SnganError(f"{what}: the features contain NaN or infinite values (non-finite images?)")
    return generated, real


def kid_subset_size(num_gen: int, num_real: int, subset_size: int = KID_SUBSET_SIZE) -> int:
    """The subset size KID uses: `subset_size`, or the smaller side when it has fewer images.
    (torch-fidelity refuses that case instead; with full subsets the numbers are equal.)"""
    return min(subset_size, num_gen, num_real)


def kernel_inception_distance(generated: np.ndarray, real: np.ndarray, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = KID_SEED) -> tuple[float, float]:
    """KID (Binkowski et al. 2018) of `(N, D)` feature sets: (mean, std) over `subsets` of the unbiased
    MMD^2 under the kernel k(x, y) = (x.y / D + 1)^3, on subsets of `kid_subset_size(...)` per side drawn
    with RandomState(seed) in torch-fidelity's order (generated, then real), in float64."""
    generated, real = _feature_pair(generated, real, "KID", 2)
    (n1, d), n2 = generated.shape, len(real)
    m = kid_subset_size(n1, n2, subset_size)
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = generated[rng.choice(n1, m, replace=False)]
        y = real[rng.choice(n2, m, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        # Unbiased: within-set sums leave out the diagonal (a sample with itself).
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        mmds[i] = within - 2 * k_xy.sum() / (m * m)
    return float(mmds.mean()), float(mmds.std())


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances `(len(a), len(b))` of float64 rows."""
    d = a @ b.T
    d *= -2  # in place from here on: one (len(a), len(b)) array at a time, not five
    d += (a * a).sum(1)[:, None]
    d += (b * b).sum(1)[None, :]
    np.clip(d, 0, None, out=d)  # round-off can make a distance to oneself slightly negative
    return np.sqrt(d, out=d)


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest neighbour in `x`, itself excluded: index k of the
    sorted row, whose index 0 is the row itself (torch-fidelity's `kthvalue(k + 1)`)."""
    radii = np.empty(len(x))
    for i in range(0, len(x), PR_BLOCK):
        block = _distances(x[i:i + PR_BLOCK], x)
        block.partition(k, axis=1)  # in place, and copied out below so no block outlives its turn
        radii[i:i + PR_BLOCK] = block[:, k]
    return radii


def precision_recall(generated: np.ndarray, real: np.ndarray, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of `(N, D)` feature sets.

    Each sample's closed ball reaches its k-th nearest neighbour in its own set. Precision: the
    fraction of generated samples inside some real ball; recall: of real samples inside some
    generated ball. Distances are computed `PR_BLOCK` rows at a time, never all N_gen x N_real."""
    generated, real = _feature_pair(generated, real, f"precision/recall with k={k}", k + 1)
    radius_gen, radius_real = _radii(generated, k), _radii(real, k)
    inside_real = np.zeros(len(generated), dtype=bool)  # precision's test, per generated sample
    covered = np.zeros(len(real), dtype=bool)  # recall's test, per real sample
    for i in range(0, len(generated), PR_BLOCK):
        cross = _distances(generated[i:i + PR_BLOCK], real)  # one matrix serves both tests, as in torch-fidelity
        inside_real[i:i + PR_BLOCK] = (cross <= radius_real[None, :]).any(axis=1)
        covered |= (cross <= radius_gen[i:i + PR_BLOCK, None]).any(axis=0)
    return float(inside_real.mean()), float(covered.mean())
