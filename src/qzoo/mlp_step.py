"""The gradient step of a plain MLP Q-network, by hand: autograd's arithmetic in fewer operations.

Why: RL-Zoo's CartPole-v1 preset takes 24,448 gradient steps of a 4-256-256-2 MLP on minibatches of 64 in a
50k-step run. The matrix products of one step take about 0.17 ms here; autograd, ``torch.optim.Adam``'s Python
wrapper and ``clip_grad_norm_`` add about 0.9 ms of per-operation overhead (benchmarks/mlp_floor.py). These pure
functions compute the same step with plain tensor operations and no graph:

    forward   h_0 = x,  h_l = relu(h_{l-1} W_l^T + b_l) for hidden layers,  Q = h_{L-1} W_L^T + b_L
    loss      mean_i l(Q(s_i, a_i) - y_i),  l = Huber (smooth L1, beta 1) or squares
    backward  dQ[i, a_i] = l'(delta_i) / B;  dW_l = dz_l^T h_{l-1},  db_l = sum_i dz_l,
              dh_{l-1} = dz_l W_l,  dz_{l-1} = dh_{l-1} * [h_{l-1} > 0]
    clipping  g <- g * min(1, max_norm / (||g||_2 + 1e-6))               (as torch.nn.utils.clip_grad_norm_)
    Adam      m <- beta1 m + (1 - beta1) g,  v <- beta2 v + (1 - beta2) g^2,
              theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)   (Kingma & Ba 2015,
              in torch.optim.Adam's form)

They agree with autograd and torch.optim.Adam to float32 rounding (tests/test_mlp_step.py). Nothing here imports
qzoo; ``DQN.train_step`` decides when to use them.
"""

from __future__ import annotations

from typing import Sequence

import torch

Layer = tuple[torch.Tensor, torch.Tensor]  # (weight (out, in), bias (out,)) of one nn.Linear


@torch.no_grad()
def mlp_forward(layers: Sequence[Layer], x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The inputs of every layer [h_0 = x, h_1, ..., h_{L-1}] (B, width) and the output Q (B, A)."""
    inputs = [x]
    for weight, bias in layers[:-1]:
        inputs.append(torch.relu(torch.addmm(bias, inputs[-1], weight.t())))
    weight, bias = layers[-1]
    return inputs, torch.addmm(bias, inputs[-1], weight.t())


def mlp_q(layers: Sequence[Layer], x: torch.Tensor) -> torch.Tensor:
    """Q (B, A) only: for the target network and Double DQN's choice of a*."""
    return mlp_forward(layers, x)[1]


@torch.no_grad()
def loss_gradient(q_taken: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """d mean_i l(delta_i) / d Q(s_i, a_i), delta = Q(s, a) - y (B,).

    Huber (beta 1): delta inside [-1, 1], its sign outside: ``clamp`` (Mnih et al. 2015 'clip the error term');
    squares: 2 delta. Both divided by B for the mean.
    """
    delta = q_taken - target
    if kind == "huber":
        return delta.clamp_(-1.0, 1.0).div_(len(delta))
    if kind == "mse":
        return delta.mul_(2.0 / len(delta))
    raise ValueError(f"unknown loss {kind!r}")


@torch.no_grad()
def mlp_backward(layers: Sequence[Layer], inputs: Sequence[torch.Tensor], d_out: torch.Tensor,
                 grads: Sequence[Layer]) -> None:
    """Write dLoss/dW and dLoss/db of every layer into ``grads`` (same shapes as ``layers``), given
    d_out = dLoss/dQ (B, A) and the layer inputs of ``mlp_forward``."""
    dz = d_out
    for index in range(len(layers) - 1, -1, -1):
        weight, _ = layers[index]
        grad_weight, grad_bias = grads[index]
        torch.mm(dz.t(), inputs[index], out=grad_weight)
        torch.sum(dz, dim=0, out=grad_bias)
        if index > 0:  # through layer `index` into the ReLU that made its input
            dz = torch.mm(dz, weight).mul_(inputs[index] > 0)


@torch.no_grad()
def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their joint 2-norm is at most ``max_norm``; returns the norm before."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


@torch.no_grad()
def adam_update(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                exp_avg_sqs: list[torch.Tensor], step: int, lr: float, beta1: float, beta2: float, eps: float) -> None:
    """One Adam update at step ``step`` (counting from 1), in place, as torch.optim.Adam computes it."""
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    # sqrt(v + 1e-30): this CPU's vectorised sqrt is 5-15x slower on zeros (ReLU units that never fire leave
    # v = 0: a third of CartPole's 256x256 weights), measured here. Where v = 0, m = 0 too and the update is 0
    # either way; elsewhere v >= 1e-21 and 1e-30 is below float32's resolution.
    denom = torch._foreach_add(exp_avg_sqs, 1e-30)
    torch._foreach_sqrt_(denom)
    torch._foreach_div_(denom, (1.0 - beta2**step) ** 0.5)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, -lr / (1.0 - beta1**step))


@torch.no_grad()
def adam_step(optimizer: torch.optim.Adam, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """``adam_update`` on the moments that ``optimizer`` (a torch.optim.Adam over ``params``, one parameter group)
    keeps, in its own layout (``step``, ``exp_avg``, ``exp_avg_sq``): either can continue what the other began,
    and its ``state_dict`` checkpoints them unchanged."""
    group, states = optimizer.param_groups[0], [optimizer.state[param] for param in params]
    for param, state in zip(params, states):
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    steps = [state["step"] for state in states]
    torch._foreach_add_(steps, 1.0)
    beta1, beta2 = group["betas"]
    adam_update(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                int(steps[0].item()), group["lr"], beta1, beta2, group["eps"])
