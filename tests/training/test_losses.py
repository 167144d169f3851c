import math

import pytest
import torch

from sngan.training.losses import LOSSES, hinge_d, hinge_g, standard_d, standard_g

REAL = torch.tensor([2.0, -0.5])
FAKE = torch.tensor([-1.5, 0.5])


def test_hinge_by_hand():
    # relu(1 - [2, -0.5]) = [0, 1.5] -> 0.75 ; relu(1 + [-1.5, 0.5]) = [0, 1.5] -> 0.75
    assert float(hinge_d(REAL, FAKE)) == pytest.approx(1.5)
    assert float(hinge_g(FAKE)) == pytest.approx(0.5)  # -mean([-1.5, 0.5])


def test_standard_by_hand():
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expect_d = (softplus(-2.0) + softplus(0.5)) / 2 + (softplus(-1.5) + softplus(0.5)) / 2
    assert float(standard_d(REAL, FAKE)) == pytest.approx(expect_d, rel=1e-6)
    # non-saturating G loss: -log sigmoid(D(G(z)))
    expect_g = (-math.log(1 / (1 + math.exp(1.5))) - math.log(1 / (1 + math.exp(-0.5)))) / 2
    assert float(standard_g(FAKE)) == pytest.approx(expect_g, rel=1e-6)


def test_standard_is_stable_for_large_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(standard_d(big, -big)) and torch.isfinite(standard_g(big))
    assert float(standard_d(torch.tensor([1e4]), torch.tensor([-1e4]))) == pytest.approx(0.0, abs=1e-6)


def test_registry_names():
    assert set(LOSSES) == {"standard", "hinge", "wasserstein"}


def test_wasserstein_by_hand():
    from sngan.training.losses import wasserstein_d, wasserstein_g
    assert float(wasserstein_d(REAL, FAKE)) == pytest.approx(-0.5 - 0.75)  # mean(fake) - mean(real)
    assert float(wasserstein_g(FAKE)) == pytest.approx(0.5)


def test_gradient_penalty_of_a_linear_critic():
    """For D(x) = <w, x> the input gradient is w everywhere, so the penalty is (|w| - 1)^2."""
    from torch import nn

    from sngan.training.losses import gradient_penalty
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    gp = gradient_penalty(D, real, fake)
    expect = (D[1].weight.norm() - 1) ** 2
    assert float(gp.detach()) == pytest.approx(float(expect.detach()), rel=1e-5)
    gp.backward()  # the penalty's gradient reaches D's weights
    assert D[1].weight.grad is not None and D[1].weight.grad.abs().sum() > 0
