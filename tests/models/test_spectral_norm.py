import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from sngan.models.spectral_norm import SpectralNorm, layer_sigmas, raw_weight, sn_layers, spectral_norm


def _sn(module, n_iters=1, target=1.0):
    torch.manual_seed(0)
    return spectral_norm(module, n_iters, target)


def _param(module) -> SpectralNorm:
    return module.parametrizations.weight[0]


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(5, 7, 3), lambda: nn.Linear(20, 9)])
def test_sigma_converges_to_largest_singular_value(make):
    torch.manual_seed(1)
    layer = _sn(make(), n_iters=100)
    layer.train()
    _ = layer.weight  # one forward of the parametrization: 100 power iterations
    exact = torch.linalg.matrix_norm(raw_weight(layer).detach().flatten(1), ord=2)
    assert _param(layer).sigma(raw_weight(layer).detach()) == pytest.approx(float(exact), rel=1e-3)


@pytest.mark.parametrize("target", [1.0, 2.5])
def test_normalised_weight_has_spectral_norm_target(target):
    torch.manual_seed(2)
    layer = _sn(nn.Conv2d(4, 6, 3), n_iters=100, target=target)
    w_sn = layer.weight.detach().flatten(1)
    assert float(torch.linalg.matrix_norm(w_sn, ord=2)) == pytest.approx(target, rel=1e-3)


def _pair(make, n_iters):
    """Our SN layer and PyTorch's, with identical weights."""
    torch.manual_seed(3)
    ours, ref = make(), make()
    ref.load_state_dict(ours.state_dict())
    spectral_norm(ours, n_iters=n_iters)
    parametrizations.spectral_norm(ref, n_power_iterations=n_iters)
    return ours, ref


def _forward_backward(layer, x, g):
    x = x.clone().requires_grad_()
    out = layer(x)
    out.backward(g)
    return out, x.grad, raw_weight(layer).grad


MAKERS = [lambda: nn.Conv2d(3, 8, 4, 2, 1), lambda: nn.Linear(12, 5)]


def _input(layer):
    return torch.randn(2, 3, 8, 8) if isinstance(layer, nn.Conv2d) else torch.randn(4, 12)


@pytest.mark.parametrize("make", MAKERS)
def test_forward_and_gradients_match_pytorch_given_same_u(make):
    """Eval mode, same u: PyTorch uses its stored (u, v), we derive v = W^T u / |W^T u|."""
    ours, ref = _pair(make, 1)
    u = _param(ours).u
    w = raw_weight(ours).detach().flatten(1)
    ref.parametrizations.weight[0]._u.copy_(u)
    ref.parametrizations.weight[0]._v.copy_(torch.nn.functional.normalize(w.t() @ u, dim=0))
    ours.eval(), ref.eval()
    x = _input(ours)
    g = torch.randn_like(ours(x))
    for a, b in zip(_forward_backward(ours, x, g), _forward_backward(ref, x, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", MAKERS)
def test_training_forward_matches_pytorch_once_converged(make):
    """PyTorch iterates u from v first, the paper v from u first (as we do); both converge to
    the same sigma, so forwards and gradients agree once the power iteration has converged."""
    ours, ref = _pair(make, 200)
    x = _input(ours)
    g = torch.randn_like(ours(x))
    for a, b in zip(_forward_backward(ours, x, g), _forward_backward(ref, x, g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gradient_flows_through_sigma():
    """With u, v constant, d(W/sigma)/dW differs from 1/sigma by the rank-one sigma term."""
    torch.manual_seed(4)
    layer = _sn(nn.Linear(6, 4), n_iters=50)
    w = raw_weight(layer)
    layer.weight.sum().backward()
    sigma = torch.linalg.matrix_norm(w.detach(), ord=2)
    naive = torch.full_like(w, 1.0) / sigma  # the gradient if sigma were a constant
    assert not torch.allclose(w.grad, naive, atol=1e-4)


def test_eval_mode_leaves_u_unchanged_and_train_mode_updates_it():
    layer = _sn(nn.Conv2d(3, 5, 3))
    u0 = _param(layer).u.clone()
    layer.eval()
    layer(torch.randn(1, 3, 6, 6))
    torch.testing.assert_close(_param(layer).u, u0, rtol=0, atol=0)
    layer.train()
    layer(torch.randn(1, 3, 6, 6))
    assert not torch.equal(_param(layer).u, u0)


def test_u_is_in_state_dict_and_restored():
    a = _sn(nn.Linear(5, 3))
    a(torch.randn(2, 5))
    state = a.state_dict()
    assert "parametrizations.weight.0.u" in state
    torch.manual_seed(99)
    b = spectral_norm(nn.Linear(5, 3))
    b.load_state_dict(state)
    torch.testing.assert_close(_param(b).u, _param(a).u, rtol=0, atol=0)


def test_sigma_stays_fp32_under_autocast():
    layer = _sn(nn.Linear(16, 8), n_iters=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = layer.weight
    exact = torch.linalg.matrix_norm(w.float(), ord=2)
    assert float(exact.detach()) == pytest.approx(1.0, rel=1e-3)


def test_layer_sigmas_reports_every_weight_layer():
    torch.manual_seed(5)
    model = nn.Sequential(_sn(nn.Conv2d(3, 4, 3), n_iters=50), nn.ReLU(), nn.Conv2d(4, 4, 3))
    model.train()
    _ = model[0].weight
    sig = layer_sigmas(model)
    assert set(sig) == {"0", "2"} and set(sn_layers(model)) == {"0"}
    assert sig["0"] == pytest.approx(float(torch.linalg.matrix_norm(raw_weight(model[0]).flatten(1), ord=2)), rel=1e-3)
    assert sig["2"] == pytest.approx(float(torch.linalg.matrix_norm(model[2].weight.detach().flatten(1), ord=2)), rel=1e-5)
