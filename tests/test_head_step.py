"""The Rainbow MLP head's gradient steps by hand (qzoo.head_step.FlatHead) against autograd, clip_grad_norm_ and
torch.optim.Adam, as DQN.train_step takes them: dueling streams, noisy layers, C51 atoms, importance weights."""

import copy

import numpy as np
import pytest
import torch

from qzoo.head_step import FlatHead
from qzoo.losses import c51_loss, c51_target, q_loss_per_sample, td_target
from qzoo.networks import build_q_network

B, A, K = 16, 3, 11


def network(loss, dueling, noisy):
    distribution, atoms = ("c51", K) if loss == "c51" else ("none", 1)
    return build_q_network((4,), np.float32, A, net_arch=[32, 32], dueling=dueling, noisy=noisy,
                           distribution=distribution, n_atoms=atoms, v_min=-5.0, v_max=5.0)


def random_batch(k):
    gen = torch.Generator().manual_seed(k)
    return (torch.randn(B, 4, generator=gen), torch.randn(B, 4, generator=gen), torch.randint(0, A, (B,), generator=gen),
            2 * torch.randn(B, generator=gen), torch.rand(B, generator=gen) < 0.2, torch.rand(B, generator=gen),
            0.5 + torch.rand(B, generator=gen))  # obs, next obs, actions, rewards, terminated, gamma^n, IS weights


def target_of(loss, batch, next_target, next_online, support):
    _, _, _, rewards, terminated, gamma, _ = batch
    if loss == "c51":
        return c51_target(next_target, rewards, gamma * (1.0 - terminated.float()), support, next_online)
    return td_target(rewards, terminated, next_target, gamma, None if next_online is None else next_online.squeeze(2))


def autograd_step(net, target_net, optimizer, batch, loss, max_norm, weighted):
    """DQN.train_step's arithmetic: a Double DQN target, the loss through autograd, clipping, torch.optim.Adam."""
    obs, next_obs, actions, *_, weights = batch
    weights = weights if weighted else None
    rows = torch.arange(B)
    with net.shared_noisy_weights():
        with torch.no_grad():
            next_target, next_online = target_net(next_obs), net.head_outputs(next_obs)
        out = net.head_outputs(obs)
    y = target_of(loss, batch, next_target, next_online, getattr(net, "support", None))
    if loss == "c51":
        result = c51_loss(torch.log_softmax(out[rows, actions], dim=1), y, weights)
        priorities = result.per_sample
    else:
        q_taken = out.squeeze(2)[rows, actions]
        result, priorities = q_loss_per_sample(q_taken, y, loss, weights), (y - q_taken).detach()
    optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
    optimizer.step()
    return result.loss.item(), priorities


@pytest.mark.parametrize("loss, dueling, noisy, weighted, max_norm", [
    ("c51", True, True, True, 10.0),  # the Rainbow preset's head with prioritised replay's weights
    ("c51", False, False, False, 0.05),  # C51 alone, clipping at every step
    ("huber", True, False, True, 0.05),  # dueling Q with weights (the Q loss's priorities are y - Q(s, a))
    ("mse", False, True, False, 10.0),  # noisy Q, squares
])
def test_flat_head_steps_follow_autograd_and_torch_adam_for_twenty_steps(loss, dueling, noisy, weighted, max_norm):
    torch.manual_seed(0)
    net = network(loss, dueling, noisy)
    target_net = copy.deepcopy(net).requires_grad_(False)
    twin = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2, fused=True)
    flat = FlatHead(twin.head_streams(), list(twin.parameters()), A, K if loss == "c51" else 1, loss, max_norm)
    flat.load_tensors(list(twin.parameters()), twin_optimizer)
    for k in range(20):
        batch = random_batch(k)
        for module in (net, twin, target_net):  # the same noise for both: each network draws its own
            module.reset_noise(torch.Generator().manual_seed(100 + k))
        expected_loss, expected_priorities = autograd_step(net, target_net, optimizer, batch, loss, max_norm, weighted)
        obs, next_obs, actions, *_, weights = batch
        flat.build()
        next_online = flat.outputs(next_obs, keep=False)
        y = target_of(loss, batch, target_net(next_obs), next_online, getattr(twin, "support", None))
        step_loss, priorities = flat.step(flat.outputs(obs), actions, y, weights if weighted else None)
        assert step_loss.item() == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
        torch.testing.assert_close(priorities, expected_priorities, rtol=1e-4, atol=1e-6)
    flat.store_tensors(list(twin.parameters()), twin_optimizer)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(net.parameters(), twin.parameters()):  # Adam's state, in torch.optim.Adam's own layout
        mine, theirs = twin_optimizer.state[b], optimizer.state[a]
        assert float(mine["step"]) == float(theirs["step"]) == 20
        torch.testing.assert_close(mine["exp_avg"], theirs["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(mine["exp_avg_sq"], theirs["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    fresh = target_net  # the weights before the 20 steps: they did move
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), fresh.parameters()))


def test_a_noisy_layers_sigma_gets_the_gradient_of_its_noise_and_mu_the_whole_of_it():
    torch.manual_seed(1)
    net = network("huber", False, True)
    net.reset_noise(torch.Generator().manual_seed(5))
    flat = FlatHead(net.head_streams(), list(net.parameters()), A, 1, "huber", 1e9)
    flat.load_tensors(list(net.parameters()), torch.optim.Adam(net.parameters()))
    flat.build()
    obs, _, actions, rewards, *_ = random_batch(0)
    flat.step(flat.outputs(obs), actions, rewards, None)
    layer = net.head_streams()[0][-1]
    grad_mu, grad_sigma = flat.views(flat.grads)[-4:-2]
    noise = torch.outer(layer.eps_out, layer.eps_in)
    assert grad_mu.abs().sum() > 0
    torch.testing.assert_close(grad_sigma, grad_mu * noise)  # W = mu + sigma * E


def test_a_flat_head_refuses_streams_that_are_not_the_networks_parameters_or_a_loss_without_its_atoms():
    net, other = network("c51", True, True), network("c51", True, True)
    with pytest.raises(ValueError, match="not the network's"):
        FlatHead(net.head_streams(), list(other.parameters()), A, K, "c51", 10.0)
    with pytest.raises(ValueError, match="not the network's"):
        FlatHead(net.head_streams()[::-1], list(net.parameters()), A, K, "c51", 10.0)
    with pytest.raises(ValueError, match="atoms"):
        FlatHead(net.head_streams(), list(net.parameters()), A, 1, "c51", 10.0)


def test_only_a_network_on_a_flatten_body_offers_its_head_streams():
    frames = build_q_network((4, 10, 10), np.uint8, A, dueling=True, noisy=True)  # MinAtar's convolution
    assert frames.head_streams() is None
    dueling = network("c51", True, False).head_streams()
    assert [len(stream) for stream in dueling] == [3, 3]  # advantage, value: two hidden layers and an output
    assert dueling[0][-1].out_features == A * K and dueling[1][-1].out_features == K
