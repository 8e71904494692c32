"""The agent interface (qzoo.agent) and the one way into a run (qzoo.training)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo import training
from qzoo.agent import Agent
from qzoo.cli import main
from qzoo.dqn import DQN
from qzoo.qlearning import QLearning

ROOT = Path(__file__).resolve().parent.parent
TINY = {"n_timesteps": 1200, "learning_starts": 200, "buffer_size": 2000, "eval_freq": 300, "n_eval_episodes": 2,
        "checkpoint_freq": 0, "log_interval": 300, "seed": 4, "torch_threads": 1}


def mypy(path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                           "--cache-dir", str(cache), str(path)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_the_type_checker_holds_both_agents_to_the_protocol_and_names_what_they_lack(tmp_path):
    done = mypy(ROOT / "tests" / "typecheck" / "agents_conform.py", tmp_path / "cache")
    assert done.returncode == 0, done.stdout
    # A member added to the protocol is a checklist: the checker names it for every agent that lacks it.
    grown = tmp_path / "grown_protocol.py"
    grown.write_text("from typing import Protocol\n\nfrom qzoo.agent import Agent\nfrom qzoo.dqn import DQN\n"
                     "from qzoo.qlearning import QLearning\n\n\nclass Grown(Agent, Protocol):\n"
                     "    def new_member(self) -> int: ...\n\n\n"
                     "def every_agent(dqn: DQN, table: QLearning) -> list[Grown]:\n    return [dqn, table]\n")
    done = mypy(grown, tmp_path / "cache")
    assert done.returncode == 1, done.stdout
    for agent in ("DQN", "QLearning"):
        assert f'"{agent}" is missing following "Grown" protocol member' in done.stdout, done.stdout
    assert done.stdout.count("new_member") == 2


@pytest.mark.parametrize("agent", [DQN("CartPole-v1", **TINY), QLearning("FrozenLake-v1", seed=1)],
                         ids=["dqn", "qlearning"])
def test_every_protocol_member_is_defined_on_both_agents(agent):
    assert isinstance(agent, Agent)
    assert agent.variant in ("dqn", "qlearning") and agent.network_kind in ("mlp", "table") and agent.exact_resume
    agent.close()


def test_best_evaluation_has_one_owner_the_agent_and_the_folder_saves_its_model(tmp_path):
    """The agent's Evaluations keep the best mean return (exact resume saves it); run.json's best and best.pt
    follow the evaluations that improved on it, and only those."""
    run = training.start(training.prepare("CartPole-v1", overrides=TINY), tmp_path / "run")
    improved = []
    on_evaluation = run.recorder.on_evaluation
    run.recorder.on_evaluation = lambda agent, stats, better: (improved.append((stats.mean, better)),
                                                               on_evaluation(agent, stats, better))
    run.learn()
    means = [mean for mean, _ in improved]
    assert len(means) == 4
    assert [better for _, better in improved] == [m > max(means[:i], default=-float("inf"))
                                                  for i, m in enumerate(means)]
    best = json.loads((tmp_path / "run" / "run.json").read_text())["best"]
    assert best["mean"] == max(means) == run.agent.evaluations.best_mean_return
    assert best["step"] == 300 * (means.index(max(means)) + 1)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_the_python_api_writes_the_run_folder_the_command_line_writes(tmp_path, capsys):
    argv = ["train", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "cli"), "--json", "--set",
            *[f"{key}={value}" for key, value in TINY.items()]]
    assert main(argv) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = training.start(training.prepare("CartPole-v1", overrides=TINY), tmp_path / "api").learn()
    assert result.status == "finished" and result.exit_code == 0
    assert result.report["weights_sha256"] == cli["weights_sha256"]
    assert result.report["best"] == cli["best"] and result.report["steps"] == cli["steps"] == 1200
    files = {p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if "tb" not in p.parts}
    assert files == {p.relative_to(tmp_path / "api") for p in (tmp_path / "api").rglob("*") if "tb" not in p.parts}
    for name in ("config.yml", "episodes.csv", "evaluations.csv"):
        cli_rows = (tmp_path / "cli" / name).read_text().splitlines()
        api_rows = (tmp_path / "api" / name).read_text().splitlines()
        assert [row.rsplit(",", 1)[0] for row in cli_rows] == [row.rsplit(",", 1)[0] for row in api_rows]  # but time
