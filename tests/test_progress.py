"""Progress anywhere: `qzoo train > train.log` prints plain lines where the tqdm bar cannot show."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

QZOO = str(Path(sys.executable).parent / "qzoo")
LINE = re.compile(r"^step ([\d,]+)/3,000 \(\d+%\) \| \d+ steps/s \| ETA \S+ \| return \S+( \(last \d+\))? \| "
                  r"eps [\d.]+ \| loss \S+$")


def train_to_file(tmp_path: Path, seconds: str) -> list[str]:
    log = tmp_path / f"train-{seconds}.log"
    env = {**os.environ, "QZOO_PROGRESS_SECONDS": seconds, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "w") as out:
        subprocess.run([QZOO, "train", "--env", "CartPole-v1", "-n", "3000", "--run-dir", str(tmp_path / seconds),
                        "--set", "eval_freq=1500", "n_eval_episodes=2", "log_interval=500", "torch_threads=1"],
                       stdout=out, stderr=subprocess.DEVNULL, env=env, check=True, timeout=300)
    return log.read_text().splitlines()


def test_a_run_piped_to_a_file_prints_a_line_every_log_interval_and_one_per_evaluation(tmp_path):
    lines = train_to_file(tmp_path, "0")
    steps = [int(m.group(1).replace(",", "")) for m in map(LINE.match, lines) if m]
    assert steps == [500, 1000, 1500, 2000, 2500, 3000]
    evals = [line for line in lines if line.startswith("eval at step ")]
    assert [line.split(":")[0] for line in evals] == ["eval at step 1,500", "eval at step 3,000"]
    assert lines[-1].startswith("run saved in")


def test_lines_are_at_least_30_seconds_apart_so_a_fast_run_prints_its_first_only(tmp_path):
    lines = train_to_file(tmp_path, "30")
    assert [m.group(1) for m in map(LINE.match, lines) if m] == ["500"]
    assert sum(line.startswith("eval at step ") for line in lines) == 2  # every evaluation has its line


# In-process runs whose stdout is pytest's capture, never a terminal: what nohup, a notebook or CI see.


def test_tune_prints_one_line_per_finished_trial_with_its_value_the_best_so_far_and_its_hyperparameters(
        tmp_path, capsys):
    import json

    import optuna

    from qzoo.cli import main

    out = tmp_path / "tune"
    assert main(["tune", "--env", "CartPole-v1", "-n", "300", "--evaluations", "1", "--eval-episodes", "2", "--seed",
                 "0", "--trials", "3", "--out", str(out), "--json", "--set", "torch_threads=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[-1])["trials_run"] == [0, 1, 2]
    trials = [line for line in lines if line.startswith("trial ")]
    assert len(trials) == 3
    study = optuna.load_study(study_name="qzoo-dqn-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    best = -float("inf")
    for line, trial in zip(trials, study.get_trials()):
        best = max(best, trial.value)
        head, value, best_part, took, params = line.split(" | ")
        assert head == f"trial {trial.number}: complete" and value == f"value {trial.value:.3f}"
        assert best_part.startswith(f"best {best:.3f} (trial ")
        assert re.fullmatch(r"\d+\.\d s \(elapsed \d+:\d\d:\d\d\)", took)
        sampled = trial.user_attrs["hyperparameters"]  # each one, floats to 3 significant digits
        assert all(f"{k}=" in params for k in sampled) and f"learning_rate={sampled['learning_rate']:.3g}" in params


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from qzoo.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    assert main(["train", "--env", "CartPole-v1", "-n", "200", "--run-dir", str(run_dir), "--no-progress", "--set",
                 "learning_starts=100", "eval_freq=200", "n_eval_episodes=1", "net_arch=[8]", "torch_threads=1"]) == 0
    return run_dir


def test_evaluate_prints_one_line_per_episode_where_stdout_is_not_a_terminal(tiny_run, capsys, monkeypatch):
    import json

    from qzoo.cli import main

    assert main(["evaluate", str(tiny_run), "--episodes", "4", "--json"]) == 0  # JSON alone: no lines
    (report,) = capsys.readouterr().out.splitlines()
    returns = json.loads(report)["returns"]
    monkeypatch.setenv("QZOO_PROGRESS_SECONDS", "0")
    assert main(["evaluate", str(tiny_run), "--episodes", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("CartPole-v1: mean ")
    for k, line in enumerate(lines[:4], 1):
        match = re.fullmatch(r"episode (\d)/4: return ([\d.]+), length (\d+) \| mean ([\d.]+) over (\d)", line)
        assert match and int(match[1]) == int(match[5]) == k, line
        assert float(match[2]) == pytest.approx(returns[k - 1], abs=0.005)
        assert int(match[3]) == round(returns[k - 1])  # CartPole: +1 a step
        assert float(match[4]) == pytest.approx(sum(returns[:k]) / k, abs=0.005)


def test_evaluate_lines_keep_a_gap_but_show_the_first_and_last_episode_and_none_on_a_terminal(tiny_run, capsys,
                                                                                           monkeypatch):
    from qzoo.cli import main

    monkeypatch.setenv("QZOO_PROGRESS_SECONDS", "3600")
    assert main(["evaluate", str(tiny_run), "--episodes", "5"]) == 0
    episodes = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("episode")]
    assert episodes == ["episode 1/5", "episode 5/5"]
    assert main(["evaluate", str(tiny_run), "--episodes", "2", "--no-progress"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("episode")] == []
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: the summary line only, as before
    assert main(["evaluate", str(tiny_run), "--episodes", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("CartPole-v1: mean ")
    monkeypatch.setenv("QZOO_PROGRESS_SECONDS", "soon")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(["evaluate", str(tiny_run), "--episodes", "2"]) == 2
    assert capsys.readouterr().err.strip() == ("qzoo: error: QZOO_PROGRESS_SECONDS must be a number of seconds >= 0, "
                                               "got 'soon'")
