"""Typed configuration: nested dataclasses whose field help is the config reference (docs/configuration.md),
validated so that every user mistake is a one-line `UsageError` naming the key and what would be valid."""

from __future__ import annotations

import dataclasses
import difflib
import operator
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from sngan.config_files import apply_overrides, find_config, read_yaml
from sngan.errors import UsageError


def _f(default, help: str, **meta):
    """A field with its help text and validation: gt/ge/lt/le bounds, `choices` (a CHOICES key)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class DataConfig:
    name: str = _f("cifar10", "`cifar10`, `stl10`, `folder` (your own images), `npz` (uint8 images in an "
                   ".npz file), `synthetic` (built-in shapes)", choices="datasets")
    root: str = _f("data", "where data sets are downloaded or found; for `folder` the image folder, "
                   "for `npz` the .npz file")
    resolution: int = _f(32, "image size (STL-10: 48); a multiple of 8", ge=8)
    download: bool = _f(True, "download a missing CIFAR-10 / STL-10")
    split: str = _f("default", "CIFAR-10: `train`/`test`; STL-10: `unlabeled`, `train`, `test` or "
                    "`unlabeled+train`. `default` is the paper's: CIFAR-10 train, STL-10 unlabeled+train")
    num_images: int = _f(0, "use at most this many images (0: all); the size of the synthetic set "
                         "(0: 4096)", ge=0)
    placement: str = _f("device", "keep the uint8 data set on the training device, or in host memory "
                        "(`cpu`)", choices="placements")


@dataclass
class ModelConfig:
    arch: str = _f("dcgan", "`dcgan` (standard CNN, paper Table 3) or `resnet` (Tables 4/5)", choices="archs")
    z_dim: int = _f(128, "latent size", ge=1)
    z_dist: str = _f("normal", "`normal` (paper) or `uniform` in [-1, 1] (official code)", choices="z_dists")
    g_ch: int = _f(0, "G's base width; 0 means the paper's (dcgan 64; resnet 256 at 32 px, 64 at 48 px)", ge=0)
    d_ch: int = _f(0, "D's base width; 0 means the paper's (dcgan 64; resnet 128 at 32 px, 64 at 48 px)", ge=0)
    d_norm: str = _f("sn", "discriminator normalisation: `sn`, `bn`, `none` (G always uses BN)",
                     choices="d_norms")
    sn_iters: int = _f(1, "power iterations per forward pass", ge=1)
    sn_lipschitz: float = _f(1.0, "target spectral norm of each layer", gt=0)
    dcgan_d: str = _f("paper", "standard-CNN D: `paper` (widths 64,64,128,128,256,256,512; slope 0.1) or "
                      "`official` (chainer-gan-lib: 64,128,128,256,256,512,512; slope 0.2)",
                      choices="dcgan_d_variants")
    d_slope: float = _f(0.0, "LeakyReLU slope override (0: the variant's)", ge=0)
    g_dense_bn: str = _f("feature", "standard-CNN G's BatchNorm after the dense layer: per output (`feature`, "
                         "the official code's) or per channel (`channel`, sngan's before)", choices="g_dense_bns")
    sync_bn: bool = _f(False, "SyncBatchNorm across processes under torchrun (CUDA only)")
    init: str = _f("auto", "weight initialisation: `official` (standard CNN N(0, 0.02), biases 0; "
                   "ResNet Glorot-uniform as the official code), `pytorch` (each layer's default), or `auto`: "
                   "`pytorch` for the standard CNN (with `official` its D ran away and G collapsed early under "
                   "the two time-scale Adam, docs/results.md), `official` for the ResNet", choices="inits")
    conditional: bool = _f(False, "class-conditional GAN (ResNet only): G with conditional BatchNorm, D with "
                           "the projection term; needs labelled data (see docs/conditional.md)")


@dataclass
class LossConfig:
    name: str = _f("hinge", "`hinge`, `standard` (non-saturating) or `wasserstein` (the WGAN baselines); "
                   "`loss: hinge` is shorthand", choices="losses")
    gp_weight: float = _f(10.0, "WGAN-GP gradient penalty weight, with `wasserstein` only (0: none)", ge=0)
    clip: float = _f(0.0, "clip D's parameters to [-clip, clip] after each D step (the original WGAN "
                     "used 0.01); 0: off", ge=0)


@dataclass
class OptimConfig:
    lr_g: float = _f(1e-4, "G's Adam learning rate", gt=0)
    lr_d: float = _f(4e-4, "D's Adam learning rate", gt=0)
    beta1: float = _f(0.5, "Adam beta1", ge=0, lt=1)
    beta2: float = _f(0.999, "Adam beta2", ge=0, lt=1)
    n_dis: int = _f(1, "discriminator updates per generator update", ge=1)
    lr_decay: str = _f("none", "`linear`: decay both learning rates linearly to 0 at `train.steps` "
                       "(raising train.steps on resume decays on from the current rate)", choices="lr_decays")
    g_batch_mult: int = _f(1, "the generator batch is `batch_size * g_batch_mult` (2 in the paper's "
                           "ResNet setup)", ge=1)


@dataclass
class TrainConfig:
    batch_size: int = _f(64, "discriminator batch (the global batch under torchrun)", ge=1)
    steps: int = _f(100_000, "generator updates", ge=1)
    seed: int = _f(0, "seeds weights, data order and z", ge=0)
    device: str = _f("auto", "`auto` (CUDA when available), `cpu`, `cuda`", choices="devices")
    log_every: int = _f(100, "steps between metrics lines (the only point where the loop waits for the GPU)", ge=1)
    sample_every: int = _f(1000, "steps between sample grids of a fixed z", ge=1)
    checkpoint_every: int = _f(5000, "steps between periodic checkpoints", ge=1)
    keep_checkpoints: int = _f(3, "periodic `ckpt-*.pt` kept besides `latest.pt` and `best.pt`", ge=1)
    sample_grid: int = _f(64, "images in each sample grid", ge=1)
    on_nonfinite: str = _f("stop", "NaN/inf loss or weights: `stop` (keep the last good checkpoint) or "
                           "`skip` the step and count it", choices="nonfinite_policies")
    deterministic: bool = _f(False, "deterministic algorithms (slower on GPU), for this run only")
    amp: str = _f("none", "`bf16`: autocast G and D in bfloat16 (SN's power iteration and sigma stay fp32)",
                  choices="amp_modes")
    compile: bool = _f(False, "`torch.compile` G and D")
    channels_last: bool = _f(False, "channels-last memory layout for models and batches")
    ema_decay: float = _f(0.0, "keep an exponential moving average of G's weights with this decay "
                          "(0: off; 0.999 or 0.9999 are usual); samples, FID-best and eval then use it",
                          ge=0, lt=1)
    ema_start: int = _f(0, "generator steps during which the EMA copies G instead of averaging", ge=0)
    diffaug: str = _f("", "DiffAugment: comma-separated augmentations of every image D sees, real and fake "
                      "(`color`, `translation`, `cutout`; \"\": off)")
    tensorboard: bool = _f(True, "also write TensorBoard event files (`tensorboard/` in the run folder) when "
                           "the `tensorboard` package is installed")
    collapse_warning: int = _f(500, "from this generator update on (0: never), warn when G's samples stop varying "
                               "with z or D's outputs run away; see docs/training.md", ge=0)


@dataclass
class EvalConfig:
    every: int = _f(0, "steps between FID evaluations (0: off)", ge=0)
    num_samples: int = _f(10_000, "generated samples per FID (the paper's protocol: 5000)", ge=2)
    ref: str = _f("cifar10-train", "FID reference: a named set (`cifar10-train`, ...), an image folder, "
                  "an .npz of images, or a statistics .npz")
    ref_images: int = _f(0, "use the first N images of the reference (0: all; a reference with fewer is an "
                         "error; the paper's protocol: 10000)", ge=0)
    batch_size: int = _f(100, "images per Inception forward", ge=1)
    inception_score: bool = _f(True, "also compute IS when it can be (weights with a real classifier, "
                               "num_samples >= 20); otherwise said once at the start")
    kid: bool = _f(False, "also compute KID (100 subsets of up to 1000) from the reference's features, cached "
                   "beside its statistics; the reference must be images, not a statistics .npz")
    pr: bool = _f(False, "also compute precision and recall (k = 3 nearest neighbours) from the reference's "
                  "features; memory grows with the sample counts, see docs/fid.md")
    intra_fid: bool = _f(False, "also the intra-class FID of a conditional model; see docs/conditional.md")
    inception_weights: str = _f("", "local copy of the FID Inception weights (\"\": torch's hub cache, "
                                "downloaded on first use)")


@dataclass
class OutConfig:
    root: str = _f("runs", "folder under which run folders are created")
    name: str = _f("", "readable part of the run folder name (default: the config file's name)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: OutConfig = field(default_factory=OutConfig)


# The names a choice field accepts. The config is their home: the registries that implement them
# (data.datasets.DATASETS, models.networks.ARCHS and D_NORMS, training.losses.LOSSES, training.nonfinite.NONFINITE)
# are keyed by these names, and a test checks that each implements exactly its list. Keeping them
# here lets config validate without importing the models, so imports flow one way.
CHOICES = {
    "datasets": ("cifar10", "folder", "npz", "stl10", "synthetic"),
    "archs": ("dcgan", "resnet"),
    "d_norms": ("sn", "bn", "none"),
    "inits": ("auto", "official", "pytorch"),
    "losses": ("hinge", "standard", "wasserstein"),
    "placements": ("device", "cpu"),
    "z_dists": ("normal", "uniform"),
    "dcgan_d_variants": ("paper", "official"),
    "g_dense_bns": ("feature", "channel"),
    "lr_decays": ("none", "linear"),
    "devices": ("auto", "cpu", "cuda"),
    "nonfinite_policies": ("stop", "skip"),
    "amp_modes": ("none", "bf16"),
    "augments": ("color", "translation", "cutout"),  # train.diffaug: any subset
}


def choices(registry: str) -> list[str]:
    """Valid names for a choice field."""
    return list(CHOICES[registry])


def _coerce(value: Any, tp: type, key: str) -> Any:
    """`value` as the annotated type `tp`, converting only lossless cases (int -> float, 3.0 -> 3)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (bool, str) and isinstance(value, tp):
        return value
    if tp is int and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if tp in (float, str) and number:
        return tp(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise UsageError(f"config key '{key}' must be {tp.__name__}, got {value!r}")


_BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def _check_field(meta: dict, value: Any, key: str) -> None:
    if "choices" in meta and value not in CHOICES[meta["choices"]]:
        raise UsageError(f"config key '{key}' is {value!r}; valid choices: {', '.join(CHOICES[meta['choices']])}")
    for op, (ok, word) in _BOUNDS.items():
        if op in meta and not ok(value, meta[op]):
            raise UsageError(f"config key '{key}' must be {word} {meta[op]}, got {value!r}")


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise UsageError(f"config section '{prefix or 'top level'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            near = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys: {', '.join(fields)}"
            raise UsageError(f"unknown config key '{key}'{hint}")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if name == "loss" and isinstance(value, str):  # shorthand `loss: hinge`
                value = {"name": value}
            kwargs[name] = _build(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, key)
            _check_field(fields[name].metadata, kwargs[name], key)
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    """Build and validate a Config from nested plain data (missing keys take defaults)."""
    cfg = _build(Config, data or {}, "")
    validate(cfg)
    return cfg


# Keys whose default differs from what sngan did before they existed: their values in older saved configs.
SAVED_BEFORE = {"model": {"g_dense_bn": "channel"}}


def from_saved(data: dict) -> Config:
    """`from_dict` for a config that sngan itself saved, perhaps before some keys existed (SAVED_BEFORE)."""
    data = {**data}
    for section, keys in SAVED_BEFORE.items():
        data[section] = {**keys, **data.get(section, {})}
    return from_dict(data)


def reference() -> str:
    """The config reference (docs/configuration.md) as a Markdown table, from each field's help."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for section, cls in typing.get_type_hints(Config).items():
        for f in dataclasses.fields(cls):
            default = yaml.safe_dump(f.default, default_style=None).removesuffix("\n...\n").strip()
            lines.append(f"| `{section}.{f.name}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def check_resolution(arch: str, resolution: int) -> None:
    """The resolutions each architecture's layout supports."""
    if resolution % 8:
        raise UsageError(f"config key 'data.resolution' must be a multiple of 8 for arch '{arch}', got {resolution}")
    if arch == "resnet" and resolution > 32 and resolution % 16:
        raise UsageError("config key 'data.resolution' must be 32 or a multiple of 16 for arch 'resnet' "
                         f"(the STL-10 layout halves it four times), got {resolution}")


def validate(cfg: Config) -> None:
    """Checks that involve more than one key."""
    check_resolution(cfg.model.arch, cfg.data.resolution)
    if cfg.model.conditional and cfg.model.arch != "resnet":
        raise UsageError(f"config key 'model.conditional' needs model.arch resnet (the projection discriminator "
                         f"and conditional BatchNorm are ResNet blocks), got arch '{cfg.model.arch}'")
    if cfg.eval.intra_fid and not cfg.model.conditional:
        raise UsageError("config key 'eval.intra_fid' needs model.conditional true (it scores each class); drop it")
    bad = [a for a in cfg.train.diffaug.split(",") if a.strip() and a.strip() not in CHOICES["augments"]]
    if bad:
        raise UsageError(f"config key 'train.diffaug' has unknown augmentation '{bad[0].strip()}'; valid: "
                         f"{', '.join(CHOICES['augments'])}, comma-separated (\"\" turns it off)")


def load(path: str | Path, overrides: Optional[list[str]] = None) -> tuple[Config, Path]:
    """Load a config file (or bundled name), apply overrides, validate. Returns (config, file)."""
    file = find_config(path)
    cfg = from_dict(apply_overrides(read_yaml(file), overrides or []))
    if not cfg.out.name:
        cfg.out.name = file.stem
    return cfg, file


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
