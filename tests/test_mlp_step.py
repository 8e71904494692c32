"""The MLP gradient steps by hand (qzoo.mlp_step.FlatMLP) against autograd, clip_grad_norm_ and torch.optim.Adam."""

import copy

import numpy as np
import pytest
import torch

from qzoo import fast_updates
from qzoo.dqn import DQN
from qzoo.losses import q_loss, quantile_huber_loss, td_target
from qzoo.mlp_step import FlatMLP, loss_values
from qzoo.networks import MLP, build_q_network


def linears_of(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.Linear)]


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


def random_batches(n, n_step):
    batches = []
    for i in range(n):
        gen = torch.Generator().manual_seed(i)
        gamma = torch.rand(16, generator=gen) if n_step else 0.99
        batches.append((torch.randn(16, 4, generator=gen), torch.randn(16, 4, generator=gen),
                        torch.randint(0, 3, (16,), generator=gen), 3 * torch.randn(16, generator=gen),
                        torch.rand(16, generator=gen) < 0.2, gamma))
    return batches


@pytest.mark.parametrize("loss_kind, max_norm, double_q, n_step", [
    ("huber", 10.0, False, False),  # RL-Zoo's CartPole: clipping rarely bites
    ("huber", 0.05, True, False),  # clipping every step, Double DQN's a* from each step's weights
    ("mse", 0.5, True, True),  # squares, n-step discounts per sample
])
def test_flat_steps_follow_autograd_and_torch_adam_for_twenty_steps(loss_kind, max_norm, double_q, n_step):
    torch.manual_seed(0)
    net = MLP(4, 3, (32, 32))
    target = copy.deepcopy(net).requires_grad_(False)
    twin = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2, fused=True)
    batches = random_batches(20, n_step)
    expected = [autograd_step(net, target, optimizer, batch, loss_kind, max_norm, double_q) for batch in batches]

    flat = FlatMLP(linears_of(twin), loss_kind, max_norm)
    flat.load(linears_of(twin), twin_optimizer)
    obs, next_obs, actions, rewards, terminated = (torch.stack([b[i] for b in batches]) for i in range(5))

    def y(k):
        gamma = batches[k][5]
        next_online = flat.q(next_obs[k]) if double_q else None
        return td_target(rewards[k], terminated[k], target(next_obs[k]), gamma, next_online)

    deltas = flat.train(obs, actions, y)
    flat.store(linears_of(twin), twin_optimizer)
    np.testing.assert_allclose(loss_values(deltas, loss_kind).tolist(), expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(net.parameters(), twin.parameters()):  # Adam's state, in torch.optim.Adam's own layout
        mine, theirs = twin_optimizer.state[b], optimizer.state[a]
        assert float(mine["step"]) == float(theirs["step"]) == 20
        torch.testing.assert_close(mine["exp_avg"], theirs["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(mine["exp_avg_sq"], theirs["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), MLP(4, 3, (32, 32)).parameters()))


