"""``qzoo sweep``: a grid of ordinary runs as Ray tasks into one resumable sweep folder.

The cluster test runs tests/ray_sweep.py under ``unshare -n`` (only 127.0.0.1 exists there): a head and a second
node, a grid of 4 short CartPole runs, one task killed mid-run and retried, then the same command again.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo import sweep
from qzoo.cli import main
from qzoo.errors import QzooError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "ray_sweep.py"
TINY = ["eval_freq=1000", "n_eval_episodes=2", "checkpoint_freq=500", "learning_starts=200", "torch_threads=1",
        "log_interval=250"]


def test_a_grid_expands_to_every_env_value_and_seed_with_distinct_names():
    runs = sweep.expand(["CartPole-v1", "MinAtar/Breakout-v1"], "dqn", sweep.parse_seeds("0-1,5"),
                        {"n_timesteps": 100}, sweep.parse_grid(["double_q=true,false"]))
    assert len(runs) == 2 * 2 * 3 and len({run.name for run in runs}) == 12
    assert runs[0] == sweep.RunSpec("dqn-CartPole-v1-double_q=true-s0", "CartPole-v1", "dqn",
                                    {"n_timesteps": 100, "double_q": True, "seed": 0})
    assert runs[-1].name == "dqn-MinAtar-Breakout-v1-double_q=false-s5" and runs[-1].overrides["double_q"] is False


def test_a_sweep_submits_every_cell_once_before_it_repeats_a_seed():
    runs = sweep.expand(["PongNoFrameskip-v4", "BreakoutNoFrameskip-v4"], "der", [2, 0, 1], {}, {})
    order = [(run.env_id[:4], run.overrides["seed"]) for run in sweep.seed_first(runs)]
    assert order == [("Pong", 0), ("Brea", 0), ("Pong", 1), ("Brea", 1), ("Pong", 2), ("Brea", 2)]


@pytest.mark.parametrize("argv, fragment", [
    (["--seeds", "3-1"], "expected distinct seeds"),
    (["--seeds", "x"], "expected seeds like"),
    (["--set-grid", "double_q"], "expected KEY=VALUE"),
    (["--set-grid", "no_such_key=1,2"], "no_such_key"),
    (["--cpus", "0"], "--cpus"),
    (["--cpus", "1", "--address", "auto"], "--cpus"),
])
def test_a_bad_grid_is_one_line_before_any_task(argv, fragment, tmp_path, capsys):
    assert main(["sweep", "--env", "CartPole-v1", "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qzoo: error:") and fragment in err[0], err
    assert not (tmp_path / "s").exists()


def test_a_folder_of_another_grid_is_refused(tmp_path):
    first = sweep.expand(["CartPole-v1"], "dqn", [0], {}, {})
    sweep.open_sweep(tmp_path / "s", first, None)
    sweep.open_sweep(tmp_path / "s", first, None)  # the same grid again: a restart
    with pytest.raises(QzooError, match="another sweep's grid"):
        sweep.open_sweep(tmp_path / "s", sweep.expand(["CartPole-v1"], "dqn", [0, 1], {}, {}), None)


def test_without_shared_storage_a_task_sends_its_run_folder_back_and_nothing_reaches_outside(tmp_path):
    """train_one on a worker that cannot see the driver's folder (the marker does not match) trains in a folder
    of its own and returns it zipped; unpack writes only inside the run's folder."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / sweep.MARKER_FILE).write_text("the driver's token")
    spec = sweep.RunSpec("dqn-CartPole-v1-s0", "CartPole-v1", "dqn",
                         {"n_timesteps": 600, "seed": 0, "eval_freq": 300, "n_eval_episodes": 1, "learning_starts": 100,
                          "torch_threads": 1})
    summary = sweep.train_one(spec.__dict__, str(out), "another node's view")
    assert summary["status"] == "finished" and summary["steps"] == 600 and not (out / spec.name).exists()
    sweep.unpack(summary["zip"], out / spec.name)
    assert json.loads((out / spec.name / "run.json").read_text())["status"] == "finished"
    assert (out / spec.name / "model.pt").is_file() and (out / spec.name / "checkpoints" / "best.pt").is_file()
    import io
    import zipfile

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../outside.txt", "no")
    with pytest.raises(QzooError, match="outside its run folder"):
        sweep.unpack(evil.getvalue(), out / "victim")
    assert not (out / "outside.txt").exists()


def test_a_local_sweep_with_one_cpu_runs_its_runs_one_after_the_other(tmp_path):
    """``--cpus 1``: a local Ray of one CPU, so the second run starts only once the first has ended."""
    out = tmp_path / "one"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-c",
               "from qzoo.cli import entry_point; entry_point()", "sweep", "--env", "CartPole-v1", "--seeds", "0-1",
               "-n", "1500", "--set", *TINY, "--cpus", "1", "--out", str(out), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["ran"] == 2
    metas = sorted((json.loads(p.read_text()) for p in out.glob("*/run.json")), key=lambda meta: meta["started"])
    assert len(metas) == 2 and all(meta["status"] == "finished" for meta in metas)
    assert metas[0]["ended"] <= metas[1]["started"], metas  # ISO times of one zone: text order is time order


