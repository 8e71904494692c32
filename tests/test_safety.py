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


def test_the_stop_flag_of_a_stopped_run_does_not_stop_later_evaluations():
    from qzoo.qlearning import QLearning

    class Stopped:  # a recorder whose run got SIGTERM
        stop_requested = signal.SIGTERM

        def on_episode(self, *args): ...
        def on_train(self, *args): ...
        def on_evaluation(self, *args): ...
        def on_checkpoint(self, *args): ...

    agent = QLearning("FrozenLake-v1", eval_freq=1, n_eval_episodes=1)
    agent.learn(10, recorder=Stopped())
    assert agent.num_timesteps == 1  # stopped at once, its evaluation dropped
    assert len(agent.evaluate(2).returns) == 2


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


# ---------------------------------------------------------------------------------------- untrusted files


@pytest.fixture(scope="module")
def dqn_model(tmp_path_factory) -> Path:
    from qzoo.dqn import DQN

    path = tmp_path_factory.mktemp("model") / "model.pt"
    DQN("CartPole-v1", net_arch=[16], buffer_size=1000, torch_threads=1).save(path)
    return path


def crafted_model(source: Path, target: Path, **changes) -> Path:
    import torch

    state = torch.load(source, weights_only=True)
    config = {**state["config"], **changes.pop("config", {})}
    torch.save({**state, "config": config, **changes}, target)
    return target


@pytest.mark.parametrize("changes, fragment", [
    ({"config": {"torch_threads": 100000}}, "torch_threads must be in [0, 1024]"),
    ({"config": {"n_envs": 100000}}, "n_envs must be <= 1024"),
    ({"config": {"net_arch": [32]}}, "does not fit the config it holds"),
    ({"config": {"net_arch": [1 << 20, 1 << 20, 1 << 20]}}, "GiB of weights"),
    ({"num_timesteps": "many"}, "does not fit the config it holds"),
    ({"env_id": "NoSuchEnv-v0"}, "NoSuchEnv-v0"),
], ids=["threads", "envs", "net_arch", "net_arch_memory", "counters", "env_id"])
def test_a_crafted_model_file_is_one_line(dqn_model, tmp_path, capsys, changes, fragment):
    path = crafted_model(dqn_model, tmp_path / "model.pt", **changes)
    assert main(["evaluate", str(path), "--episodes", "1"]) == 2
    assert fragment in one_error_line(capsys.readouterr().err)


def test_torch_threads_from_the_command_line_is_one_line(capsys):
    assert main(["train", "--env", "CartPole-v1", "--dry-run", "--set", "torch_threads=100000"]) == 2
    assert "torch_threads must be in [0, 1024]" in one_error_line(capsys.readouterr().err)


def test_a_decompression_bomb_q_table_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    """The table's .npy header claims 30000 x 30000 float64 (7.2 GB): refused before a byte of it is unpacked."""
    import io
    import zipfile

    import numpy as np

    from qzoo.qlearning import QLearning

    good = tmp_path / "good.npz"
    QLearning("FrozenLake-v1").save(good)
    with np.load(good) as data:
        meta = data["meta"]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (30000, 30000)})
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        meta_file = io.BytesIO()
        np.save(meta_file, meta)
        archive.writestr("meta.npy", meta_file.getvalue())
        archive.writestr("q_table.npy", header.getvalue() + bytes(1 << 20))  # header holds the magic
    read = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda f, *a, **k: pytest.fail("decompressed") if f.name == "q_table.npy" else read(f, *a, **k))
    assert main(["evaluate", str(bomb), "--episodes", "1"]) == 2
    assert "table shape (30000, 30000) does not fit FrozenLake-v1 (16, 4)" in one_error_line(capsys.readouterr().err)


def resign(folder: Path) -> None:
    """What only the key's owner can do: update the manifest's sizes and sha256, and sign it again."""
    from qzoo import checkpoint

    manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
    for name in list(manifest["files"]):
        if (folder / name).is_file():
            manifest["files"][name] = checkpoint._seal(folder / name)
    manifest["hmac"] = checkpoint._signature(checkpoint.user_key(), manifest)
    (folder / checkpoint.MANIFEST).write_text(json.dumps(manifest))


def newest_checkpoint(run_dir: Path) -> Path:
    from qzoo.checkpoint import latest

    return latest(run_dir / "checkpoints")