def quantile_autograd_step(net, target, optimizer, batch, max_norm, double_q):
    """QR-DQN's gradient step as DQN.train_step takes it: autograd through qzoo.losses.quantile_huber_loss."""
    obs, next_obs, actions, rewards, terminated, gamma = batch
    rows = torch.arange(len(actions))
    with torch.no_grad():
        next_target = target(next_obs)  # (B, A, N)
        best = (net(next_obs) if double_q else next_target).mean(dim=2).argmax(dim=1)
        discounts = gamma * (1.0 - terminated.float())
        target_quantiles = rewards[:, None] + discounts[:, None] * next_target[rows, best]
    loss = quantile_huber_loss(net.head_outputs(obs)[rows, actions], target_quantiles, 1.0).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("max_norm, double_q, n_step", [
    (10.0, False, False),  # sb3-contrib's QRDQN: a* from the target network
    (0.05, True, True),  # clipping every step, a* from each step's weights, n-step discounts per sample
])
def test_flat_quantile_steps_follow_autograd_through_the_quantile_huber_loss(max_norm, double_q, n_step):
    torch.manual_seed(0)
    net = build_q_network((4,), np.float32, 3, net_arch=[32, 32], distribution="qr", n_atoms=7)
    target = copy.deepcopy(net).requires_grad_(False)
    twin = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2, fused=True)
    batches = random_batches(20, n_step)
    expected = [quantile_autograd_step(net, target, optimizer, batch, max_norm, double_q) for batch in batches]

    linears = twin.plain_mlp_layers()
    assert linears is not None and linears[-1].out_features == 3 * 7
    flat = FlatMLP(linears, "quantile", max_norm, n_quantiles=7)
    flat.load(linears, twin_optimizer)
    obs, next_obs, actions, rewards, terminated = (torch.stack([b[i] for b in batches]) for i in range(5))

    def target_quantiles(k):
        rows, next_target = torch.arange(16), target(next_obs[k])
        best = (flat.q(next_obs[k]).view(16, 3, 7) if double_q else next_target).mean(dim=2).argmax(dim=1)
        discounts = batches[k][5] * (1.0 - terminated[k].float())
        return rewards[k][:, None] + discounts[:, None] * next_target[rows, best]

    losses = flat.train_quantiles(obs, actions, target_quantiles)
    flat.store(linears, twin_optimizer)
    np.testing.assert_allclose(losses.tolist(), expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(net.parameters(), twin.parameters()):
        mine, theirs = twin_optimizer.state[b], optimizer.state[a]
        assert float(mine["step"]) == float(theirs["step"]) == 20
        torch.testing.assert_close(mine["exp_avg"], theirs["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(mine["exp_avg_sq"], theirs["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    fresh = build_q_network((4,), np.float32, 3, net_arch=[32, 32], distribution="qr", n_atoms=7)
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), fresh.parameters()))


def test_a_flat_quantile_head_needs_the_quantile_loss_and_whole_actions_of_outputs():
    linears = build_q_network((4,), np.float32, 3, net_arch=[8], distribution="qr", n_atoms=7).plain_mlp_layers()
    with pytest.raises(ValueError):
        FlatMLP(linears, "quantile", 10.0)  # no quantile count
    with pytest.raises(ValueError):
        FlatMLP(linears, "quantile", 10.0, n_quantiles=4)  # 21 outputs are not whole actions of 4 quantiles
    with pytest.raises(ValueError):
        FlatMLP(linears, "huber", 10.0, n_quantiles=7)
    assert build_q_network((4,), np.float32, 3, distribution="c51", n_atoms=7).plain_mlp_layers() is None
    assert build_q_network((4,), np.float32, 3, dueling=True, distribution="qr", n_atoms=7).plain_mlp_layers() is None
    assert build_q_network((4,), np.float32, 3, noisy=True, distribution="qr", n_atoms=7).plain_mlp_layers() is None


def test_loss_values_are_the_mean_huber_and_squared_losses_of_each_step():
    deltas = torch.tensor([[-0.2, 0.5, 3.0, -2.0], [0.0, 0.0, 0.0, 4.0]])
    # Huber: 0.5 d^2 inside [-1, 1], |d| - 0.5 outside
    assert loss_values(deltas, "huber").tolist() == pytest.approx([(0.02 + 0.125 + 2.5 + 1.5) / 4, 3.5 / 4])
    assert loss_values(deltas, "mse").tolist() == pytest.approx([(0.04 + 0.25 + 9 + 4) / 4, 16 / 4])
    with pytest.raises(ValueError, match="unknown loss"):
        FlatMLP(linears_of(MLP(4, 2, (8,))), "l1", 10.0)


def test_adam_moments_stay_off_zero_and_denormal_numbers():
    """A unit that never fires gets zero gradients: its moments would decay into denormals (20-35x slower
    arithmetic here) or stay 0 (10x slower sqrt); FlatMLP keeps them at 0 (m) and >= 0.9e-30 (v) instead."""
    torch.manual_seed(0)
    net = MLP(4, 2, (16,))
    with torch.no_grad():
        net.net[1][0].weight[:8] = 0.0
        net.net[1][0].bias[:8] = -1.0  # 8 dead units: their weights never get a gradient
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    flat = FlatMLP(linears_of(net), "huber", 10.0)
    flat.load(linears_of(net), optimizer)
    gen = torch.Generator().manual_seed(0)
    x, actions = torch.randn(1000, 8, 4, generator=gen), torch.randint(0, 2, (1000, 8), generator=gen)
    flat.train(x, actions, lambda k: torch.ones(8))
    assert flat.t == 1000
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal float32
    m, v = flat.exp_avg, flat.exp_avg_sq
    assert not ((m != 0) & (m.abs() < tiny)).any() and (v >= 0.9e-30).all()
    assert (m == 0).any() and (v < 1e-29).any()  # the dead units' moments were there to guard


