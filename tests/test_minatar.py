"""MinAtar's five games through qzoo's env factory, its presets and its network."""

import numpy as np
import pytest
import torch

from qzoo import config as cfg
from qzoo.envs import family, make_env
from qzoo.minatar import CHANNELS, GAMES, ChannelsFirst
from qzoo.networks import MinAtarCNN, build_q_network


@pytest.mark.parametrize("game", GAMES)
def test_each_game_builds_steps_and_feeds_the_network(game):
    env = make_env(f"MinAtar/{game}-v1")
    obs, _ = env.reset(seed=0)
    channels = CHANNELS[game]
    assert obs.shape == (channels, 10, 10) and obs.dtype == np.uint8
    assert env.observation_space.shape == (channels, 10, 10)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert set(np.unique(obs)) <= {0, 1}
    net = build_q_network(env.observation_space.shape, env.observation_space.dtype, int(env.action_space.n))
    assert isinstance(net, MinAtarCNN)
    q = net(torch.as_tensor(obs[None]))
    assert q.shape == (1, env.action_space.n)
    env.close()


def test_minimal_and_full_action_sets():
    assert make_env("MinAtar/Breakout-v1").action_space.n == 3  # noop, left, right
    assert make_env("MinAtar/Breakout-v0").action_space.n == 6  # all six


def test_channels_first_moves_the_object_channels_to_the_front():
    grid = np.zeros((10, 10, 4), dtype=bool)
    grid[2, 7, 3] = True  # row 2, column 7, channel 3
    out = ChannelsFirst.observation(None, grid)
    assert out.shape == (4, 10, 10) and out.dtype == np.uint8
    assert out[3, 2, 7] == 1 and out.sum() == 1


def test_same_seed_same_game():
    def play(seed):
        env = make_env("MinAtar/Asterix-v1")
        frames = [env.reset(seed=seed)[0]]
        for t in range(50):
            obs, *_ = env.step(t % env.action_space.n)
            frames.append(obs)
        return np.stack(frames)

    assert np.array_equal(play(3), play(3))
    assert not np.array_equal(play(3), play(4))


def test_real_episode_return_is_recorded():
    env = make_env("MinAtar/Breakout-v1", training=False)
    env.reset(seed=0)
    total = 0.0
    for _ in range(10_000):  # a random paddle loses the ball within a few hundred frames
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
        if terminated or truncated:
            break
    assert terminated
    assert info["episode"]["r"] == pytest.approx(total)


def test_minatar_family_and_young_tian_preset():
    assert family("MinAtar/Seaquest-v1") == "minatar"
    assert family("CartPole-v1") is None
    config, notes = cfg.resolve("MinAtar/Seaquest-v1", family("MinAtar/Seaquest-v1"))
    assert "preset: minatar" in notes
    # Young & Tian 2019: batch 32, replay 100k, target update 1000, RMSProp lr 2.5e-4, epsilon 1 -> 0.1 over
    # 100k of 5M frames, replay start 5000, gamma 0.99, an update every frame.
    assert (config.batch_size, config.buffer_size, config.target_update_interval) == (32, 100_000, 1000)
    assert (config.optimizer, config.learning_rate) == ("rmsprop", 2.5e-4)
    assert config.exploration_final_eps == 0.1
    assert config.exploration_fraction * config.n_timesteps == pytest.approx(100_000)
    assert (config.learning_starts, config.gamma, config.train_freq, config.n_timesteps) == (5000, 0.99, 1, 5_000_000)