def test_csv_names_outside_the_run_folder_are_refused_and_nothing_outside_is_touched(stopped_run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = newest_checkpoint(stopped_run)
    state = json.loads((folder / "state.json").read_text())
    state["run"]["csv_bytes"] = {str(victim): 0, "../victim.txt": 0}
    (folder / "state.json").write_text(json.dumps(state))
    resign(folder)
    assert main(["train", "--resume", str(stopped_run)]) == 2
    assert "names other files than episodes.csv" in one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "precious\n"


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(stopped_run, capsys):
    folder = newest_checkpoint(stopped_run)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["/etc/passwd"] = {"size": 0, "sha256": ""}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    resign(folder)
    assert main(["train", "--resume", str(stopped_run)]) == 2
    assert "names '/etc/passwd', not a file of its folder" in one_error_line(capsys.readouterr().err)


def test_a_tampered_env_pickle_is_refused_before_it_is_loaded(stopped_run, tmp_path, capsys):
    import pickle

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = newest_checkpoint(stopped_run)
    (folder / "env.pkl").write_bytes(pickle.dumps(Payload()))
    manifest = json.loads((folder / "manifest.json").read_text())  # the attacker fixes sizes and sha256 ...
    manifest["files"]["env.pkl"] = {"size": (folder / "env.pkl").stat().st_size,
                                    "sha256": __import__("hashlib").sha256((folder / "env.pkl").read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))  # ... but cannot sign without the key
    assert main(["train", "--resume", str(stopped_run)]) == 2
    assert "was not written by this user" in one_error_line(capsys.readouterr().err)
    assert not marker.exists()


def test_a_checkpoint_signed_with_another_key_needs_trust_checkpoint(stopped_run, tmp_path, capsys, monkeypatch):
    from qzoo import checkpoint

    monkeypatch.setenv(checkpoint.KEY_ENV_VAR, str(tmp_path / "other" / "checkpoint.key"))
    assert main(["train", "--resume", str(stopped_run)]) == 2
    assert "--trust-checkpoint" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "other" / "checkpoint.key").stat().st_mode & 0o777 == 0o600
    assert main(["train", "--resume", str(stopped_run), "--trust-checkpoint"]) == 0
    check_csvs_row_by_row(stopped_run)


