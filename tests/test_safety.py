"""Issue 14: nothing lost, nothing hangs, nothing gets in.

The run folder's writer lock (two writers refused, a killed holder's lock free again), the evaluation step cap
and signals during an evaluation, untrusted model files and checkpoints, and one line for every bad input.
No test asserts a time, except that a process ends within its timeout.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qzoo.cli import main
from qzoo.runs import lock_run_dir

QZOO = Path(sys.executable).parent / "qzoo"
DEADLINE = 120  # seconds to wait for a condition before failing (never a timing assertion)
TINY = ["--env", "CartPole-v1", "--no-progress", "--set", "learning_starts=100", "checkpoint_freq=200",
        "log_interval=100", "eval_freq=400", "n_eval_episodes=1", "net_arch=[16]", "buffer_size=2000",
        "torch_threads=1"]


def qzoo(*argv, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(QZOO), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for(condition, process=None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert process is None or process.poll() is None, f"the process ended too early: {process.communicate()}"
        assert time.monotonic() < deadline, "condition never reached"
        time.sleep(0.02)


def one_error_line(stderr: str) -> str:
    """The one error line of a failed command; only qzoo's notes (``qzoo: preset: ...``) may come before it."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("A.L.E", "[Powered"))]
    assert lines and lines[-1].startswith("qzoo: error: "), stderr
    assert all(line.startswith("qzoo: ") and not line.startswith("qzoo: error") for line in lines[:-1]), stderr
    assert "Traceback" not in stderr
    return lines[-1]


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("step-*"))


