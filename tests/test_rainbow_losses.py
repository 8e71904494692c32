"""n-step returns, the C51 projection and loss, and the quantile Huber loss against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch

from qzoo import losses
from qzoo.buffer import n_step_returns
from qzoo.losses import c51_loss, c51_projection, quantile_huber_loss, quantile_midpoints

F, T = False, True


def test_n_step_return_runs_through_the_window():
    # gamma 0.5, rewards 1 2 4: G = 1 + 0.5 * 2 + 0.25 * 4 = 3; bootstrap from s_{t+3} with 0.5^3 = 0.125.
    out = n_step_returns(np.array([[1.0, 2.0, 4.0]]), np.array([[F, F, F]]), np.array([[F, F, F]]), gamma=0.5)
    assert out.returns.tolist() == [3.0]
    assert out.discounts.tolist() == [0.125]
    assert out.bootstrap_offset.tolist() == [2]


def test_n_step_return_across_a_terminal_does_not_bootstrap():
    # Terminated at the 2nd step: G = 1 + 0.5 * 2 = 2, discount 0; the 4 belongs to the next episode.
    # Terminated at the 1st step: G = 1. Terminated and truncated together: a terminal wins, G = 3, discount 0.
    rewards = np.array([[1.0, 2.0, 4.0]] * 3)
    terminated = np.array([[F, T, F], [T, F, F], [F, F, T]])
    truncated = np.array([[F, F, F], [F, F, T], [F, F, T]])
    out = n_step_returns(rewards, terminated, truncated, gamma=0.5)
    assert out.returns.tolist() == [2.0, 1.0, 3.0]
    assert out.discounts.tolist() == [0.0, 0.0, 0.0]
    assert out.bootstrap_offset.tolist() == [1, 0, 2]


def test_n_step_return_across_a_truncation_bootstraps_early():
    # Truncated at the 2nd step: G = 1 + 0.5 * 2 = 2 and bootstrap from the truncation's final observation,
    # s_{t+2}, with 0.5^2 = 0.25 (k = 2 < n = 3). Truncated at the 1st step, then a terminal in the next
    # episode: G = 1, discount 0.5, the terminal ignored.
    rewards = np.array([[1.0, 2.0, 4.0]] * 2)
    terminated = np.array([[F, F, F], [F, T, F]])
    truncated = np.array([[F, T, F], [T, F, F]])
    out = n_step_returns(rewards, terminated, truncated, gamma=0.5)
    assert out.returns.tolist() == [2.0, 1.0]
    assert out.discounts.tolist() == [0.25, 0.5]
    assert out.bootstrap_offset.tolist() == [1, 0]


def test_one_step_return_is_the_dqn_target():
    out = n_step_returns(np.array([[1.0], [-1.0]]), np.array([[F], [T]]), np.array([[F], [F]]), gamma=0.99)
    assert out.returns.tolist() == [1.0, -1.0]
    assert out.discounts.tolist() == pytest.approx([0.99, 0.0])
    assert out.bootstrap_offset.tolist() == [0, 0]


SUPPORT = torch.tensor([-1.0, 0.0, 1.0])  # v_min -1, v_max 1, dz 1
NEXT = torch.tensor([0.2, 0.3, 0.5])


@pytest.mark.parametrize(
    "reward, discount, expected",
    [
        # Tz = 0.5 + 0.5 * (-1, 0, 1) = 0, 0.5, 1 -> b = 1, 1.5, 2: 0.2 all to atom 1 (exact), 0.3 split
        # 0.15 / 0.15 between atoms 1 and 2, 0.5 all to atom 2 -> (0, 0.35, 0.65).
        (0.5, 0.5, [0.0, 0.35, 0.65]),
        # Tz = -1, -0.5, 0 -> b = 0, 0.5, 1 -> (0.2 + 0.15, 0.15 + 0.5, 0).
        (-0.5, 0.5, [0.35, 0.65, 0.0]),
        # Terminal (discount 0): every atom at r = -0.25, b = 0.75 -> 1/4 to atom 0, 3/4 to atom 1.
        (-0.25, 0.0, [0.25, 0.75, 0.0]),
        # Tz = 1, 2, 3 clipped to v_max = 1: all the mass on the last atom.
        (2.0, 1.0, [0.0, 0.0, 1.0]),
    ],
)
def test_c51_projection_by_hand(reward, discount, expected):
    projected = c51_projection(NEXT[None], torch.tensor([reward]), torch.tensor([discount]), SUPPORT)
    assert projected[0].tolist() == pytest.approx(expected)
    assert projected.sum().item() == pytest.approx(1.0)


def test_c51_projection_is_batched_and_detached():
    next_probs = NEXT[None].repeat(2, 1).requires_grad_(True)
    projected = c51_projection(next_probs, torch.tensor([0.5, -0.25]), torch.tensor([0.5, 0.0]), SUPPORT)
    assert not projected.requires_grad
    assert projected.tolist() == [pytest.approx([0.0, 0.35, 0.65]), pytest.approx([0.25, 0.75, 0.0])]


def test_c51_loss_is_the_cross_entropy_by_hand():
    # -(0.5 ln 0.25 + 0.5 ln 0.5) = 1.5 ln 2; -(1 * ln 0.5) = ln 2; weights 1, 2 -> (1.5 + 2) ln 2 / 2.
    log_probs = torch.log(torch.tensor([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]))
    target = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    out = c51_loss(log_probs, target)
    assert out.per_sample.tolist() == pytest.approx([1.5 * math.log(2), math.log(2)])
    assert out.loss.item() == pytest.approx(1.25 * math.log(2))
    weighted = c51_loss(log_probs, target, weights=torch.tensor([1.0, 2.0]))
    assert weighted.loss.item() == pytest.approx(1.75 * math.log(2))


def test_c51_loss_gradient_flows_into_the_prediction_only():
    logits = torch.zeros(1, 3, requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 1.0]], requires_grad=True)
    c51_loss(torch.log_softmax(logits, dim=1), target).loss.backward()
    # d/dlogits of -log softmax_2 = softmax - onehot = (1/3, 1/3, -2/3); nothing flows into the target.
    assert logits.grad[0].tolist() == pytest.approx([1 / 3, 1 / 3, -2 / 3])
    assert target.grad is None


def test_quantile_midpoints():
    assert quantile_midpoints(2).tolist() == [0.25, 0.75]
    assert quantile_midpoints(4).tolist() == [0.125, 0.375, 0.625, 0.875]


def test_quantile_huber_loss_by_hand():
    # N = 2 quantiles theta = (0, 1) at tau_hat = (0.25, 0.75); targets (0.5, 3); kappa = 1.
    # i = 0: u = 0.5, 3 (>= 0, weight 0.25): 0.25 * 0.125 and 0.25 * (3 - 0.5) -> mean (0.03125 + 0.625) / 2 = 0.328125
    # i = 1: u = -0.5 (< 0, weight 0.25), 2 (weight 0.75): 0.25 * 0.125 and 0.75 * 1.5 -> mean 0.578125
    # l = 0.328125 + 0.578125 = 0.90625. Second sample: quantiles equal to targets, l = 0.
    quantiles = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    targets = torch.tensor([[0.5, 3.0], [1.0, 1.0]])
    out = quantile_huber_loss(quantiles, targets, kappa=1.0)
    assert out.per_sample.tolist() == pytest.approx([0.90625, 0.0])
    assert out.loss.item() == pytest.approx(0.90625 / 2)
    out.loss.backward()
    # d l / d theta_0 = -mean_j 0.25 * L'(u_0j) = -(0.25 * 0.5 + 0.25 * 1) / 2 = -0.1875, halved by the batch mean;
    # d l / d theta_1 = -(-0.25 * 0.5 + 0.75 * 1) / 2 = -0.3125, halved.
    assert quantiles.grad[0].tolist() == pytest.approx([-0.1875 / 2, -0.3125 / 2])
    weighted = quantile_huber_loss(quantiles, targets, kappa=1.0, weights=torch.tensor([0.5, 1.0]))
    assert weighted.loss.item() == pytest.approx(0.5 * 0.90625 / 2)


def test_quantile_loss_with_kappa_zero_is_the_pinball_loss():
    # kappa 0: |tau - 1{u<0}| |u|. i = 0: 0.25 * 0.5, 0.25 * 3 -> 0.4375; i = 1: 0.25 * 0.5, 0.75 * 2 -> 0.8125.
    out = quantile_huber_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 3.0]]), kappa=0.0)
    assert out.per_sample.tolist() == pytest.approx([0.4375 + 0.8125])


def test_quantile_loss_kappa_scales_the_quadratic_zone():
    # kappa 2, theta (0,), tau_hat 0.5, target 3: L_2(3) = 2 * (3 - 1) = 4, / kappa = 2, * 0.5 = 1.
    out = quantile_huber_loss(torch.tensor([[0.0]]), torch.tensor([[3.0]]), kappa=2.0)
    assert out.per_sample.tolist() == pytest.approx([1.0])


def formula_quantile_huber(quantiles, targets, kappa):
    """Dabney et al.'s eq. 10 term by term, through autograd: the oracle of the written-out gradient."""
    tau = quantile_midpoints(quantiles.shape[1])[None, :, None]
    u = targets[:, None, :] - quantiles[:, :, None]
    huber = torch.where(u.abs() <= kappa, 0.5 * u**2, kappa * (u.abs() - 0.5 * kappa)) / kappa if kappa else u.abs()
    return ((tau - (u < 0).float()).abs() * huber).mean(dim=2).sum(dim=1)


