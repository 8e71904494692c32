"""The one episode loop (``evaluation.play_episodes``) and the three commands that go through it."""

import json

import gymnasium as gym
import pytest

from qzoo.cli import main
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


# ------------------------------------------------------------------------------ the three commands


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    assert main(["train", "--env", "CartPole-v1", "-n", "1000", "--seed", "1", "--run-dir", str(run_dir),
                 "--no-progress", "--set", "learning_starts=200", "eval_freq=0", "net_arch=[32,32]",
                 "torch_threads=1", "eval_epsilon=0.3"]) == 0
    return run_dir


def enjoy_returns(out: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith("episode ")]


def evaluate_returns(capsys, run_dir, *extra) -> list[float]:
    assert main(["evaluate", str(run_dir), "--episodes", "4", "--seed", "3", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["returns"]


@pytest.mark.parametrize("epsilon", [None, "0", "0.05", "1"])
def test_evaluate_record_and_enjoy_play_the_same_episodes(cartpole_run, tmp_path, monkeypatch, capsys, epsilon):
    """Same seed and epsilon -> the same returns; without --epsilon all three use the run's eval_epsilon (0.3)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    extra = [] if epsilon is None else ["--epsilon", epsilon]
    evaluated = evaluate_returns(capsys, cartpole_run, *extra)

    assert main(["record", str(cartpole_run), "--episodes", "4", "--seed", "3", "--out", str(tmp_path / "v.mp4"),
                 "--json", *extra]) == 0
    recorded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["returns"]

    assert main(["enjoy", str(cartpole_run), "--episodes", "4", "--seed", "3", "--frames-dir", str(tmp_path / "f"),
                 *extra]) == 0
    enjoyed = enjoy_returns(capsys.readouterr().out)

    assert evaluated == recorded == enjoyed and len(evaluated) == 4
    if epsilon is None:
        assert evaluated == evaluate_returns(capsys, cartpole_run, "--epsilon", "0.3")


def test_enjoy_default_epsilon_is_eval_epsilon_regression_enjoy_was_always_greedy(cartpole_run, tmp_path, capsys):
    """enjoy ignored eval_epsilon (always greedy): a greedy Atari agent that never presses FIRE stalls forever."""
    enjoy = ["enjoy", str(cartpole_run), "--episodes", "4", "--seed", "3", "--frames-dir", str(tmp_path)]
    assert main(enjoy) == 0
    default = enjoy_returns(capsys.readouterr().out)
    assert main([*enjoy, "--epsilon", "0"]) == 0
    greedy = enjoy_returns(capsys.readouterr().out)
    assert default == evaluate_returns(capsys, cartpole_run, "--epsilon", "0.3")
    assert greedy == evaluate_returns(capsys, cartpole_run, "--epsilon", "0") != default


@pytest.mark.parametrize("argv", [["--epsilon", "2"], ["--epsilon", "-0.5"], ["--max-steps", "0"]])
def test_enjoy_bad_epsilon_or_cap_is_one_clear_line(cartpole_run, capsys, argv):
    assert main(["enjoy", str(cartpole_run), "--render", "frames", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qzoo: error: --")
