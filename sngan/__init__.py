"""sngan: GANs with spectral normalisation (Miyato et al., ICLR 2018), trained and measured with FID.

From Python: `G = sngan.load("runs/00003-cifar_sn")`, then `G.sample(16, seed=0)` or
`G.sample_uint8(16, seed=0)`; see `sngan.api` and docs/api.md.
"""

from sngan.errors import SnganError, UsageError

__version__ = "0.1.0"
__all__ = ["load", "Generator", "SnganError", "UsageError", "__version__"]

_LAZY = {"load", "Generator"}  # in sngan.api, which imports torch


def __getattr__(name: str):
    # Imported on first use, so `import sngan` (and with it `sngan --help`) stays free of torch.
    if name in _LAZY:
        from sngan import api

        return getattr(api, name)
    raise AttributeError(f"module 'sngan' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