def test_a_postgres_password_is_redacted(tmp_path, capsys, monkeypatch):
    import optuna

    from qzoo.tuning import redact

    assert redact("postgresql://qzoo:s3cr%40t@db.example:5432/studies") == "postgresql://qzoo:***@db.example:5432/studies"
    assert redact("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"

    def refuse(url, **kwargs):
        raise RuntimeError(f"could not connect to {url}")

    monkeypatch.setattr(optuna.storages, "RDBStorage", refuse)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    url = "postgresql://qzoo:hunter2@127.0.0.1:1/studies"
    assert main(["tune", "--env", "CartPole-v1", "--trials", "1", "-n", "100", "--storage", url,
                 "--out", str(tmp_path / "tune"), "--set", "torch_threads=1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "hunter2" not in line and "qzoo:***@127.0.0.1" in line


# ----------------------------------------------------------------------------------- one line per bad input


@pytest.fixture(scope="module")
def places(tmp_path_factory, dqn_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("places")
    (root / "a_file").write_text("not a folder\n")
    (root / "binary.yml").write_bytes(bytes(range(256)) * 4)
    for name, meta in [("list_run", "[1, 2]"), ("no_env_run", '{"algo": "dqn"}'), ("bad_csv_run", None)]:
        (root / name).mkdir()
        (root / name / "run.json").write_text(meta or '{"env_id": "CartPole-v1", "algo": "dqn"}')
    (root / "bad_csv_run" / "evaluations.csv").write_text("step,time,mean,result\n100,1.0,abc,2\n")
    return {"file": root / "a_file", "binary": root / "binary.yml", "model": dqn_model, "root": root}


BAD_INPUTS = [
    ("train --env CartPole-v1 --dry-run --seed -1", "seed must be in [0, 2147483647]"),
    (f"train --env CartPole-v1 --dry-run --seed {2**70}", "seed must be in [0, 2147483647]"),
    ("evaluate {model} --seed -1", "--seed must be in [0, 2147483647]"),
    ("train --algo qlearning --env FrozenLake-v1 --dry-run --env-kwargs map_name=nonexistent", "bad env_kwargs"),
    ("train --env CartPole-v1 --dry-run --env-kwargs max_episode_steps=0", "bad env_kwargs"),
    ("train --env CartPole-v1 -n 10 --run-dir {file}", "is a file, not a run folder"),
    ("train --env CartPole-v1 --dry-run -c {binary}", "is not a text (UTF-8 YAML) file"),
    ("plot {root}/list_run --out {root}/plots", "run.json is not an object with an env_id"),
    ("plot {root}/no_env_run --out {root}/plots", "run.json is not an object with an env_id"),
    ("plot {root}/bad_csv_run --out {root}/plots", "bad_csv_run is damaged: ValueError"),
    ("plot {root}/bad_csv_run --out {file}", "is a file; give a folder"),
    ("plot {root}/bad_csv_run --smooth -3", "--smooth must be >= 1"),
    ("tune --env CartPole-v1 --trials 1 --out {file}", "is a file; give a folder"),
    ("push {model} --out {file}", "is a file; give a new folder"),
    ("push {model} --out {root}/pushed --episodes 0", "--episodes must be >= 1"),
    ("train --env CartPole-v1 --dry-run --set v_max=.inf", "v_max must be a finite number"),
    ("train --env CartPole-v1 --dry-run --set stop_reward=.nan", "stop_reward must be a finite number"),
    ("train --env CartPole-v1 --dry-run --set max_grad_norm=.inf", "max_grad_norm must be a finite number"),
    ("enjoy {model} --episodes -1", "--episodes must be >= 1"),
    ("record {model} --epsilon 5", "--epsilon must be in [0, 1]"),
    ("train --trust-checkpoint --env CartPole-v1", "--trust-checkpoint goes with --resume"),
]


@pytest.mark.parametrize("command, fragment", BAD_INPUTS, ids=[c for c, _ in BAD_INPUTS])
def test_a_bad_input_is_one_line(places, capsys, command, fragment):
    argv = command.format(**places).split()
    assert main(argv) == 2
    assert fragment in one_error_line(capsys.readouterr().err)
    assert not (places["root"] / "plots").exists() and not (places["root"] / "pushed").exists()


def test_a_model_file_with_an_infinite_v_max_is_one_line(dqn_model, tmp_path, capsys):
    path = crafted_model(dqn_model, tmp_path / "model.pt", config={"v_max": float("inf")})
    assert main(["evaluate", str(path), "--episodes", "1"]) == 2
    assert "v_max must be a finite number" in one_error_line(capsys.readouterr().err)


def test_bad_api_inputs_are_one_line_errors():
    import numpy as np

    from qzoo.dqn import DQN
    from qzoo.errors import QzooError

    agent = DQN("CartPole-v1", net_arch=[8], buffer_size=500, torch_threads=1, learning_starts=10)
    for obs, fragment in [(np.zeros(3), "expected an observation of shape (4,)"),
                          (np.full(4, np.nan), "finite numbers"), ("abc", "shape (4,)")]:
        with pytest.raises(QzooError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            agent.predict(obs)
    assert agent.predict(np.zeros((2, 4)))[0].shape == (2,)
    with pytest.raises(QzooError, match="total_timesteps must be >= 0"):
        agent.learn(total_timesteps=-5)
    with pytest.raises(QzooError, match="n_episodes must be an integer >= 1"):
        agent.evaluate(0)
    with pytest.raises(QzooError, match="seed must be an integer"):
        agent.evaluate(1, seed=2**70)
    with pytest.raises(QzooError, match="seed must be in"):
        DQN("CartPole-v1", seed=-1)
    agent.close()


# The commands a property example may run, and what keeps each one cheap: train only resolves (--dry-run), tune
# stops at its first check (--trials 0), push only writes a folder (no --repo-id / --token: no network), enjoy
# never opens a window. Whatever else is drawn, the outcome must be exit 0 or one `qzoo: error:` line.
CHEAP = {"train": ["--dry-run"], "tune": ["--trials", "0"], "evaluate": [], "enjoy": ["--render", "frames"],
         "info": [], "presets": [], "plot": [], "record": [], "push": []}
LEFT_OUT = {"--repo-id", "--token", "--render", "--trials", "--help", "-h"}


def _options() -> dict[str, list[tuple[str, int, tuple[str, ...]]]]:
    """Each command's options: (name, how many values it takes at least, its choices if any)."""
    from qzoo.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {name: [(s, 0 if a.nargs == 0 else 1, tuple(a.choices or ())) for a in parser._actions
                   for s in a.option_strings if s not in LEFT_OUT]
            for name, parser in sub.choices.items()}


def test_random_command_lines_end_in_exit_0_or_one_error_line(places, tmp_path, monkeypatch, capsys):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    monkeypatch.chdir(tmp_path)  # anything a command writes by default lands here
    options = _options()
    small = ["-3", "-1", "0", "1", "2", "0.5", "nan", "inf", "x", "", "=", "[1,2]", str(2**70)]
    paths = [str(places["model"]), str(places["file"]), str(places["binary"]), str(places["root"] / "list_run"),
             str(places["root"] / "bad_csv_run"), "missing/run/folder", "out.mp4"]
    pairs = ["torch_threads=100000", "v_max=.inf", "net_arch=[8]", "buffer_size=-1", "n_timesteps=10", "seed=-1",
             "nosuch=1", "=", "x", "map_name=nonexistent", "is_slippery=false", "max_episode_steps=-1"]
    words = ["CartPole-v1", "FrozenLake-v1", "NoSuchEnv-v0", "dqn", "qlearning", "rainbow", "steps", "png"]
    value = st.sampled_from(small + paths + pairs + words)

    @st.composite
    def command_lines(draw):
        command = draw(st.sampled_from(sorted(CHEAP)))
        argv = [command]
        if command in ("evaluate", "enjoy", "info", "record", "push", "plot"):
            argv.append(draw(st.sampled_from([paths[0]] * len(paths) + paths)))  # the real model half the time
        if command in ("train", "tune"):
            argv += ["--env", draw(st.sampled_from(words[:3]))]
        for _ in range(draw(st.integers(0, 4))):
            option, arity, choices = draw(st.sampled_from(options[command]))
            argv.append(option)
            # Mostly the number of values the option takes (one of its choices, where it has some), so that
            # many lines get past argparse into the commands; sometimes a wrong count.
            pool = st.sampled_from(choices) | value if choices else value
            count = draw(st.sampled_from([arity] * 4 + [0, 2])) if arity else draw(st.sampled_from([0] * 4 + [1]))
            argv += draw(st.lists(pool, min_size=count, max_size=count))
        if command in ("evaluate", "enjoy", "record", "push"):
            argv += ["--episodes", "1"]  # a drawn count of 2**70 episodes would be valid, and endless
        return argv + CHEAP[command]

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(command_lines())
    def check(argv):
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err, (argv, err)
        if code != 0:
            errors = [line for line in err.splitlines() if line.startswith("qzoo: error: ")]
            assert len(errors) == 1 and err.strip().endswith(errors[0]), (argv, err)

    check()


# ---------------------------------------------------------------------------------------- network time limits


@pytest.fixture
def silent_server(monkeypatch):
    """A Hub endpoint on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers."""
    import socket

    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    yield url
    server.close()


def test_train_from_a_hub_id_ends_within_its_timeout(silent_server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--from", "someone/some-agent", "--network-timeout", "1", "--dry-run"]) == 2
    assert "no answer within 1 s" in one_error_line(capsys.readouterr().err)


def test_push_to_the_hub_ends_within_its_timeout_and_keeps_the_folder(silent_server, dqn_model, capsys):
    assert main(["push", str(dqn_model), "--repo-id", "someone/some-agent", "--token", "hf_x", "--no-video",
                 "--episodes", "1", "--network-timeout", "1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no answer within 1 s" in line and "the prepared folder is kept in" in line
    kept = Path(line.rsplit(" ", 1)[1])
    assert (kept / "README.md").is_file()
    __import__("shutil").rmtree(kept.parent)


def test_a_local_looking_path_that_does_not_exist_is_an_error_not_a_download(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for source in ["runs/typo", "./typo", "model.pt", "a/b/c"]:
        assert main(["train", "--from", source, "--dry-run"]) == 2
        assert f"not found: {source}" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------- full disk


def test_a_full_disk_while_writing_best_pt_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    import errno

    from qzoo import checkpoint
    from qzoo.dqn import DQN

    save = DQN.save

    def full_disk_for_best(self, path, with_training_state=False):
        if Path(path).name == "best.pt":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        save(self, path, with_training_state)

    monkeypatch.setattr(DQN, "save", full_disk_for_best)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "-n", "1000", "--run-dir", str(run_dir)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device; the last checkpoint is intact" in line
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and "No space left on device" in meta["error"]
    assert checkpoint.read_latest(run_dir).step == 200  # the evaluation at 400 failed before that step's checkpoint
    assert (run_dir / ".lock").read_text() == ""  # released


def _limit_file_size_to_30kb():
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))


def test_a_file_size_limit_on_the_logs_is_one_line_and_marks_the_run_failed(tmp_path):
    """RLIMIT_FSIZE while writing the CSV rows and TensorBoard events of a real run (a process of its own)."""
    run_dir = tmp_path / "run"
    done = subprocess.run([str(QZOO), "train", "--env", "CartPole-v1", "-n", "30000", "--no-progress",
                           "--run-dir", str(run_dir), "--set", "log_interval=10", "eval_freq=0", "checkpoint_freq=0",
                           "learning_starts=30000", "net_arch=[8]", "buffer_size=30000", "torch_threads=1"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size_to_30kb, timeout=DEADLINE)
    assert done.returncode == 2, done.stderr
    assert "File too large; the last checkpoint is intact" in one_error_line(done.stderr)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and "File too large" in meta["error"]