def check_csvs_row_by_row(run_dir: Path) -> None:
    """No duplicated or backwards row in any CSV: steps strictly increase (episodes: numbers by one)."""
    for name in ("train.csv", "evaluations.csv"):
        with open(run_dir / name) as f:
            steps = [int(row["step"]) for row in csv.DictReader(f)]
        assert all(a < b for a, b in zip(steps, steps[1:])), (name, steps)
    with open(run_dir / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    episodes = [int(row["episode"]) for row in rows]
    assert episodes == list(range(1, len(episodes) + 1)), episodes
    steps = [int(row["step"]) for row in rows]
    assert all(a < b for a, b in zip(steps, steps[1:])), steps


# ------------------------------------------------------------------------------------------ the lock


@pytest.fixture
def stopped_run(tmp_path, monkeypatch):
    """A CartPole run stopped by SIGINT's path after its first checkpoint (status interrupted)."""
    from qzoo.runs import RunRecorder

    run_dir = tmp_path / "run"
    checkpoint = RunRecorder.on_checkpoint

    def stop_after_first(self, agent):
        checkpoint(self, agent)
        self.stop_requested = signal.SIGINT

    monkeypatch.setattr(RunRecorder, "on_checkpoint", stop_after_first)
    assert main(["train", *TINY, "-n", "1000", "--run-dir", str(run_dir)]) == 130
    monkeypatch.undo()
    return run_dir


def test_resume_of_a_locked_run_is_one_line_naming_the_holder_and_changes_nothing(stopped_run, capsys):
    before = {p: p.read_bytes() for p in stopped_run.rglob("*") if p.is_file() and p.name != ".lock"}
    with lock_run_dir(stopped_run, "qzoo train --env CartPole-v1"):
        capsys.readouterr()
        assert main(["train", "--resume", str(stopped_run)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"in use by process {os.getpid()}" in line
        assert main(["enjoy", str(stopped_run), "--render", "frames", "--max-steps", "3"]) == 2
        assert f"process {os.getpid()}" in one_error_line(capsys.readouterr().err)
    after = {p: p.read_bytes() for p in stopped_run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    # The lock is released with its holder: the same resume now goes on to the end.
    assert main(["train", "--resume", str(stopped_run)]) == 0
    check_csvs_row_by_row(stopped_run)


def test_a_new_run_in_a_locked_folder_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with lock_run_dir(run_dir):
        assert main(["train", *TINY, "-n", "300", "--run-dir", str(run_dir)]) == 2
        assert "in use by process" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in run_dir.iterdir()] == [".lock"]


def test_resume_of_a_live_run_is_refused_and_a_sigkilled_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    live = qzoo("train", *TINY, "-n", "100000", "--run-dir", str(run_dir))
    try:
        wait_for(lambda: has_checkpoint(run_dir), live)
        second = subprocess.run([str(QZOO), "train", "--resume", str(run_dir)], capture_output=True, text=True,
                                timeout=DEADLINE)
        assert second.returncode == 2
        assert f"in use by process {live.pid}" in one_error_line(second.stderr)
        assert live.poll() is None  # the live run goes on untouched
    finally:
        live.send_signal(signal.SIGKILL)
        live.communicate()
    # The killed holder's lock went with it: a resume takes the folder over. Once it has logged a row past the
    # checkpoint (its signal handlers are in place), SIGTERM stops it with a checkpoint.
    from qzoo.checkpoint import latest, step_of

    step = step_of(latest(run_dir / "checkpoints"))
    resumed = qzoo("train", "--resume", str(run_dir), "--json")

    def logged_past_checkpoint() -> bool:
        meta = json.loads((run_dir / "run.json").read_text() or "{}")
        with open(run_dir / "train.csv") as f:
            steps = [int(row["step"]) for row in csv.DictReader(f)]
        return "resumed" in meta and bool(steps) and steps[-1] > step

    wait_for(logged_past_checkpoint, resumed)
    resumed.send_signal(signal.SIGTERM)
    out, err = resumed.communicate(timeout=DEADLINE)
    assert resumed.returncode == 143, err
    check_csvs_row_by_row(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and len(meta["resumed"]) == 1
    assert meta["steps"] == json.loads(out.strip().splitlines()[-1])["steps"]
    assert (run_dir / ".lock").read_text() == ""  # released on exit


def test_two_concurrent_resumes_one_is_refused(stopped_run):
    first, second = qzoo("train", "--resume", str(stopped_run)), qzoo("train", "--resume", str(stopped_run))
    results = [(p.wait(timeout=DEADLINE), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    # Refused by the lock, or (when the first one was already done) because the run has finished.
    assert "in use by process" in one_error_line(refused) or "nothing to resume" in refused
    check_csvs_row_by_row(stopped_run)
    meta = json.loads((stopped_run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 1000 and len(meta["resumed"]) == 1


# --------------------------------------------------------------------------- evaluation: cap and signals

# FrozenLake without its time limit: the untrained Q-table's greedy action (0, left) never leaves the start.
NO_LIMIT = ["--algo", "qlearning", "--env", "FrozenLake-v1", "--no-progress",
            "--env-kwargs", "is_slippery=false", "max_episode_steps=-1"]


def test_an_env_without_a_time_limit_ends_evaluation_episodes_at_the_cap(monkeypatch):
    from qzoo import evaluation
    from qzoo.qlearning import QLearning

    monkeypatch.setattr(evaluation, "DEFAULT_MAX_EPISODE_STEPS", 300)
    agent = QLearning("FrozenLake-v1", env_kwargs={"is_slippery": False, "max_episode_steps": -1})
    stats = agent.evaluate(3)
    assert stats.lengths == (300, 300, 300) and stats.returns == (0.0, 0.0, 0.0) and not stats.capped
    # An env with its own limit keeps it: FrozenLake 4x4 stops at 100 steps.
    limited = QLearning("FrozenLake-v1", env_kwargs={"is_slippery": False})
    assert limited.evaluate(1).lengths == (100,)
    assert evaluation.episode_step_cap(limited.make_env(training=False)) == 100


def test_evaluate_command_on_an_env_without_a_time_limit_ends(tmp_path, monkeypatch, capsys):
    from qzoo import evaluation

    run_dir = tmp_path / "run"
    assert main(["train", *NO_LIMIT, "-n", "200", "--set", "eval_freq=0", "--run-dir", str(run_dir)]) == 0
    monkeypatch.setattr(evaluation, "DEFAULT_MAX_EPISODE_STEPS", 500)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_length"] == 500


def test_sigterm_during_an_evaluation_checkpoints_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    run = qzoo("train", *NO_LIMIT, "-n", "2000", "--run-dir", str(run_dir), "--set", "eval_freq=500",
               "n_eval_episodes=1000", "log_interval=500", "checkpoint_freq=0")

    def evaluating() -> bool:  # the metrics row of step 500 comes just before its evaluation
        return (run_dir / "train.csv").is_file() and "\n500," in (run_dir / "train.csv").read_text()

    wait_for(evaluating, run)
    time.sleep(0.2)  # inside the evaluation (it would last 10^8 env steps); not a timing assertion
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 143, err
    assert "Traceback" not in err
    assert [p.name for p in (run_dir / "checkpoints").glob("step-*")] == ["step-000000000500"]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["steps"] == 500
    assert (run_dir / "evaluations.csv").read_text().count("\n") == 1  # the stopped evaluation is not logged
