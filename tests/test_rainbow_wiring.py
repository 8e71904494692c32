"""The Rainbow switches wired into the one DQN agent: each changes what it should, and nothing else by default."""

import json

import numpy as np
import pytest
import torch

from qzoo import config as cfg
from qzoo.buffer import ReplayBuffer
from qzoo.cli import main
from qzoo.dqn import DQN
from qzoo.errors import QzooError
from qzoo.losses import q_loss, q_loss_per_sample
from qzoo.networks import MLP, NoisyLinear, QNetwork

FAST = dict(n_timesteps=600, learning_starts=200, train_freq=4, gradient_steps=1, buffer_size=2000,
            target_update_interval=100, eval_freq=0, batch_size=16, net_arch=[16, 16], torch_threads=1)


# ------------------------------------------------------------------------------------------ networks


def test_default_switches_build_the_plain_network_and_batches_without_extras():
    agent = DQN("CartPole-v1", **FAST).learn(300)
    assert type(agent.q_net) is MLP and agent.variant == "dqn"
    batch = agent.buffer.sample(8)
    assert batch.discounts is None and batch.rows is None and batch.weights is None
    assert agent.buffer.tree is None and agent.buffer.successor is None


@pytest.mark.parametrize("switch, check", [
    ({"dueling": True}, lambda net: net.value is not None and not any(isinstance(m, NoisyLinear) for m in net.modules())),
    ({"noisy": True}, lambda net: net.value is None and sum(isinstance(m, NoisyLinear) for m in net.modules()) == 3),
    ({"distributional": "c51", "n_atoms": 11}, lambda net: net.distribution == "c51" and net.support.shape == (11,)),
    ({"distributional": "qr", "n_atoms": 7}, lambda net: net.distribution == "qr" and net.n_atoms == 7),
])
def test_each_network_switch_builds_its_head(switch, check):
    agent = DQN("CartPole-v1", **FAST, **switch)
    assert isinstance(agent.q_net, QNetwork) and check(agent.q_net)
    q = agent.q_values(np.zeros(4, dtype=np.float32))
    assert q.shape == (2,)  # Q values whatever the head
    assert agent.variant == "dqn+" + "+".join(str(v) if isinstance(v, str) else k for k, v in switch.items()
                                              if k != "n_atoms")


def test_noisy_sigma0_reaches_the_layers():
    agent = DQN("CartPole-v1", **FAST, noisy=True, noisy_sigma0=0.1)
    assert {m.sigma0 for m in agent.q_net.modules() if isinstance(m, NoisyLinear)} == {0.1}


def test_adam_eps_reaches_the_optimizer():
    assert DQN("CartPole-v1", **FAST).optimizer.defaults["eps"] == 1e-8
    assert DQN("CartPole-v1", **FAST, adam_eps=1.5e-4).optimizer.defaults["eps"] == 1.5e-4


@pytest.mark.parametrize("values, message", [
    ({"distributional": "c51", "v_min": 5.0, "v_max": 5.0}, "v_min < v_max"),
    ({"distributional": "c51", "n_atoms": 1}, "n_atoms >= 2"),
    ({"n_step": 5, "buffer_size": 5}, "buffer_size must be > n_step"),
    ({"n_step": 5, "learning_starts": 3}, "learning_starts must be >= n_step - 1"),
])
def test_inconsistent_switches_are_one_clear_error(values, message):
    with pytest.raises(QzooError, match=message):
        DQN("CartPole-v1", **{**FAST, **values})


def test_bad_switch_values_are_rejected_by_the_config():
    for values in ({"distributional": "iqn"}, {"n_step": 0}, {"prioritized_replay_beta0": 1.5}, {"adam_eps": 0}):
        with pytest.raises(QzooError):
            cfg.build(values)


# ------------------------------------------------------------------------------------------- n-step


def scripted(buffer: ReplayBuffer, rewards, ends) -> None:
    """One stream: obs of transition t is [t], its next_obs [t + 1], or [t + 0.5] when the episode ends there
    (the final observation); ``ends`` maps t to 'term' or 'trunc'."""
    for t, r in enumerate(rewards):
        end = ends.get(t)
        buffer.add(np.array([t], np.float32), t, float(r), np.array([t + (0.5 if end else 1)], np.float32),
                   end == "term", end == "trunc")


