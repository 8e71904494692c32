"""The maths of DQN as pure functions of tensors: no config, no state, nothing of qzoo's imported.

The Rainbow pieces (C51, QR-DQN) are described in docs/rainbow.md; the n-step return is numpy and lives
beside the replay memory that computes it (``qzoo.buffer.n_step_returns``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def td_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float | torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q_target(s', a*).

    n-step returns: ``reward`` is G = sum_{j<k} gamma^j r_{t+j}, the Q values are at s_{t+k} and ``gamma`` is the
    per-sample discount gamma^k (B,) of ``n_step_returns``.

    a* = argmax_a Q_target(s', a) for DQN (Mnih et al. 2015, Algorithm 1);
    a* = argmax_a Q_online(s', a) for Double DQN (van Hasselt et al. 2016, eq. 4): the online network
    picks the action and the target network values it, which curbs overestimation.
    ``terminated`` is a real terminal only: a time-limit truncation still bootstraps.
    Shapes: reward, terminated (B,); next_q_* (B, A). Returns (B,), detached from every graph.
    """
    with torch.no_grad():
        if next_q_online is None:
            next_value = next_q_target.max(dim=1).values
        else:
            best = next_q_online.argmax(dim=1, keepdim=True)
            next_value = next_q_target.gather(1, best).squeeze(1)
        return reward + gamma * (1.0 - terminated.float()) * next_value


def q_loss(q_taken: torch.Tensor, target: torch.Tensor, kind: str = "huber") -> torch.Tensor:
    """Mean TD loss between Q(s, a) (B,) and y (B,).

    ``huber``: quadratic for |error| <= 1, linear beyond; the gradient of the error term is clipped to
    [-1, 1], which is how Mnih et al. (2015, Methods) 'clip the error term'. ``mse``: plain squares.
    """
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, target)
    if kind == "mse":
        return F.mse_loss(q_taken, target)
    raise ValueError(f"unknown loss {kind!r}")


def q_loss_per_sample(
    q_taken: torch.Tensor, target: torch.Tensor, kind: str = "huber", weights: torch.Tensor | None = None
) -> "PerSampleLoss":
    """``q_loss`` per sample l_i (B,), and the scalar mean_i w_i l_i with importance weights ``weights`` (B,)
    (Schaul et al. 2016, Algorithm 1, line 11). Without weights, ``loss`` equals ``q_loss``."""
    if kind == "huber":
        per_sample = F.smooth_l1_loss(q_taken, target, reduction="none")
    elif kind == "mse":
        per_sample = F.mse_loss(q_taken, target, reduction="none")
    else:
        raise ValueError(f"unknown loss {kind!r}")
    return _weighted_mean(per_sample, weights)


def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """theta_target <- tau * theta_online + (1 - tau) * theta_target; tau = 1 is the plain copy."""
    with torch.no_grad():
        if tau >= 1.0:
            for t, o in zip(target.parameters(), online.parameters()):
                t.copy_(o)
        else:
            for t, o in zip(target.parameters(), online.parameters()):
                t.lerp_(o, tau)


# ------------------------------------------------------------------------------- distributional RL


class PerSampleLoss(NamedTuple):
    """``loss``: the scalar to minimise, mean_i w_i * l_i; ``per_sample``: l_i (B,), detached (new priorities)."""

    loss: torch.Tensor
    per_sample: torch.Tensor


def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> PerSampleLoss:
    # Prioritised replay scales each sample's loss by its importance weight (Schaul et al. 2016, Algorithm 1).
    loss = per_sample.mean() if weights is None else (weights.to(per_sample.dtype) * per_sample).mean()
    return PerSampleLoss(loss, per_sample.detach())


