"""The MLP gradient step by hand (qzoo.mlp_step) against autograd, clip_grad_norm_ and torch.optim.Adam."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qzoo.dqn import DQN
from qzoo.losses import q_loss, td_target
from qzoo.mlp_step import adam_update, clip_grad_norm, loss_gradient, mlp_backward, mlp_forward, mlp_q
from qzoo.networks import MLP


def layers_of(net):
    return [(m.weight, m.bias) for m in net.modules() if isinstance(m, torch.nn.Linear)]


def autograd_step(net, target, optimizer, batch, loss_kind, max_norm, double_q):
    obs, next_obs, actions, rewards, terminated, gamma = batch
    with torch.no_grad():
        next_online = net(next_obs) if double_q else None
        y = td_target(rewards, terminated, target(next_obs), gamma, next_online)
    loss = q_loss(net(obs).gather(1, actions[:, None]).squeeze(1), y, loss_kind)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def manual_step(net, target, state, batch, loss_kind, max_norm, double_q, lr):
    obs, next_obs, actions, rewards, terminated, gamma = batch
    online = layers_of(net)
    next_online = mlp_q(online, next_obs) if double_q else None
    y = td_target(rewards, terminated, mlp_q(layers_of(target), next_obs), gamma, next_online)
    inputs, q = mlp_forward(online, obs)
    q_taken = q.gather(1, actions[:, None]).squeeze(1)
    loss = q_loss(q_taken, y, loss_kind)
    d_q = torch.zeros_like(q).scatter_(1, actions[:, None], loss_gradient(q_taken, y, loss_kind)[:, None])
    params = [t for layer in online for t in layer]
    grads = [torch.zeros_like(p) for p in params]
    mlp_backward(online, inputs, d_q, list(zip(grads[0::2], grads[1::2])))
    clip_grad_norm(grads, max_norm)
    state["step"] += 1
    adam_update(params, grads, state["m"], state["v"], state["step"], lr, 0.9, 0.999, 1e-8)
    return loss.item()


@pytest.mark.parametrize("loss_kind, max_norm, double_q, n_step", [
    ("huber", 10.0, False, False),  # RL-Zoo's CartPole: clipping rarely bites
    ("huber", 0.05, True, False),  # clipping every step, Double DQN's a*
    ("mse", 0.5, True, True),  # squares, n-step discounts per sample
])
def test_manual_step_follows_autograd_and_torch_adam_for_twenty_steps(loss_kind, max_norm, double_q, n_step):
    torch.manual_seed(0)
    net = MLP(4, 3, (32, 32))
    target = copy.deepcopy(net).requires_grad_(False)
    twin = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    state = {"step": 0, "m": [torch.zeros_like(p) for p in twin.parameters()],
             "v": [torch.zeros_like(p) for p in twin.parameters()]}
    for i in range(20):
        gen = torch.Generator().manual_seed(i)
        gamma = torch.rand(16, generator=gen) if n_step else 0.99
        batch = (torch.randn(16, 4, generator=gen), torch.randn(16, 4, generator=gen),
                 torch.randint(0, 3, (16,), generator=gen), 3 * torch.randn(16, generator=gen),
                 torch.rand(16, generator=gen) < 0.2, gamma)
        expected = autograd_step(net, target, optimizer, batch, loss_kind, max_norm, double_q)
        got = manual_step(twin, target, state, batch, loss_kind, max_norm, double_q, 1e-2)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), MLP(4, 3, (32, 32)).parameters()))


def test_loss_gradient_is_the_derivative_of_the_huber_and_squared_losses():
    q_taken = torch.tensor([0.0, 0.5, 3.0, -2.0], requires_grad=True)
    target = torch.tensor([0.2, 0.0, 0.0, 0.0])
    for kind, loss_fn in (("huber", F.smooth_l1_loss), ("mse", F.mse_loss)):
        (grad,) = torch.autograd.grad(loss_fn(q_taken, target), q_taken)
        torch.testing.assert_close(loss_gradient(q_taken.detach(), target, kind), grad)
    # Huber by hand: delta = (-0.2, 0.5, 3, -2) -> clipped (-0.2, 0.5, 1, -1), over B = 4
    assert loss_gradient(q_taken.detach(), target, "huber").tolist() == pytest.approx([-0.05, 0.125, 0.25, -0.25])


AGENT = dict(n_timesteps=2000, learning_starts=600, buffer_size=5000, batch_size=32, net_arch=[64, 64],
             eval_freq=0, seed=5, torch_threads=1)


def twin_agents(**extra):
    """Two agents with the same weights and replay memory, one stepping by hand, one through autograd."""
    manual = DQN("CartPole-v1", **AGENT, **extra)
    manual.learn(600)  # fills the memory; no gradient step before learning_starts
    plain = copy.deepcopy(manual)
    plain.manual_mlp_step = False
    return manual, plain


def test_dqn_uses_the_manual_step_for_the_plain_mlp_only():
    assert DQN("CartPole-v1", **AGENT).manual_mlp_step
    assert not DQN("CartPole-v1", **AGENT, manual_mlp_step=False).manual_mlp_step
    assert not DQN("CartPole-v1", **AGENT, optimizer="rmsprop").manual_mlp_step
    assert not DQN("CartPole-v1", **AGENT, dueling=True).manual_mlp_step
    assert not DQN("CartPole-v1", **AGENT, prioritized_replay=True).manual_mlp_step
    assert not DQN("CartPole-v1", **AGENT, precision="bfloat16").manual_mlp_step


@pytest.mark.parametrize("extra", [{}, {"n_step": 3, "loss": "mse"}])
def test_dqn_train_step_by_hand_matches_autograd_on_the_same_minibatches(extra):
    manual, plain = twin_agents(**extra)
    losses = [(manual.train_step(), plain.train_step()) for _ in range(30)]
    np.testing.assert_allclose(*zip(*losses), rtol=1e-4)
    for a, b in zip(manual.q_net.parameters(), plain.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    manual_state, plain_state = manual.optimizer.state_dict(), plain.optimizer.state_dict()
    assert manual_state["state"].keys() == plain_state["state"].keys()
    for key, state in manual_state["state"].items():
        assert state.keys() == plain_state["state"][key].keys() and float(state["step"]) == manual.num_updates == 30
        torch.testing.assert_close(state["exp_avg_sq"], plain_state["state"][key]["exp_avg_sq"], rtol=1e-3, atol=1e-9)


def test_autograd_continues_where_the_manual_step_left_adam():
    """Adam's moments live where torch.optim.Adam keeps them: a checkpoint of either path resumes in the other."""
    manual, plain = twin_agents()
    for _ in range(10):
        manual.train_step(), plain.train_step()
    manual.manual_mlp_step = False  # from here, torch.optim.Adam reads the moments the manual step wrote
    for _ in range(10):
        manual.train_step(), plain.train_step()
    for a, b in zip(manual.q_net.parameters(), plain.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
