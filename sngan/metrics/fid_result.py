"""How a FID result states its protocol: metric names (`fid10k_cifar10-train`, `is50k`) and the
printed result, the metric first and then what was compared with what, by which detector."""

from __future__ import annotations

from sngan.data.datasets import REFERENCE_SIZES, REFERENCES


def count_label(n: int) -> str:
    """`10k` for whole thousands, else the raw count (`500`)."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_name(num_gen: int, ref: str, num_ref: int | None = 0, metric: str = "fid") -> str:
    """`fid<N>_<ref>[<M>]`: N generated samples against the named reference set `ref`, of which M
    images were used, stated unless they are the whole official split (`num_ref` 0: the whole split);
    or `custom` for a folder or .npz (its path and count are in the result). `fid5k_cifar10-train10k`
    is the paper's protocol; `fid50k_cifar10-train` the usual one; `fid5k_cifar10-test1017` a partial
    copy of the test split. `metric` names another comparison of the same sets: `kid`, `precision`, ..."""
    if ref not in REFERENCES:
        return f"{metric}{count_label(num_gen)}_custom"
    whole = not num_ref or num_ref == REFERENCE_SIZES[ref]
    return f"{metric}{count_label(num_gen)}_{ref}{'' if whole else count_label(num_ref)}"


def is_name(num: int) -> str:
    """`is<N>`: the Inception Score of N samples (10 splits of N/10); `is50k` is the paper's."""
    return f"is{count_label(num)}"


def format_result(result: dict) -> str:
    """The metric as `fid10k_cifar10-train = 24.31`, then its protocol on the following lines."""
    ref = result["ref"]
    if "split" in result:
        cached = ", statistics from cache" if result.get("ref_cached") else ""
        ref = f"{ref}: {result['split']} split at {result['resolution']}px{cached}"
    if "fid" not in result:
        return (f"wrote statistics of {result['num_ref']} reference images ({ref}) to "
                f"{result['saved_stats']}\n  detector {result['detector']} ({result['weights']})")
    num_ref = result["num_ref"] if result["num_ref"] is not None else "an unrecorded number of"
    lines = [
        f"{result['metric']} = {result['fid']:.2f}",
        f"  {result['num_gen']} generated images ({result['source']}) vs {num_ref} reference images ({ref})",
        f"  detector {result['detector']} ({result['weights']})",
    ]
    if "is_mean" in result:
        n, splits = result["num_gen"], result["is_splits"]
        per_split = n // splits if n % splits == 0 else f"{n // splits}-{n // splits + 1}"  # as the splits fall
        lines.append(f"  {result['is_metric']} = {result['is_mean']:.2f} ± {result['is_std']:.2f} (IS over "
                     f"{n} samples in {splits} splits of {per_split}; "
                     "the paper's IS is over 50,000 samples in 10 splits of 5,000)")
    elif "is" in result:
        lines.append(f"  IS unavailable: {result['is_note']}")
    if "kid_mean" in result:
        lines.append(f"  {result['kid_metric']} = {result['kid_mean']:.5f} ± {result['kid_std']:.5f} (KID over "
                     f"{result['kid_subsets']} subsets of {result['kid_subset_size']} per side)")
    if "precision" in result:
        lines.append(f"  {result['precision_metric']} = {result['precision']:.3f}, {result['recall_metric']} = "
                     f"{result['recall']:.3f} (k = {result['pr_neighbours']} nearest neighbours)")
    if "intra_fid" in result:
        worst = max(result["intra_fid_classes"].items(), key=lambda kv: kv[1])
        lines.append(f"  {result['intra_fid_metric']} = {result['intra_fid']:.2f} (mean over "
                     f"{len(result['intra_fid_classes'])} classes of {result['intra_fid_num_per_class']} samples "
                     f"each, against that class's reference images; worst: {worst[0]} {worst[1]:.2f})")
    if "saved_stats" in result:
        lines.append(f"  reference statistics written to {result['saved_stats']}")
    return "\n".join(lines)
