"""sngan: GANs with spectral normalisation (Miyato et al., ICLR 2018), trained and measured with FID.

From Python: `G = sngan.load("runs/00003-cifar_sn")`, then `G.sample(16, seed=0)`; see docs/api.md.
"""

from sngan.errors import SnganError, UsageError

__version__ = "0.1.0"
__all__ = ["load", "Generator", "SnganError", "UsageError", "__version__"]


def __getattr__(name: str):
    # sngan.api imports torch, so it loads on first use: `import sngan` (and `sngan --help`) stays fast.
    if name in ("load", "Generator"):
        from sngan import api

        return getattr(api, name)
    raise AttributeError(f"module 'sngan' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