def test_n_step_batch_equals_returns_worked_out_by_hand_across_a_termination_and_a_truncation():
    # Episode A: t = 0..4, terminated at 4. Episode B: t = 5..7, truncated at 7. Episode C: t = 8..10, running.
    buffer = ReplayBuffer(64, (1,), np.float32, n_step=3, gamma=0.5, seed=0)
    scripted(buffer, [1, 2, 3, 4, 5, 10, 20, 30, 100, 200, 300], {4: "term", 7: "trunc"})
    expected = {  # t: (G, discount, bootstrap next_obs)
        0: (1 + 0.5 * 2 + 0.25 * 3, 0.125, 3.0),     # bootstrap from s_3
        1: (2 + 0.5 * 3 + 0.25 * 4, 0.125, 4.0),
        2: (3 + 0.5 * 4 + 0.25 * 5, 0.0, 4.5),      # the window ends on the termination: no bootstrap
        3: (4 + 0.5 * 5, 0.0, 4.5),
        4: (5, 0.0, 4.5),
        5: (10 + 0.5 * 20 + 0.25 * 30, 0.125, 7.5),  # the truncation is the 3rd step: gamma^3
        6: (20 + 0.5 * 30, 0.25, 7.5),               # truncated after 2 steps: bootstrap with gamma^2
        7: (30, 0.5, 7.5),
        8: (100 + 0.5 * 200 + 0.25 * 300, 0.125, 11.0),
    }
    batch = buffer.sample(2000)
    seen = set()
    for i, t in enumerate(batch.actions.tolist()):
        seen.add(t)
        assert batch.obs[i, 0] == t
        assert (batch.rewards[i], batch.discounts[i], batch.next_obs[i, 0]) == pytest.approx(expected[t]), t
        assert batch.terminated[i] == (t in (2, 3, 4)) and batch.truncated[i] == (t in (5, 6, 7))
    assert seen == set(expected)  # 9 and 10 wait for their third step


def test_n_step_windows_follow_the_ring_wrap_and_skip_rows_not_yet_written():
    buffer = ReplayBuffer(6, (1,), np.float32, n_step=3, gamma=0.5, seed=1)
    scripted(buffer, list(range(11)), {})  # transitions 5..10 remain, in rows 5, 0, 1, 2, 3, 4
    batch = buffer.sample(1000)
    assert set(batch.actions.tolist()) == {5, 6, 7, 8}  # 9 and 10 are too new, 0..4 overwritten
    t = batch.actions.astype(np.float32)
    np.testing.assert_allclose(batch.rewards, t + 0.5 * (t + 1) + 0.25 * (t + 2))
    np.testing.assert_allclose(batch.next_obs[:, 0], t + 3)


def test_n_step_windows_follow_their_own_stream_when_streams_interleave():
    buffer = ReplayBuffer(64, (1,), np.float32, n_envs=2, n_step=2, gamma=0.5, seed=2)
    for t in range(6):  # stream 0 gets rewards 0, 1, 2, ...; stream 1 gets 100, 101, ...
        for env, base in ((0, 0), (1, 100)):
            buffer.add(np.array([base + t], np.float32), base + t, float(base + t),
                       np.array([base + t + 0.5], np.float32), False, False, env_index=env)
    batch = buffer.sample(500)
    first = batch.actions.astype(np.float32)
    np.testing.assert_allclose(batch.rewards, first + 0.5 * (first + 1))
    assert set(batch.actions.tolist()) == {0, 1, 2, 3, 4, 100, 101, 102, 103, 104}


def test_a_memory_without_a_complete_n_step_window_refuses_to_sample_instead_of_looping():
    for prioritized in (False, True):
        buffer = ReplayBuffer(16, (1,), np.float32, n_step=3, prioritized=prioritized, seed=0)
        scripted(buffer, [1, 1], {})
        with pytest.raises(ValueError):
            buffer.sample(4)
        scripted(buffer, [1], {})
        assert buffer.sample(4).actions.tolist() == [0, 0, 0, 0]


