import torch

from sngan.data import datasets


def test_synthetic_is_deterministic_and_varied():
    a, b = datasets.synthetic_shapes(64, 32, seed=0), datasets.synthetic_shapes(64, 32, seed=0)
    assert a.dtype == torch.uint8 and a.shape == (64, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, datasets.synthetic_shapes(64, 32, seed=1))
    assert a.float().std(dim=0).mean() > 20  # images differ from each other


def test_resize_antialiased():
    # antialiased 2x downsampling of a constant image is that constant
    const = torch.full((1, 3, 96, 96), 77, dtype=torch.uint8)
    assert torch.equal(datasets.resize(const, 48), torch.full((1, 3, 48, 48), 77, dtype=torch.uint8))
