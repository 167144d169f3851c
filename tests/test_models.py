import pytest
import torch
from torch import nn

from sngan.config import ModelConfig
from sngan.models import D_NORMS, ARCHS, build, sample_z
from sngan.spectral_norm import sn_layers


def _convs(module, kind=nn.Conv2d):
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("res", [32, 48])
@pytest.mark.parametrize("norm", D_NORMS)
def test_shapes_and_ranges(arch, res, norm):
    torch.manual_seed(0)
    G, D = build(ModelConfig(arch=arch, g_ch=4, d_ch=4, z_dim=8, d_norm=norm), res)
    x = G(torch.randn(3, 8))
    assert x.shape == (3, 3, res, res)
    assert x.abs().max() <= 1.0
    assert D(x).shape == (3,)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_d_normalisation_choice(arch):
    for norm in D_NORMS:
        G, D = build(ModelConfig(arch=arch, g_ch=4, d_ch=4, d_norm=norm), 32)
        weighted = _convs(D) + _convs(D, nn.Linear)
        n_sn, n_bn = len(sn_layers(D)), len(_convs(D, nn.BatchNorm2d))
        assert n_sn == (len(weighted) if norm == "sn" else 0)
        assert (n_bn > 0) == (norm == "bn")
        assert len(_convs(G, nn.BatchNorm2d)) > 0  # G always uses BN, as in the paper
        assert len(sn_layers(G)) == 0


def test_dcgan_paper_architecture_32():
    G, D = build(ModelConfig(arch="dcgan"), 32)
    assert G.fc.out_features == 4 * 4 * 512
    deconvs = _convs(G, nn.ConvTranspose2d)
    assert [(m.out_channels, m.kernel_size, m.stride) for m in deconvs] == [
        (256, (4, 4), (2, 2)), (128, (4, 4), (2, 2)), (64, (4, 4), (2, 2))]
    final = _convs(G)[-1]
    assert (final.out_channels, final.kernel_size) == (3, (3, 3))
    convs = _convs(D)
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 512]
    assert [m.kernel_size[0] for m in convs] == [3, 4, 3, 4, 3, 4, 3]
    assert [m.stride[0] for m in convs] == [1, 2, 1, 2, 1, 2, 1]
    assert D.fc.in_features == 4 * 4 * 512
    assert {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}


def test_dcgan_official_variant_and_48():
    G, D = build(ModelConfig(arch="dcgan", dcgan_d="official"), 48)
    assert G.fc.out_features == 6 * 6 * 512
    assert [m.out_channels for m in _convs(D)] == [64, 128, 128, 256, 256, 512, 512]
    assert {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    assert D.fc.in_features == 6 * 6 * 512


def test_resnet_paper_architecture_32():
    G, D = build(ModelConfig(arch="resnet"), 32)
    assert G.fc.out_features == 4 * 4 * 256 and len(G.blocks) == 3
    assert all(b.conv1.out_channels == 256 for b in G.blocks)
    assert [b.conv1.out_channels for b in D.blocks] == [128] * 4
    assert [b.down for b in D.blocks] == [True, True, False, False]
    assert D.blocks[0].first and not any(b.first for b in D.blocks[1:])
    assert D.fc.in_features == 128


def test_resnet_paper_architecture_48():
    G, D = build(ModelConfig(arch="resnet"), 48)
    assert G.fc.out_features == 6 * 6 * 512
    assert [b.conv1.out_channels for b in G.blocks] == [256, 128, 64]
    assert [b.conv1.out_channels for b in D.blocks] == [64, 128, 256, 512, 1024]
    assert [b.down for b in D.blocks] == [True, True, True, True, False]


def test_resnet_d_uses_global_sum_pooling():
    torch.manual_seed(0)
    _, D = build(ModelConfig(arch="resnet", d_ch=4, d_norm="none"), 32)
    D.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = torch.relu(D.blocks(x))
    expect = D.fc(feats.sum(dim=(2, 3))).squeeze(1)
    torch.testing.assert_close(D(x), expect)


def test_z_distributions():
    g = torch.Generator().manual_seed(0)
    z = sample_z(4000, ModelConfig(z_dim=4, z_dist="uniform"), "cpu", g)
    assert z.min() >= -1 and z.max() <= 1 and abs(float(z.mean())) < 0.05
    z = sample_z(4000, ModelConfig(z_dim=4), "cpu", g)
    assert abs(float(z.std()) - 1) < 0.05