AGENT = dict(n_timesteps=2000, learning_starts=600, buffer_size=5000, batch_size=32, net_arch=[64, 64],
             eval_freq=0, seed=5, torch_threads=1)


def twin_agents(**extra):
    """Two agents with the same weights and replay memory, one stepping by hand (``train_steps``), one through
    autograd (``train_steps`` with ``manual_mlp_step`` off, or ``train_step``, the paper's step)."""
    manual = DQN("CartPole-v1", **AGENT, **extra)
    manual.learn(600)  # fills the memory; no gradient step before learning_starts
    plain = copy.deepcopy(manual)
    plain.manual_mlp_step = False
    return manual, plain


def test_dqn_uses_the_plain_mlp_step_for_the_plain_mlp_and_the_head_step_for_the_rainbow_switches():
    def path(**extra):
        agent = DQN("CartPole-v1", **AGENT, **extra)
        return type(agent._fast_updates).__name__ if agent.manual_mlp_step else None

    assert path() == "FlatMLPUpdates"
    assert path(manual_mlp_step=False) is None
    assert path(optimizer="rmsprop") is None
    assert path(precision="bfloat16") is None
    assert path(distributional="qr", n_atoms=11) == "FlatMLPUpdates"  # QR-DQN's plain MLP
    assert path(dueling=True) == path(noisy=True) == path(prioritized_replay=True) == "FlatHeadUpdates"
    assert path(distributional="c51", n_atoms=11) == "FlatHeadUpdates"
    assert path(distributional="qr", n_atoms=11, dueling=True) is None  # QR under another switch: autograd
    assert path(distributional="qr", n_atoms=11, prioritized_replay=True) is None


@pytest.mark.parametrize("extra", [{}, {"n_step": 3, "loss": "mse"}])
def test_dqn_train_step_by_hand_matches_autograd_on_the_same_minibatches(extra):
    manual, plain = twin_agents(**extra)
    losses = [(manual.train_steps(1)[0], plain.train_step()) for _ in range(30)]
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
        manual.train_steps(1), plain.train_step()
    manual.manual_mlp_step = False  # from here, torch.optim.Adam reads the moments the manual step wrote
    for _ in range(10):
        manual.train_steps(1), plain.train_steps(1)
    for a, b in zip(manual.q_net.parameters(), plain.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("double_q, burst_rows, n_step", [
    (False, 16_384, 1), (True, 16_384, 1), (False, 100, 1),
    (True, 16_384, 3),  # n-step: a stream's newest 2 rows are unusable, so bursts redraw rows
])
def test_a_burst_of_steps_samples_and_steps_as_single_steps_do(double_q, burst_rows, n_step, monkeypatch):
    """train_steps(n) draws its n minibatches in one call and the target values in one pass (in bursts of
    MLP_BURST_ROWS transitions: 100 rows make 10 bursts of 3 steps): the same rows and the same steps as n
    calls of the autograd path's train_step."""
    monkeypatch.setattr(fast_updates, "MLP_BURST_ROWS", burst_rows)
    manual, plain = twin_agents(double_q=double_q, n_step=n_step)
    if n_step > 1:  # the burst's single draw hits unusable rows: it must draw minibatch by minibatch instead
        probe = copy.deepcopy(manual.buffer.rng).integers(0, len(manual.buffer), 30 * AGENT["batch_size"])
        assert not manual.buffer._usable(probe).all()
    burst = manual.train_steps(30)
    single = [plain.train_step() for _ in range(30)]
    np.testing.assert_allclose(burst, single, rtol=1e-4)
    assert manual.num_updates == plain.num_updates == 30
    for a, b in zip(manual.q_net.parameters(), plain.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert manual.buffer.rng.bit_generator.state == plain.buffer.rng.bit_generator.state
