"""sngan: GANs with spectral normalisation (Miyato et al., ICLR 2018), trained and measured with FID."""

__version__ = "0.1.0"