def c51_projection(
    next_probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Project the target distribution r + discount * Z(s', a*) onto the fixed support (Bellemare et al. 2017, Alg. 1).

    Atom j of the next distribution moves to Tz_j = clip(r + discount * z_j, v_min, v_max), which falls at
    b_j = (Tz_j - v_min) / dz between the support atoms l = floor(b_j) and u = ceil(b_j); its mass p_j is split
    between them in proportion to closeness: m_l += p_j (u - b_j), m_u += p_j (b_j - l). When b_j lands exactly
    on an atom (l = u) all of p_j goes there (Algorithm 1 as printed would drop it).
    ``discounts`` already holds (1 - terminated) * gamma^n, so a terminal target is all mass at clip(r).
    The support must be evenly spaced: z_i = v_min + i * dz.
    Shapes: next_probs (B, K) for the chosen next action a*; rewards, discounts (B,); support (K,).
    Returns (B, K) probabilities, detached.
    """
    with torch.no_grad():
        n_atoms = support.shape[0]
        v_min, v_max = float(support[0]), float(support[-1])
        delta_z = (v_max - v_min) / (n_atoms - 1)
        target_z = (rewards[:, None] + discounts[:, None] * support[None, :]).clamp(v_min, v_max)
        b = ((target_z - v_min) / delta_z).clamp(0, n_atoms - 1)  # clamp: rounding can step past the last atom
        lower, upper = b.floor().long(), b.ceil().long()
        exact = (lower == upper).to(next_probs.dtype)
        projected = torch.zeros_like(next_probs)
        projected.scatter_add_(1, lower, next_probs * (upper.to(b.dtype) - b + exact))
        projected.scatter_add_(1, upper, next_probs * (b - lower.to(b.dtype)))
        return projected


def c51_target(
    next_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    support: torch.Tensor,
    next_logits_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """C51's target distribution m: ``c51_projection`` of r + discount * Z(s', a*) (Bellemare et al. 2017, Alg. 1).

    a* = argmax_a sum_k p_k(s', a) z_k of the target network's probabilities ``next_probs`` (B, A, K), or of the
    online network's (a softmax of ``next_logits_online`` (B, A, K)) for Double DQN, as Rainbow (Hessel et al.
    2018). rewards, discounts (B,) as ``c51_projection``'s. Returns (B, K), detached.
    """
    with torch.no_grad():
        picker = next_probs if next_logits_online is None else torch.softmax(next_logits_online, dim=2)
        best = (picker * support).sum(2).argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        return c51_projection(next_probs[rows, best], rewards, discounts, support)


def c51_loss(
    log_probs: torch.Tensor, target_probs: torch.Tensor, weights: torch.Tensor | None = None
) -> PerSampleLoss:
    """Cross-entropy l_i = -sum_k m_ik log p_k(s_i, a_i) (Bellemare et al. 2017, Algorithm 1, last line).

    ``log_probs``: log-probabilities of the taken actions' distributions (B, K), from a log-softmax for
    stability; ``target_probs``: ``c51_projection``'s m (B, K); ``weights``: importance weights (B,) or None.
    Rainbow (Hessel et al. 2018) prioritises by this per-sample loss.
    """
    per_sample = -(target_probs.detach() * log_probs).sum(dim=1)
    return _weighted_mean(per_sample, weights)


def quantile_midpoints(n_quantiles: int, device: torch.device | str | None = None) -> torch.Tensor:
    """tau_hat_i = (2i + 1) / (2N), i = 0..N-1: the quantile levels QR-DQN regresses (Dabney et al. 2018, Lemma 2)."""
    return (2 * torch.arange(n_quantiles, device=device, dtype=torch.float32) + 1) / (2 * n_quantiles)


def quantile_huber_loss(
    quantiles: torch.Tensor,
    target_quantiles: torch.Tensor,
    kappa: float = 1.0,
    weights: torch.Tensor | None = None,
) -> PerSampleLoss:
    """The quantile Huber loss of QR-DQN (Dabney et al. 2018, eq. 10 and Algorithm 1).

        u_ij = T theta_j - theta_i(s, a)                          (every target quantile against every quantile)
        L_kappa(u) = u^2 / 2 if |u| <= kappa, else kappa (|u| - kappa / 2)
        rho_tau(u) = |tau - 1{u < 0}| L_kappa(u) / kappa          (kappa = 0: |tau - 1{u < 0}| |u|)
        l = sum_i mean_j rho_{tau_hat_i}(u_ij),                    tau_hat_i = (2i + 1) / (2N)

    Dividing by kappa follows the paper's eq. 10; with kappa = 1 (the paper's value) it changes nothing.
    Shapes: quantiles (B, N) of the taken actions; target_quantiles (B, N') = r + discount * theta_j(s', a*),
    treated as constants; weights (B,) or None. The gradient is ``quantile_huber_parts``'s, written out: autograd
    through the formula above took 19 ms a step at QR-DQN's Atari sizes here (B 32, N = N' = 200: 25 passes over
    1.3M numbers), this about 7 (benchmarks/README.md, issue 16 section 4).
    """
    per_sample = _QuantileHuber.apply(quantiles, target_quantiles.detach(), kappa)
    return _weighted_mean(per_sample, weights)


def quantile_huber_parts(
    quantiles: torch.Tensor, target_quantiles: torch.Tensor, kappa: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantile_huber_loss``'s per-sample losses l (B,) and their gradients dl/dtheta (B, N), in few passes.

        c_ij = clamp(u_ij, -kappa, kappa)        L_kappa(u) / kappa = c (u - c / 2) / kappa,  derivative c / kappa
        w_ij = |tau_i - 1{u_ij < 0}|             = 1 - tau_i where u_ij < 0, tau_i elsewhere
        l = sum_i mean_j w_ij c_ij (u_ij - c_ij / 2) / kappa,     dl/dtheta_i = -mean_j w_ij c_ij / kappa

    (kappa = 0: L = |u|, derivative sign(u)). w is constant almost everywhere, as autograd treats it.
    The (B, N, N') differences are formed a few samples at a time, at most ``QUANTILE_CHUNK`` numbers: at QR-DQN's
    Atari sizes (N = N' = 200) whole-batch intermediates of 5 MB made each pass 2.5x slower here than 1 MB ones.
    """
    batch, n, n_target = quantiles.shape[0], quantiles.shape[1], target_quantiles.shape[1]
    tau = quantile_midpoints(n, quantiles.device).to(quantiles.dtype)[None, :, None]
    scale = 1.0 / (n_target * kappa) if kappa > 0 else 1.0 / n_target
    per_sample = quantiles.new_empty(batch)
    grad = quantiles.new_empty(batch, n)
    rows = max(1, QUANTILE_CHUNK // (n * n_target))
    for start in range(0, batch, rows):
        part = slice(start, start + rows)
        u = target_quantiles[part, None, :] - quantiles[part, :, None]  # (rows, N, N')
        weight = torch.where(u < 0, 1.0 - tau, tau)
        if kappa > 0:
            slope = u.clamp(-kappa, kappa)
            huber = torch.add(u, slope, alpha=-0.5).mul_(slope)  # L_kappa(u) = c (u - c / 2)
        else:
            slope, huber = u.sign(), u.abs()
        flat = len(u)
        torch.bmm(weight.view(flat, 1, -1), huber.view(flat, -1, 1), out=per_sample[part].view(flat, 1, 1))
        torch.sum(weight.mul_(slope), dim=2, out=grad[part])
    return per_sample.mul_(scale), grad.mul_(-scale)


QUANTILE_CHUNK = 1 << 18  # numbers per (rows, N, N') intermediate of quantile_huber_parts: 1 MB of float32


class _QuantileHuber(torch.autograd.Function):
    """Per-sample quantile Huber losses with ``quantile_huber_parts``'s gradient: no graph over the (B, N, N')
    differences, one saved (B, N) tensor."""

    @staticmethod
    def forward(ctx, quantiles: torch.Tensor, target_quantiles: torch.Tensor, kappa: float) -> torch.Tensor:
        per_sample, grad = quantile_huber_parts(quantiles, target_quantiles, kappa)
        ctx.save_for_backward(grad)
        return per_sample

    @staticmethod
    def backward(ctx, grad_per_sample: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_per_sample[:, None] * grad, None, None
