"""`sngan eval-fid` and FID during training, with pytorch-fid's protocol (KID and precision/recall
from the same features when asked for). A checkpoint's samples stay in memory: writing tens of
thousands of PNGs is slow, and uint8 images lose nothing either way.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

from sngan.data.datasets import REFERENCES
from sngan.errors import UsageError
from sngan.metrics import detector as inception
from sngan.metrics import fid_stats, formulas
from sngan.metrics.fid_result import is_name, metric_name
from sngan.metrics.intra_fid import check_classes, intra_fid, protocol, reference_labels
from sngan.parallel import distributed
from sngan.runs.checkpoint import check_parent

# Inception Score as the paper computes it (TF): 10 splits, the paper's over 50,000 samples.
IS_SPLITS = 10
# Resolution at which SN-GAN trains on each data set: used for a named reference's statistics
# written on their own (next to generated images, the reference takes their resolution).
PAPER_RESOLUTION = {"cifar10": 32, "stl10": 48}


def eval_fid(*, images: str | None, checkpoint: str | None, num: int, ref: str, save_stats: str | None,
             inception_score: bool, inception_weights: str | None, batch_size: int, device: str,
             data_root: str, download: bool, seed: int, resolution: int | None = None,
             ema: bool | None = None, ref_images: int = 0, kid: bool = False, pr: bool = False,
             intra: bool = False) -> dict:
    """FID of generated images against `ref`; returns the result dict that
    `sngan.metrics.fid_result.format_result` prints.

    The generated side is exactly one of `images` (a folder or .npz of uint8 images, all of them;
    `num` is ignored) or `checkpoint` (`num` samples drawn with `seed` on `device`, class-balanced
    when conditional, from its EMA generator when it has one unless `ema` is False). `ref` is a
    name in `sngan.REFERENCES`, compared at the generated images' resolution, an image folder
    or .npz of images, or a statistics .npz. `save_stats` writes the reference's statistics; with
    neither `images` nor `checkpoint` that is all it does, a named reference then at `resolution`
    (default: the one SN-GAN trains at on that data set). `ref_images` takes the reference's first N
    images (0: all of them; fewer is an error; the paper uses 10,000). `kid` and `pr` add KID and
    precision/recall against the reference's features (so not against a statistics .npz); `intra`
    the intra-class FID of a conditional checkpoint (`num // classes` per class; `sngan.metrics.intra_fid`).
    """
    start = time.perf_counter()
    _check_args(images, checkpoint, num, save_stats, ema, kid or pr, intra)
    if checkpoint is not None:
        from sngan.models.sample import generate_batches, load_generator  # lazy: pulls in the models

        G, cfg, kind = load_generator(checkpoint, device, ema)
        if intra and not getattr(G, "num_classes", 0):
            raise UsageError(f"--intra-fid needs a class-conditional checkpoint (model.conditional); "
                             f"'{checkpoint}' is unconditional: leave --intra-fid out")
        h = w = cfg.data.resolution
        batches, total = generate_batches(G, cfg, num, batch_size, seed, device), num
        source = f"{checkpoint}, EMA generator" if kind == "ema" else checkpoint
    elif images is not None:
        x = fid_stats.load_image_set(images)
        batches, total, (h, w), source = [x], len(x), x.shape[2:], images
    else:  # only the reference's statistics, a named one by default at the resolution SN-GAN trains at
        if resolution is None and ref in REFERENCES:
            resolution = PAPER_RESOLUTION[REFERENCES[ref][0]]
        h = w = resolution or 32  # folder and .npz references are used at their own size
    if ref in REFERENCES and h != w:
        raise UsageError(f"generated images are {w}x{h}, but reference '{ref}' is square; use square "
                         "images or a folder/statistics reference")
    # The reference is checked before the detector loads (which may download its weights, saying
    # so), and read right after it: a bad --ref is one line, and fails before minutes of generating.
    fid_stats.check_reference(ref, kid or pr or intra, data_root, download)
    if intra:  # so are its labels: an unlabelled reference, or one of other classes, fails now
        ref_labels, ref_classes = reference_labels(ref, data_root, download, ref_images)
        check_classes(G.classes, ref_labels, ref_classes)
    detector = inception.load_detector(inception_weights, device)
    ref_args = {"data_root": data_root, "resolution": h, "download": download, "batch_size": batch_size,
                "num_images": ref_images}
    if kid or pr or intra:
        mu_ref, sigma_ref, ref_features, info = fid_stats.reference_features(ref, detector, **ref_args)
    else:
        mu_ref, sigma_ref, info = fid_stats.reference_stats(ref, detector, **ref_args)
    if save_stats:  # a pytorch-fid .npz, with the protocol as extra keys
        fid_stats.save_stats(save_stats, mu_ref, sigma_ref, ref=info["ref"], num_images=info["num_ref"],
                             detector=detector.name, detector_sha256=detector.weights_sha256,
                             **{k: info[k] for k in ("split", "resolution") if k in info})
    if images is None and checkpoint is None:
        return {**_ref_fields(info), "saved_stats": save_stats, "detector": detector.name,
                "weights": str(detector.weights_path), "seconds": round(time.perf_counter() - start, 2)}
    features, logits = inception.extract(detector, batches, batch_size, total=total, desc="generated features")
    mu, sigma = formulas.statistics(features)
    num_ref = info["num_ref"]  # what was used names the metrics (a partial copy of a named set: its count)
    result = {
        "metric": metric_name(len(features), ref, num_ref),
        "fid": formulas.frechet_distance(mu, sigma, mu_ref, sigma_ref),
        "num_gen": len(features),
        **_ref_fields(info),
        "source": source,
        "detector": detector.name,
        "weights": str(detector.weights_path),
    }
    if inception_score:
        why = is_unavailable(detector, len(features))
        result.update({"is": None, "is_note": why} if why else _inception_score_fields(logits))
    if kid or pr:
        result.update(_feature_fields(features, ref_features, kid, pr, ref, num_ref))
    if intra:
        result.update(_intra_fields(G, cfg, ref, num_ref, ref_features, ref_labels, detector, num, batch_size,
                                    device, seed))
    if save_stats:
        result["saved_stats"] = save_stats
    return {**result, "seconds": round(time.perf_counter() - start, 2)}


def _check_args(images: str | None, checkpoint: str | None, num: int, save_stats: str | None,
                ema: bool | None, kid_pr: bool, intra: bool) -> None:
    """Argument mistakes, caught before anything slow runs."""
    if images is not None and checkpoint is not None:
        raise UsageError("give either --images or --checkpoint, not both")
    if intra and checkpoint is None:
        raise UsageError("--intra-fid scores the classes of a class-conditional generator; give --checkpoint")
    if kid_pr and images is None and checkpoint is None:
        raise UsageError("--kid and --pr compare generated images with the reference; give --images or --checkpoint")
    if ema is not None and checkpoint is None:
        raise UsageError("--ema/--no-ema choose a checkpoint's generator; use them with --checkpoint")
    if images is None and checkpoint is None and not save_stats:
        raise UsageError("nothing to evaluate: give --images DIR|NPZ or --checkpoint PATH, or "
                         "--save-stats PATH to write the statistics of --ref")
    if checkpoint is not None and num < 2:
        raise UsageError(f"--num {num} is too small: FID needs at least 2 samples (10000 is usual)")
    if save_stats and fid_stats.stats_path(save_stats).exists():
        raise UsageError(f"statistics file '{save_stats}' already exists; delete it or choose another path")
    if save_stats:
        check_parent(save_stats)


def _ref_fields(info: dict) -> dict:
    protocol = {k: info[k] for k in ("split", "resolution") if k in info}
    return {"num_ref": info["num_ref"], "ref": info["ref"], **protocol, "ref_cached": info["cached"]}


def is_unavailable(detector: inception.Detector, num: int) -> str | None:
    """Why no Inception Score of `num` samples can be given with `detector`, or None when it can:
    weights without a real classifier, or splits of one sample (each of which scores exactly 1)."""
    if detector.is_unavailable:
        return detector.is_unavailable
    if num < 2 * IS_SPLITS:
        return (f"{num} samples are too few for its {IS_SPLITS} splits (a split of one sample always "
                f"scores 1); it needs at least {2 * IS_SPLITS}")
    return None


def _inception_score_fields(logits: np.ndarray) -> dict:
    """IS of `(N, 1008)` logits over IS_SPLITS splits; `is_unavailable` said it can be computed."""
    mean, std = formulas.inception_score(logits, IS_SPLITS)
    return {"is_metric": is_name(len(logits)), "is_mean": mean, "is_std": std, "is_splits": IS_SPLITS}


def _feature_fields(features: np.ndarray, ref_features: np.ndarray, kid: bool, pr: bool, ref: str,
                    num_ref: int | None) -> dict:
    """KID (mean and std over subsets) and precision/recall (k = 3) of generated `(N, 2048)`
    features against the `num_ref` reference images', named by `metric_name(N, ref, num_ref, ...)`
    and with their protocol (subsets and their size, k)."""
    names = {m: metric_name(len(features), ref, num_ref, m) for m in ("kid", "precision", "recall")}
    out = {}
    if kid:
        mean, std = formulas.kernel_inception_distance(features, ref_features)
        size = formulas.kid_subset_size(len(features), len(ref_features))
        out.update({"kid_metric": names["kid"], "kid_mean": mean, "kid_std": std,
                    "kid_subsets": formulas.KID_SUBSETS, "kid_subset_size": size})
    if pr:
        precision, recall = formulas.precision_recall(features, ref_features)
        out.update({"precision_metric": names["precision"], "precision": precision, "recall_metric": names["recall"],
                    "recall": recall, "pr_neighbours": formulas.PR_NEIGHBOURS})
    return out


def _intra_fields(G: nn.Module, cfg, ref: str, num_ref: int | None, ref_features: np.ndarray,
                  ref_labels: np.ndarray, detector: inception.Detector, num: int, batch_size: int, device: str,
                  seed: int) -> dict:
    """Intra-FID fields of the generator already loaded for FID (it is in eval mode)."""
    from sngan.models.sample import generate_batches  # lazy: pulls in the models

    def embed(labels: torch.Tensor, desc: str) -> np.ndarray:
        batches = generate_batches(G, cfg, len(labels), batch_size, seed, device, labels=labels)
        return inception.extract(detector, batches, batch_size, total=len(labels), desc=desc)[0]

    per_class, name = protocol(num, len(G.classes), ref, num_ref)
    return {"intra_fid_metric": name, **intra_fid(embed, per_class, ref_features, ref_labels, G.classes)}


class FIDTracker:
    """FID of the generator during training (config section `eval`), as `eval-fid` measures it.

    `classes`: the model's, for `eval.intra_fid`, checked against the reference's labels at once.
    The detector and reference statistics are loaded once; every evaluation draws the same
    `eval.num_samples` latents (seeded by `train.seed`), so changes come from G, not from z.
    With several processes each generates and embeds its share of those samples; the features
    are gathered so the result equals a single process's, and evaluation time falls with K.
    """

    def __init__(self, cfg, device: torch.device, ctx=None, classes: tuple[str, ...] = ()):
        ec = cfg.eval
        self.cfg, self.device, self.ctx, self.classes = cfg, device, ctx or distributed.Dist(), tuple(classes)
        # The reference (and with eval.intra_fid its labels) before the detector, as eval-fid does.
        fid_stats.check_reference(ec.ref, self.wants_features, cfg.data.root, cfg.data.download)
        if ec.intra_fid:  # config validation made sure the model is conditional
            self.ref_labels, ref_classes = reference_labels(ec.ref, cfg.data.root, cfg.data.download, ec.ref_images)
            check_classes(self.classes, self.ref_labels, ref_classes)
        self.detector = inception.load_detector(ec.inception_weights or None, device)
        ref_args = dict(data_root=cfg.data.root, resolution=cfg.data.resolution, download=cfg.data.download,
                        batch_size=ec.batch_size, num_images=ec.ref_images)
        # Rank 0 computes (and caches) the reference statistics first; the others then read them.
        if self.ctx.main:
            self._load_reference(ref_args)
        distributed.barrier(self.ctx)
        if not self.ctx.main:
            self._load_reference(ref_args)
        self.sqrt_sigma_ref = formulas.sqrt_psd(self.sigma_ref)  # once, not at every evaluation
        self.metric = metric_name(ec.num_samples, ec.ref, self.num_ref)
        if ec.intra_fid:  # named, like FID, by the reference images actually used
            self.per_class, self.intra_metric = protocol(ec.num_samples, len(self.classes), ec.ref, self.num_ref)
        # What each evaluation line records beside the numbers: the detector and the reference images used.
        self.protocol = {"detector": self.detector.name, "num_ref": self.num_ref}
        # Asked for but impossible: said once here, then never computed, logged or drawn.
        self.is_unavailable = is_unavailable(self.detector, ec.num_samples) if ec.inception_score else None
        if self.is_unavailable and self.ctx.main:
            print(f"eval.inception_score: IS unavailable: {self.is_unavailable}", file=sys.stderr)

    @property
    def wants_features(self) -> bool:
        """KID, precision/recall and intra-FID compare with the reference's features, not only its statistics."""
        return self.cfg.eval.kid or self.cfg.eval.pr or self.cfg.eval.intra_fid

    def _load_reference(self, ref_args: dict) -> None:
        """The reference's statistics, and its features (once, here) when `wants_features`."""
        ec, self.ref_features = self.cfg.eval, None
        if self.wants_features:
            self.mu_ref, self.sigma_ref, self.ref_features, info = fid_stats.reference_features(
                ec.ref, self.detector, **ref_args)
        else:
            self.mu_ref, self.sigma_ref, info = fid_stats.reference_stats(ec.ref, self.detector, **ref_args)
        self.num_ref = info["num_ref"]  # None: a statistics file that does not record it

    def _embed(self, G: nn.Module, num: int, labels: torch.Tensor | None = None, desc: str = "FID samples"
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """Features `(num, 2048)` and logits (or None) of G's `num` samples of the fixed z (and
        `labels`), each process generating and embedding its share; gathered, so all get all."""
        from sngan.models.sample import generate_batches  # lazy: pulls in the models

        ec = self.cfg.eval
        batches = generate_batches(G, self.cfg, num, ec.batch_size, self.cfg.train.seed, self.device,
                                   share=(self.ctx.rank, self.ctx.world), labels=labels)
        parts = distributed.gather_objects(inception.extract(self.detector, batches, ec.batch_size, desc=desc),
                                           self.ctx)
        logits = None if parts[0][1] is None else np.concatenate([lg for _, lg in parts])
        return np.concatenate([f for f, _ in parts]), logits

    def evaluate(self, G: nn.Module, suffix: str = "") -> dict:
        """`{metric: fid}`, plus `is<N>` and `is<N>_std` (when asked for, unless `is_unavailable`),
        `kid<N>_<ref>` with its `_std`, `precision<N>_<ref>`, `recall<N>_<ref>` (`eval.kid`/`eval.pr`),
        `intrafid<N/C>_<ref>` (`eval.intra_fid`), each key ending in `suffix` (`_ema` for the EMA
        generator). G runs in eval mode and is left in the mode it came in. A collective call: with
        several processes, all of them must call it."""
        ec, was_training = self.cfg.eval, G.training
        G.eval()  # batch norm must use running statistics, and not update them
        try:
            features, logits = self._embed(G, ec.num_samples)
            intra = intra_fid(lambda y, desc: self._embed(G, len(y), y, desc)[0], self.per_class, self.ref_features,
                              self.ref_labels, self.classes) if ec.intra_fid else None
        finally:
            G.train(was_training)
        mu, sigma = formulas.statistics(features)
        result = {self.metric: formulas.frechet_distance(mu, sigma, self.mu_ref, self.sigma_ref,
                                                        sqrt_sigma2=self.sqrt_sigma_ref)}
        if ec.inception_score and not self.is_unavailable:  # eval-fid's fields, logged under their metric names
            f = _inception_score_fields(logits)
            result.update({f["is_metric"]: f["is_mean"], f["is_metric"] + "_std": f["is_std"]})
        f = _feature_fields(features, self.ref_features, ec.kid, ec.pr, ec.ref, self.num_ref)
        if ec.kid:
            result.update({f["kid_metric"]: f["kid_mean"], f["kid_metric"] + "_std": f["kid_std"]})
        if ec.pr:
            result.update({f["precision_metric"]: f["precision"], f["recall_metric"]: f["recall"]})
        if intra is not None:  # the mean, named as eval-fid names it; per-class values stay in eval-fid --json
            result[self.intra_metric] = intra["intra_fid"]
        return {k + suffix: v for k, v in result.items()}