def test_one_step_memory_samples_as_before():
    a = ReplayBuffer(50, (1,), np.float32, seed=3)
    b = ReplayBuffer(50, (1,), np.float32, seed=3, n_step=1, prioritized=False)
    for buffer in (a, b):
        scripted(buffer, range(30), {9: "term", 20: "trunc"})
    for x, y in zip(a.sample(64), b.sample(64)):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------ prioritised replay


def test_prioritised_sampling_follows_the_priorities_and_gives_importance_weights():
    buffer = ReplayBuffer(8, (1,), np.float32, prioritized=True, alpha=1.0, priority_eps=1e-9, seed=4)
    scripted(buffer, [0, 0, 0, 0], {})
    assert buffer.tree.get(np.arange(4)).tolist() == [1.0] * 4  # new rows: the max priority
    buffer.update_priorities(np.arange(4), np.array([0.0, 1.0, -3.0, 0.0]))  # |delta|: sign does not matter
    counts = np.zeros(4)
    for _ in range(200):
        batch = buffer.sample(16, beta=0.5)
        np.add.at(counts, batch.rows, 1)
        probabilities = np.array([0.0, 0.25, 0.75, 0.0])[batch.rows]
        expected = (4 * probabilities) ** -0.5
        np.testing.assert_allclose(batch.weights, expected / expected.max(), rtol=1e-5)
    assert counts[0] == counts[3] == 0
    assert counts[2] / counts.sum() == pytest.approx(0.75, abs=0.02)


def test_prioritised_n_step_rows_wait_at_priority_zero_until_their_window_is_complete():
    buffer = ReplayBuffer(16, (1,), np.float32, n_step=3, prioritized=True, seed=5)
    scripted(buffer, [1, 1, 1, 1], {})
    assert buffer.tree.get(np.arange(4)).tolist() == [1.0, 1.0, 0.0, 0.0]
    scripted_end = np.array([4], np.float32)
    buffer.add(scripted_end, 4, 1.0, scripted_end + 0.5, True, False)  # the end completes every window
    assert buffer.tree.get(np.arange(5)).tolist() == [1.0] * 5


def test_importance_weights_scale_each_sample_loss():
    q, y = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.5, 2.0, -1.0])
    per_sample = [0.125, 1.5, 0.5]  # Huber: e^2 / 2 inside [-1, 1], |e| - 1/2 outside
    result = q_loss_per_sample(q, y, "huber", torch.tensor([1.0, 0.5, 0.0]))
    assert result.per_sample.tolist() == per_sample
    assert result.loss.item() == pytest.approx((0.125 + 0.75) / 3)
    assert q_loss_per_sample(q, y, "huber").loss.item() == pytest.approx(q_loss(q, y, "huber").item())


@pytest.mark.parametrize("distributional", ["none", "c51", "qr"])
def test_a_prioritised_step_sets_the_sampled_rows_priorities_from_their_losses(distributional):
    agent = DQN("CartPole-v1", **{**FAST, "learning_starts": 10**6}, prioritized_replay=True, distributional=distributional,
                n_atoms=11, v_min=0.0, v_max=20.0, prioritized_replay_alpha=1.0, n_step=2)
    agent.learn(300)
    before = agent.buffer.tree.get(np.arange(len(agent.buffer))).copy()
    assert set(before[before > 0].tolist()) == {1.0}
    state = agent.buffer.rng.bit_generator.state
    batch = agent.buffer.sample(agent.config.batch_size, 0.4)
    agent.buffer.rng.bit_generator.state = state  # train_step draws the same batch
    agent.train_step()
    after = agent.buffer.tree.get(batch.rows)
    assert not np.allclose(after, 1.0) and (after > 0).all()
    untouched = np.setdiff1d(np.flatnonzero(before), batch.rows)
    np.testing.assert_array_equal(agent.buffer.tree.get(untouched), before[untouched])