@pytest.mark.parametrize("kappa", [1.0, 0.0, 2.0])
def test_quantile_huber_loss_gradient_is_autograds_through_the_papers_formula(kappa):
    gen = torch.Generator().manual_seed(int(kappa))
    quantiles = (3 * torch.randn(16, 9, generator=gen)).requires_grad_()
    targets = 3 * torch.randn(16, 11, generator=gen)  # N' != N
    weights = torch.rand(16, generator=gen)
    twin = quantiles.detach().clone().requires_grad_()
    out = quantile_huber_loss(quantiles, targets, kappa, weights)
    out.loss.backward()
    expected = formula_quantile_huber(twin, targets, kappa)
    (weights * expected).mean().backward()
    torch.testing.assert_close(out.per_sample, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(quantiles.grad, twin.grad, rtol=1e-5, atol=1e-7)
    assert quantiles.grad.abs().sum() > 0


def test_quantile_huber_loss_in_chunks_of_samples_equals_the_whole_batch(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    quantiles, targets = torch.randn(10, 6, generator=gen), torch.randn(10, 5, generator=gen)
    whole = losses.quantile_huber_parts(quantiles, targets, 1.0)
    monkeypatch.setattr(losses, "QUANTILE_CHUNK", 3 * 6 * 5)  # 3 samples a pass: 4 passes, the last of 1
    chunked = losses.quantile_huber_parts(quantiles, targets, 1.0)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
