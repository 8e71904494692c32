"""The env factory on real Gymnasium and ALE envs."""

import subprocess
import sys

import numpy as np
import pytest

from qzoo.envs import EnvOptions, is_atari, make_env
from qzoo.errors import QzooError

SPACE_INVADERS = "SpaceInvadersNoFrameskip-v4"


def play(env, steps, seed=0):
    """Random play; returns rewards, (terminated, truncated) flags and lives seen at each step."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    rewards, ends, lives = [], [], []
    for _ in range(steps):
        _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        rewards.append(reward)
        ends.append((terminated, truncated))
        lives.append(env.unwrapped.ale.lives())
        if terminated or truncated:
            break
    return rewards, ends, lives


def test_atari_observation_is_four_stacked_84x84_grayscale_frames():
    env = make_env(SPACE_INVADERS)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert all((obs[i] == obs[0]).all() for i in range(4))  # reset: the first frame repeated
    next_obs, *_ = env.step(0)
    np.testing.assert_array_equal(next_obs[:3], obs[1:])  # the stack slides by one frame


def test_training_env_clips_rewards_and_ends_on_life_loss_evaluation_does_neither():
    rewards, ends, lives = play(make_env(SPACE_INVADERS, training=True), 2000)
    assert set(rewards) <= {-1.0, 0.0, 1.0} and 1.0 in rewards
    assert ends[-1][0] and lives[-1] > 0, "the first life lost ends a training episode"

    rewards, ends, lives = play(make_env(SPACE_INVADERS, training=False), 5000)
    assert max(rewards) >= 5, "SpaceInvaders scores 5 to 30 per alien: evaluation keeps the real score"
    assert ends[-1][0] and lives[-1] == 0, "an evaluation episode is the full game"


def test_training_episode_statistics_report_the_real_game_score():
    env = make_env(SPACE_INVADERS, training=True)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    clipped, scored = 0.0, None
    for _ in range(20_000):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        clipped += reward
        if "episode" in info:
            scored = float(info["episode"]["r"])
            break
        if terminated or truncated:
            env.reset()
    assert scored is not None and scored > clipped  # unclipped points, summed over every life


def test_machado_protocol_uses_sticky_actions():
    env = make_env("ALE/Pong-v5")
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    nature = make_env("PongNoFrameskip-v4")
    assert nature.unwrapped.ale.getFloat("repeat_action_probability") == 0.0


def test_crop_changes_what_the_network_sees():
    full, _ = make_env(SPACE_INVADERS).reset(seed=0)
    cropped, _ = make_env(SPACE_INVADERS, EnvOptions(atari_crop=(100, 0, 0, 0))).reset(seed=0)
    assert cropped.shape == full.shape and not np.array_equal(cropped, full)


def test_vector_envs_pass_through_and_atari_is_detected():
    env = make_env("CartPole-v1")
    assert env.observation_space.shape == (4,)
    assert is_atari(SPACE_INVADERS) and not is_atari("CartPole-v1")


def test_classic_envs_load_neither_ale_nor_minatar():
    """Regression: every make_env imported ale_py and minatar (which imports matplotlib, pandas and scipy),
    120 MB of a CartPole run's memory. A fresh interpreter, since this one may have loaded them already."""
    code = ("import sys; from qzoo.envs import make_env; make_env('CartPole-v1'); "
            "print(sorted(m for m in ('ale_py', 'minatar', 'matplotlib', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_bad_env_ids_and_continuous_actions_are_clear_errors():
    with pytest.raises(QzooError, match="did you mean CartPole-v1"):
        make_env("CartPol-v1")
    with pytest.raises(QzooError, match="did you mean .*PongNoFrameskip-v4"):  # ALE's ids are suggested too
        make_env("PongNoFrameskip-v5")
    with pytest.raises(QzooError, match="did you mean MinAtar/Breakout-v1"):
        make_env("MinAtar/Breakot-v1")
    with pytest.raises(QzooError, match="discrete actions"):
        make_env("Pendulum-v1")
    with pytest.raises(QzooError, match="env_kwargs"):
        make_env("CartPole-v1", EnvOptions(env_kwargs={"no_such_argument": 1}))
