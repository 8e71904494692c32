"""The one episode loop (``evaluation.play_episodes``) and the three commands that go through it."""

import gymnasium as gym
import pytest

from qzoo.evaluation import StepEvent, evaluate, play_episodes


def lean_policy(obs) -> int:
    """A fixed CartPole policy (push toward the lean): short, varied episodes with no network in the way."""
    return int(obs[2] > 0)


@pytest.mark.parametrize(
    "epsilon, returns",
    [
        (0.0, (36.0, 25.0, 39.0, 32.0, 34.0, 45.0)),
        (0.05, (37.0, 25.0, 39.0, 50.0, 61.0, 44.0)),
        (0.3, (49.0, 33.0, 31.0, 29.0, 85.0, 40.0)),
    ],
)
def test_evaluate_returns_regression_one_loop_changed_no_evaluation_number(epsilon, returns):
    """Measured on the old ``evaluate`` before the three loops became one: same seed, same draws, same returns."""
    env = gym.make("CartPole-v1")
    stats = evaluate(lean_policy, env, 6, seed=3, epsilon=epsilon)
    assert stats.returns == returns and stats.lengths == tuple(int(r) for r in returns)
    assert not stats.capped


def test_hook_sees_the_first_observation_and_every_step():
    env = gym.make("CartPole-v1")
    events: list[StepEvent] = []
    stats = play_episodes(lean_policy, env, 3, seed=3, epsilon=0.05, on_step=events.append)
    assert len(events) == sum(stats.lengths) + 3  # every step, plus each episode's first observation
    for episode, length in enumerate(stats.lengths):
        mine = [e for e in events if e.episode == episode]
        assert [e.step for e in mine] == list(range(length + 1))
        assert [e.done for e in mine] == [False] * length + [True]
        assert mine[-1].episode_return == stats.returns[episode]
        assert mine[0].env is env
    assert [e.total_steps for e in events if e.step > 0] == list(range(1, sum(stats.lengths) + 1))


def test_step_cap_stops_and_keeps_the_cut_episode():
    env = gym.make("CartPole-v1")
    full = play_episodes(lean_policy, env, 6, seed=3, epsilon=0.05)
    cap = full.lengths[0] + 10  # inside the second episode
    events: list[StepEvent] = []
    cut = play_episodes(lean_policy, env, 6, seed=3, epsilon=0.05, on_step=events.append, max_steps=cap)
    assert cut.capped and sum(cut.lengths) == cap
    assert cut.lengths == (full.lengths[0], 10) and cut.returns[0] == full.returns[0]
    assert events[-1].done and events[-1].total_steps == cap and events[-1].episode == 1
    # A cap reached exactly at an episode's end starts no further episode.
    exact = play_episodes(lean_policy, env, 6, seed=3, epsilon=0.05, max_steps=full.lengths[0])
    assert exact.lengths == full.lengths[:1]


@pytest.mark.parametrize("kwargs", [{"epsilon": 1.5}, {"epsilon": -0.1}, {"max_steps": 0}])
def test_loop_rejects_bad_epsilon_and_cap(kwargs):
    with pytest.raises(ValueError):
        play_episodes(lean_policy, gym.make("CartPole-v1"), 1, seed=0, **kwargs)
