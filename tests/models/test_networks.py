import pytest
import torch
from torch import nn

from sngan.config import ModelConfig
from sngan.models.networks import D_NORMS, ARCHS, build, sample_z
from sngan.models.spectral_norm import sn_layers


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
    assert [b.conv2.out_channels for b in D.blocks] == [64, 128, 256, 512, 1024]  # block output widths
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


# Parameter counts derived by hand from the official definitions (sngan_projection's resblocks,
# paper Table 3 for the standard CNN): a k x k conv from a to b channels with bias has
# a*b*k*k + b parameters; BatchNorm has 2 per channel; SN adds buffers only.


def _conv(a, b, k, bias=True):
    return a * b * k * k + (b if bias else 0)


def _official_resnet_d(widths, downs, fc_bias):
    total, c_in = 0, 3
    for i, (c_out, down) in enumerate(zip(widths, downs)):
        if i == 0:  # optimized block: conv(3 -> c), conv(c -> c), shortcut 1x1(3 -> c)
            total += _conv(3, c_out, 3) + _conv(c_out, c_out, 3) + _conv(3, c_out, 1)
        else:  # hidden width = input width; 1x1 shortcut when it downsamples or changes width
            total += _conv(c_in, c_in, 3) + _conv(c_in, c_out, 3)
            total += _conv(c_in, c_out, 1) if down or c_in != c_out else 0
        c_in = c_out
    return total + c_in + (1 if fc_bias else 0)


def _official_resnet_g(widths, bottom, z_dim=128):
    total = z_dim * bottom * bottom * widths[0] + bottom * bottom * widths[0]
    for a, b in zip(widths[:-1], widths[1:]):  # BN(a), conv(a -> b), BN(b), conv(b -> b), shortcut 1x1
        total += 2 * a + _conv(a, b, 3) + 2 * b + _conv(b, b, 3) + _conv(a, b, 1)
    return total + 2 * widths[-1] + _conv(widths[-1], 3, 3)


def _paper_dcgan_d(widths, bottom):
    total, c_in = 0, 3
    for i, c_out in enumerate(widths):
        total += _conv(c_in, c_out, 3 if i % 2 == 0 else 4)
        c_in = c_out
    return total + bottom * bottom * c_in + 1


def _paper_dcgan_g(bottom, z_dim=128, dense_bn="feature"):
    # The dense layer, then BatchNorm over its bottom*bottom*512 outputs (the official code) or its 512 channels.
    total = z_dim * bottom * bottom * 512 + bottom * bottom * 512
    total += 2 * (bottom * bottom * 512 if dense_bn == "feature" else 512)
    for a, b in ((512, 256), (256, 128), (128, 64)):
        total += _conv(a, b, 4) + 2 * b
    return total + _conv(64, 3, 3)


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("norm", ["sn", "none"])
def test_parameter_counts_match_the_official_definitions(norm):
    G, D = build(ModelConfig(arch="resnet", d_norm=norm), 32)
    assert _count(D) == _official_resnet_d([128] * 4, [True, True, False, False], fc_bias=False) == 1_053_824
    assert _count(G) == _official_resnet_g([256] * 4, 4)
    G, D = build(ModelConfig(arch="resnet", d_norm=norm), 48)
    # Hidden width = input width: 10.1M parameters, where output-width hidden layers made 19.5M.
    assert _count(D) == _official_resnet_d([64, 128, 256, 512, 1024], [True] * 4 + [False], fc_bias=True) == 10_141_441
    assert _count(G) == _official_resnet_g([512, 256, 128, 64], 6)
    for res, bottom in ((32, 4), (48, 6)):
        G, D = build(ModelConfig(arch="dcgan", d_norm=norm), res)
        assert _count(D) == _paper_dcgan_d([64, 64, 128, 128, 256, 256, 512], bottom)
        assert _count(G) == _paper_dcgan_g(bottom)
        G, _ = build(ModelConfig(arch="dcgan", d_norm=norm, g_dense_bn="channel"), res)
        assert _count(G) == _paper_dcgan_g(bottom, dense_bn="channel")


def test_resnet_d_hidden_width_is_the_input_width():
    _, D = build(ModelConfig(arch="resnet"), 48)
    assert [(b.conv1.in_channels, b.conv1.out_channels) for b in D.blocks] == [
        (3, 64), (64, 64), (128, 128), (256, 256), (512, 512)]
    assert [b.conv2.out_channels for b in D.blocks] == [64, 128, 256, 512, 1024]


def _raw(m):
    """A layer's raw weight (under spectral normalisation, the parametrization's original), detached."""
    return (m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight).detach()


def test_official_initialisation():
    torch.manual_seed(0)
    G, D = build(ModelConfig(arch="dcgan", init="official"), 32)
    layers = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    for m in layers:
        w = _raw(m)
        assert abs(float(w.std()) - 0.02) < 0.02 * 0.15 and abs(float(w.mean())) < 0.002, m
        assert not m.bias.any()
    torch.manual_seed(0)
    G2, _ = build(ModelConfig(arch="dcgan", init="pytorch"), 32)
    assert abs(float(G2.main[3].weight.detach().std()) - 0.02) > 0.005  # PyTorch's default is another scale
    G, D = build(ModelConfig(arch="resnet", init="official"), 32)
    assert D.fc.bias is None  # the official 32 px D's last linear has no bias
    for m, gain in ((G.to_rgb, 1.0), (G.blocks[0].conv1, 2 ** 0.5), (G.blocks[0].shortcut, 1.0),
                    (D.blocks[1].conv1, 2 ** 0.5), (D.blocks[1].shortcut, 1.0), (D.fc, 1.0)):
        w = _raw(m)
        fan_in, fan_out = w[0].numel(), w.shape[0] * w[0][0].numel()
        limit = gain * (6 / (fan_in + fan_out)) ** 0.5  # Glorot-uniform bound
        assert float(w.abs().max()) <= limit and float(w.abs().max()) > 0.9 * limit, m


@pytest.mark.parametrize("arch, means", [("dcgan", "pytorch"), ("resnet", "official")])
def test_auto_initialisation_is_one_of_the_two_per_arch(arch, means):
    """`model.init: auto` (the default) builds exactly the weights of the initialisation it names."""
    assert ModelConfig().init == "auto"
    built = {}
    for init in ("auto", means):
        torch.manual_seed(0)
        built[init] = [t.clone() for m in build(ModelConfig(arch=arch, init=init, g_ch=8, d_ch=8), 32)
                       for t in m.state_dict().values()]
    assert all(torch.equal(a, b) for a, b in zip(built["auto"], built[means]))