def test_beta_is_annealed_from_beta0_to_one_over_the_run():
    agent = DQN("CartPole-v1", **{**FAST, "learning_starts": 10**6}, prioritized_replay=True)
    betas = []
    original = agent.buffer.sample
    agent.buffer.sample = lambda n, beta: betas.append(beta) or original(n, beta)
    agent.learn(300)
    agent.num_timesteps = 0
    agent.train_step()
    agent.num_timesteps = 600
    agent.train_step()
    assert betas == pytest.approx([0.4, 1.0])


# ------------------------------------------------------------------------------------------- NoisyNet


def test_noisy_agent_explores_by_noise_redrawn_at_every_action_and_update_and_evaluates_on_the_mean():
    agent = DQN("CartPole-v1", **{**FAST, "learning_starts": 10**6}, noisy=True)
    assert agent.exploration_rate() == 0.0
    layer = next(m for m in agent.q_net.modules() if isinstance(m, NoisyLinear))
    noise = layer.eps_in.clone()
    agent.learn(5)
    assert not torch.equal(noise, layer.eps_in)  # redrawn when acting
    noise = layer.eps_in.clone()
    target_layer = next(m for m in agent.target_net.modules() if isinstance(m, NoisyLinear))
    target_noise = target_layer.eps_in.clone()
    agent.train_step()
    assert not torch.equal(noise, layer.eps_in) and not torch.equal(target_noise, target_layer.eps_in)
    obs = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    greedy = agent.q_values(obs)
    agent.q_net.reset_noise()
    np.testing.assert_array_equal(greedy, agent.q_values(obs))  # evaluation: the mean weights, no noise
    assert agent.q_net.training  # back in training mode afterwards
    assert not np.array_equal(greedy, agent.q_values(obs, noise=True))


# --------------------------------------------------------------------------------------- rainbow preset


