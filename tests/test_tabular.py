"""Tabular Q-learning: the update rule by hand, and FrozenLake / Taxi through the command line."""

import json

import numpy as np
import pytest

from qzoo.cli import main
from qzoo.errors import QzooError
from qzoo.qlearning import QLearning, q_learning_update
from qzoo.schedules import exponential_schedule


def test_update_rule_on_a_three_state_chain():
    # States 0 -> 1 -> 2, action 1 moves right; lr 0.5, gamma 0.9; reaching state 2 pays 1 and ends.
    q = np.zeros((3, 2))
    q_learning_update(q, 0, 1, 0.0, 1, False, 0.5, 0.9)
    assert q[0, 1] == 0.0  # nothing known yet about state 1
    q_learning_update(q, 1, 1, 1.0, 2, True, 0.5, 0.9)
    assert q[1, 1] == 0.5  # 0 + 0.5 * (1 - 0), no bootstrap from the terminal
    q_learning_update(q, 0, 1, 0.0, 1, False, 0.5, 0.9)
    assert q[0, 1] == pytest.approx(0.225)  # 0.5 * (0 + 0.9 * max(Q[1]) = 0.45)


def test_a_truncation_bootstraps_and_a_termination_does_not():
    truncated, terminated = np.zeros((3, 2)), np.zeros((3, 2))
    truncated[2] = terminated[2] = [2.0, 1.0]
    q_learning_update(truncated, 1, 0, 0.0, 2, False, 0.5, 0.9)  # time ran out in state 2
    q_learning_update(terminated, 1, 0, 0.0, 2, True, 0.5, 0.9)
    assert truncated[1, 0] == pytest.approx(0.5 * 0.9 * 2.0)
    assert terminated[1, 0] == 0.0


def test_exponential_decay_as_the_course_teaches():
    assert exponential_schedule(1.0, 0.05, 0.0005, 0) == 1.0
    assert exponential_schedule(1.0, 0.05, 0.0005, 2000) == pytest.approx(0.05 + 0.95 * np.exp(-1.0))
    assert exponential_schedule(1.0, 0.05, 0.0005, 10**6) == pytest.approx(0.05)


def test_observation_space_must_be_discrete():
    with pytest.raises(QzooError, match="use --algo dqn"):
        QLearning("CartPole-v1")


def test_same_seed_same_table_and_a_portable_file(tmp_path):
    tables = [QLearning("FrozenLake-v1", seed=s, n_timesteps=3000, eval_freq=0).learn() for s in (1, 1, 2)]
    assert tables[0].weights_sha256() == tables[1].weights_sha256() != tables[2].weights_sha256()
    tables[0].save(tmp_path / "table.npz")
    with np.load(tmp_path / "table.npz", allow_pickle=False) as data:  # no pickle inside
        np.testing.assert_array_equal(data["q_table"], tables[0].q_table)
    loaded = QLearning.load(tmp_path / "table.npz")
    assert loaded.weights_sha256() == tables[0].weights_sha256() and loaded.num_timesteps == 3000
    (tmp_path / "broken.npz").write_bytes((tmp_path / "table.npz").read_bytes()[:100])
    with pytest.raises(QzooError, match="truncated or not a qzoo model"):
        QLearning.load(tmp_path / "broken.npz")


def train_and_evaluate(tmp_path, capsys, env_id, episodes, *extra):
    run_dir = tmp_path / "run"
    assert main(["train", "--algo", "qlearning", "--env", env_id, "--run-dir", str(run_dir), "--json", *extra]) == 0
    capsys.readouterr()
    assert (run_dir / "model.npz").is_file() and (run_dir / "checkpoints" / "best.npz").is_file()
    assert main(["evaluate", str(run_dir), "--episodes", str(episodes), "--json"]) == 0
    return run_dir, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_frozenlake_not_slippery_is_solved_every_time(tmp_path, capsys):
    run_dir, report = train_and_evaluate(tmp_path, capsys, "FrozenLake-v1", 100, "--env-kwargs", "is_slippery=false")
    assert report["result"] == 1.0
    assert main(["info", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["algo"] == "qlearning"
    assert main(["enjoy", str(run_dir), "--render", "text"]) == 0
    assert "episode 0: return 1.0" in capsys.readouterr().out


@pytest.mark.slow
def test_taxi_passes_the_course_mark(tmp_path, capsys):
    _, report = train_and_evaluate(tmp_path, capsys, "Taxi-v3", 100)
    assert report["result"] >= 4.5, report


@pytest.mark.slow
def test_slippery_frozenlake_succeeds_seven_times_in_ten(tmp_path, capsys):
    _, report = train_and_evaluate(tmp_path, capsys, "FrozenLake-v1", 1000)
    assert report["mean"] >= 0.70, report  # the success rate: a success pays 1, a failure 0
