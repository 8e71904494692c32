"""The maths of DQN as pure functions of tensors: no config, no state, nothing of qzoo's imported."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def td_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q_target(s', a*).

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


def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """theta_target <- tau * theta_online + (1 - tau) * theta_target; tau = 1 is the plain copy."""
    with torch.no_grad():
        if tau >= 1.0:
            for t, o in zip(target.parameters(), online.parameters()):
                t.copy_(o)
        else:
            for t, o in zip(target.parameters(), online.parameters()):
                t.lerp_(o, tau)