def test_algo_rainbow_resolves_every_switch_from_the_presets(capsys):
    assert main(["train", "--algo", "rainbow", "--env", "CartPole-v1", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    c = report["config"]
    assert (c["dueling"], c["noisy"], c["distributional"], c["n_step"], c["prioritized_replay"]) == (
        True, True, "c51", 3, True)
    assert (c["v_min"], c["v_max"], c["learning_rate"], c["adam_eps"]) == (0, 100, 2.3e-3, 1.5e-4)
    assert report["variant"] == "rainbow"
    assert report["notes"][:3] == ["preset: CartPole-v1", "preset: rainbow default", "preset: rainbow CartPole-v1"]


@pytest.mark.parametrize("algo", ["rainbow", "der"])
def test_rainbow_presets_build_on_every_env_of_dqn_yml_regression_learning_starts_zero(algo):
    """Regression: RL-Zoo's LunarLander-v3 and Acrobot-v1 entries start learning at 0, which left no complete
    3-step window and made `qzoo train --algo rainbow --env LunarLander-v3` an invalid config."""
    from qzoo.envs import family

    for env_id in cfg.builtin_presets("dqn"):
        if env_id in ("atari", "minatar"):
            continue
        config, _ = cfg.resolve(env_id, family(env_id), algo=algo)
        config.check_combination()  # raises QzooError on an invalid combination
        assert config.n_step > 1 and config.learning_starts >= config.n_step - 1


def test_rainbow_atari_preset_has_hessel_2018_values():
    config, notes = cfg.resolve("PongNoFrameskip-v4", "atari", algo="rainbow")
    assert (config.learning_rate, config.adam_eps, config.learning_starts, config.target_update_interval) == (
        6.25e-5, 1.5e-4, 20_000, 8_000)
    assert (config.n_step, config.n_atoms, config.v_min, config.v_max, config.noisy_sigma0) == (3, 51, -10, 10, 0.5)
    assert (config.prioritized_replay_alpha, config.prioritized_replay_beta0) == (0.5, 0.4)
    assert config.frame_stack == 4 and config.train_freq == 4  # from dqn.yml's atari entry


# --------------------------------------------------------------------------------------- checkpoints


def test_replay_state_round_trip_keeps_priorities_windows_and_sampling_exact():
    original = ReplayBuffer(32, (1,), np.float32, n_step=3, prioritized=True, seed=6)
    scripted(original, range(40), {10: "term", 25: "trunc"})
    original.update_priorities(np.arange(0, 32, 3), np.linspace(0.1, 3, 11))
    numbers, arrays = original.state()
    restored = ReplayBuffer(32, (1,), np.float32, n_step=3, prioritized=True, seed=99)
    restored.restore(json.loads(json.dumps(numbers)), {k: np.array(v) for k, v in arrays.items()})
    np.testing.assert_array_equal(restored.tree.tree, original.tree.tree)
    assert restored.tree.max_priority == original.tree.max_priority
    for buffer in (original, restored):  # the same next rows and priorities after more steps
        scripted(buffer, [7, 8], {})
    for a, b in zip(original.sample(64, 0.7), restored.sample(64, 0.7)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n_step or prioritized_replay"):
        ReplayBuffer(32, (1,), np.float32, seed=6).restore(numbers, arrays)


def test_save_load_keeps_the_noise_and_acts_identically(tmp_path):
    agent = DQN("CartPole-v1", **FAST, noisy=True, dueling=True, distributional="c51", n_atoms=11).learn()
    agent.save(tmp_path / "model.pt")
    loaded = DQN.load(tmp_path / "model.pt")
    for a, b in zip(agent.q_net.buffers(), loaded.q_net.buffers()):
        assert torch.equal(a, b)  # eps_in, eps_out and the support
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.q_values(obs, noise=True), loaded.q_values(obs, noise=True))
    assert loaded.variant == "dqn+dueling+noisy+c51"


RAINBOW_RUN = ["train", "--algo", "rainbow", "--env", "CartPole-v1", "-n", "1200", "--seed", "2", "--deterministic",
               "--no-progress", "--json", "--set", "learning_starts=300", "checkpoint_freq=400", "eval_freq=0",
               "net_arch=[16]", "buffer_size=1000", "train_freq=4", "gradient_steps=1", "batch_size=16",
               "n_atoms=11", "log_interval=100"]


def test_rainbow_run_stopped_and_resumed_ends_with_the_weights_of_the_run_left_alone(tmp_path, capsys, monkeypatch):
    """Checkpoints carry the priorities, the sum tree's max, the waiting n-step rows, the successor links and
    the NoisyNet noise (network buffers and torch's generator): a resumed run is bit-exact."""
    from qzoo.runs import RunRecorder

    assert main([*RAINBOW_RUN, "--run-dir", str(tmp_path / "alone")]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    original = RunRecorder.on_checkpoint

    def stop_at_800(self, agent):
        original(self, agent)
        if agent.num_timesteps == 800:
            self.stop_requested = 15  # what the SIGTERM handler sets

    monkeypatch.setattr(RunRecorder, "on_checkpoint", stop_at_800)
    assert main([*RAINBOW_RUN, "--run-dir", str(tmp_path / "stopped")]) == 143
    monkeypatch.setattr(RunRecorder, "on_checkpoint", original)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "stopped"), "--json", "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["steps"] == alone["steps"] == 1200
    assert resumed["weights_sha256"] == alone["weights_sha256"]
    assert main(["info", str(tmp_path / "stopped"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["algo"] == "dqn" and info["variant"] == "rainbow" and info["config"]["n_step"] == 3


def test_der_preset_is_data_efficient_rainbow_with_its_small_cnn():
    config, notes = cfg.resolve("PongNoFrameskip-v4", "atari", algo="der")
    assert notes == ["preset: atari", "preset: PongNoFrameskip-v4", "preset: rainbow default", "preset: rainbow atari",
                     "preset: der atari"]
    assert (config.n_timesteps, config.learning_starts, config.train_freq, config.n_step) == (100_000, 1600, 1, 20)
    assert (config.target_update_interval, config.learning_rate, config.noisy_sigma0) == (2000, 1e-4, 0.1)
    assert config.network == "de_cnn" and config.net_arch == (256,) and config.distributional == "c51"
    agent = DQN("PongNoFrameskip-v4", config, buffer_size=1000)
    assert agent.stack == 4 and agent.variant == "rainbow"
    convs = [m for m in agent.q_net.body if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (5, 5), (5, 5)), (64, (5, 5), (5, 5))]
    obs = np.zeros((4, 84, 84), np.uint8)
    assert agent.q_values(obs).shape == (6,)