def test_a_signal_to_the_sweep_lets_its_running_run_checkpoint_where_it_is(tmp_path):
    """SIGTERM to ``qzoo sweep`` (a stopped ``make results``): the running run ends its step, checkpoints there and
    stops, the queued one never starts, and the sweep exits 128 + 15 saying so. No periodic checkpoint falls in this
    run, so the checkpoint on disk is the one the signal asked for."""
    import signal
    import time

    out = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-c",
               "from qzoo.cli import entry_point; entry_point()", "sweep", "--env", "CartPole-v1", "--seeds", "0-1",
               "-n", "1000000", "--set", "eval_freq=0", "checkpoint_freq=900000", "learning_starts=200",
               "torch_threads=1", "log_interval=250", "--cpus", "1", "--out", str(out)]
    sweep_process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train = out / "dqn-CartPole-v1-s0" / "train.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sweep_process.poll() is None:
        if train.is_file() and len(train.read_text().splitlines()) > 4:  # past 1000 env steps: it is learning
            break
        time.sleep(0.5)
    assert sweep_process.poll() is None, sweep_process.communicate()[1][-3000:]
    sweep_process.send_signal(signal.SIGTERM)
    stdout, stderr = sweep_process.communicate(timeout=240)
    assert sweep_process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by signal 15" in stdout and "Traceback" not in stderr, (stdout, stderr[-3000:])
    assert ": 1 ran now, 0 already finished, 0 failed" in stdout and "1 not started" in stdout, stdout  # s1 did not
    meta = json.loads((out / "dqn-CartPole-v1-s0" / "run.json").read_text())
    (checkpoint,) = (out / "dqn-CartPole-v1-s0" / "checkpoints").glob("step-*")
    assert meta["status"] == "interrupted" and int(checkpoint.name.split("-")[1]) == meta["steps"] >= 1000, meta
    assert not (out / "dqn-CartPole-v1-s1").exists()  # queued behind the one CPU: dropped, not started


@pytest.mark.parametrize("error, status", [("cancelled", "stopped"), ("raised", "failed")])
def test_once_a_sweep_is_stopping_only_a_cancelled_task_counts_as_not_started(error, status, tmp_path):
    """A task that truly failed while the signal was being handled is reported as failed, not as stopped."""
    from types import SimpleNamespace

    import ray

    def get(ref):
        if error == "cancelled":
            raise ray.exceptions.TaskCancelledError()
        raise ValueError("the env broke\nboom")

    run = sweep.RunSpec("dqn-CartPole-v1-s0", "CartPole-v1", "dqn", {"seed": 0})
    failed: list[str] = []
    summary = sweep.collect(SimpleNamespace(get=get, exceptions=ray.exceptions), "ref", run, tmp_path, failed, True)
    assert summary == {"name": run.name, "status": status}
    assert failed == ([] if status == "stopped" else ["dqn-CartPole-v1-s0: boom"])


def test_a_sweep_on_a_two_node_loopback_cluster_survives_a_killed_task_and_resumes_only_what_is_missing(tmp_path):
    out = tmp_path / "classic"
    argv = ["sweep", "--env", "CartPole-v1", "--seeds", "0-1", "-n", "3000", "--set-grid", "double_q=true,false",
            "--set", *TINY, "--retries", "3", "--out", str(out), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(SCRIPT),
               json.dumps({"argv": argv, "kill_task_at": 1000})]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420, cwd=ROOT / "tests")
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["codes"] == [0, 0] and len(report["killed"]) == 1 and report["nodes"] == 2, report
    assert report["addresses"] == ["127.0.0.1"]  # loopback only
    first, again = (json.loads(line) for line in lines[-3:-1])
    assert first["ran"] == 4 and first["skipped"] == 0 and not first["failed"]
    assert again["ran"] == 0 and again["skipped"] == 4  # the same command again runs nothing
    names = sorted(p.name for p in out.iterdir() if (p / "run.json").is_file())
    assert names == sorted(run.name for run in sweep.expand(["CartPole-v1"], "dqn", [0, 1], {},
                                                             {"double_q": [True, False]}))
    metas = [json.loads((out / name / "run.json").read_text()) for name in names]
    assert all(meta["status"] == "finished" and meta["steps"] == 3000 for meta in metas)
    resumed = [meta for meta in metas if meta.get("resumed")]
    assert len(resumed) == 1, metas  # the killed task's run went on from its checkpoint, not from zero
    for name in names:  # no duplicated or backwards rows after the resume
        steps = [int(row.split(",")[0]) for row in (out / name / "train.csv").read_text().splitlines()[1:]]
        assert steps == sorted(set(steps)) and steps[-1] == 3000
    assert (out / "plots" / "scores.md").is_file() and "double_q=False" in (out / "plots" / "scores.md").read_text()
