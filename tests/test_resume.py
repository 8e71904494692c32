"""Exact resume: runs killed with SIGKILL (also mid-checkpoint), stopped by SIGTERM / SIGINT, failed on a
NaN loss or a full disk, then resumed, end with the weights of the same run left alone."""

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qzoo import checkpoint
from qzoo.cli import main
from qzoo.dqn import DQN
from qzoo.runs import RunRecorder

QZOO = Path(sys.executable).parent / "qzoo"
CARTPOLE = ["--env", "CartPole-v1", "-n", "4000", "--seed", "5", "--deterministic", "--no-progress", "--json",
            "--set", "learning_starts=200", "checkpoint_freq=500", "log_interval=100", "eval_freq=1000",
            "n_eval_episodes=2", "net_arch=[32,32]", "buffer_size=3000", "train_freq=4", "gradient_steps=1",
            "target_update_interval=250"]
DEADLINE = 120  # seconds to wait for a condition before failing (never a timing assertion)


def start(*argv, env=None):
    return subprocess.Popen([str(QZOO), "train", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for(condition, process):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert process.poll() is None, f"the run ended before the kill point: {process.communicate()}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.01)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def finish(*argv, env=None) -> dict:
    done = subprocess.run([str(QZOO), "train", *argv, "--json"], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def last_logged_step(run_dir: Path) -> int:
    if not (run_dir / "train.csv").is_file():
        return 0
    lines = (run_dir / "train.csv").read_text().splitlines()
    return int(lines[-1].split(",")[0]) if len(lines) > 1 and lines[-1][:1].isdigit() else 0


def rows(run_dir: Path, name: str, drop=("time", "steps_per_second")) -> list[dict]:
    with open(run_dir / name) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def info_sha(run_dir: Path) -> str:
    done = subprocess.run([str(QZOO), "info", str(run_dir), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["weights_sha256"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, left alone."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    report = finish(*CARTPOLE, "--run-dir", str(run_dir))
    assert report["status"] == "finished" and report["steps"] == 4000
    return run_dir, report["weights_sha256"]


def test_sigkill_at_several_points_then_resume_gives_the_weights_of_the_run_left_alone(reference, tmp_path):
    ref_dir, ref_sha = reference
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"

    # 1. Killed right after its first checkpoint.
    process = start(*CARTPOLE, "--run-dir", str(run_dir))
    wait_for(lambda: checkpoint.latest(checkpoints) is not None, process)
    kill(process)

    # 2. Killed in the middle of a checkpoint write: every file written, not yet renamed.
    process = start("--resume", str(run_dir), "--no-progress", env={checkpoint.PAUSE_ENV_VAR: "30"})
    wait_for(lambda: any(checkpoints.glob(".step-*.tmp")), process)
    complete_before = checkpoint.latest(checkpoints)
    kill(process)
    assert any(checkpoints.glob(".step-*.tmp"))  # the half-written folder is left behind ...
    assert checkpoint.latest(checkpoints) == complete_before  # ... and never taken for a checkpoint
    checkpoint.read(complete_before)  # the previous checkpoint is whole

    # 3. Killed between two checkpoints: rows logged after the newest checkpoint must be cut on resume.
    resumed_from = checkpoint.step_of(checkpoint.latest(checkpoints))
    process = start("--resume", str(run_dir), "--no-progress")
    wait_for(lambda: last_logged_step(run_dir) >= resumed_from + 650, process)
    kill(process)

    # 4. Resumed to the end.
    report = finish("--resume", str(run_dir))
    assert report["status"] == "finished" and report["steps"] == 4000
    assert report["weights_sha256"] == ref_sha == info_sha(run_dir)
    assert not any(checkpoints.glob(".step-*.tmp"))
    # Rows neither lost nor duplicated: the same rows as the run left alone (apart from timings).
    for name in ("episodes.csv", "train.csv", "evaluations.csv"):
        assert rows(run_dir, name) == rows(ref_dir, name), name
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and len(meta["resumed"]) == 3


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_checkpoint_the_current_step_then_exit(reference, tmp_path, sig, code):
    _, ref_sha = reference
    run_dir = tmp_path / "run"
    process = start(*CARTPOLE, "--run-dir", str(run_dir))
    wait_for(lambda: last_logged_step(run_dir) >= 700, process)
    process.send_signal(sig)
    process.communicate()
    assert process.returncode == code
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted"
    saved = checkpoint.read(checkpoint.latest(run_dir / "checkpoints"))
    assert saved.step == meta["steps"] >= 700  # the step it stopped at, not the last periodic checkpoint
    assert finish("--resume", str(run_dir))["weights_sha256"] == ref_sha


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """Regression: the loss became NaN, then ``finally: recorder.finish`` saved the NaN weights over
    ``checkpoints/latest.pt``. Now the run is marked failed, no model is saved, the checkpoint stays."""
    run_dir = tmp_path / "run"
    argv = ["train", "--env", "CartPole-v1", "-n", "3000", "--no-progress", "--run-dir", str(run_dir), "--set",
            "learning_rate=1e30", "learning_starts=300", "checkpoint_freq=200", "train_freq=4", "gradient_steps=1",
            "net_arch=[16]", "eval_freq=0"]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qzoo: error")]
    assert len(lines) == 1 and "the loss became" in lines[0]
    step = int(lines[0].split("at env step ")[1].split(";")[0])
    assert step > 300
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and f"env step {step}" in meta["error"]
    assert not (run_dir / "model.pt").exists() and not (run_dir / "checkpoints" / "latest.pt").exists()
    saved = checkpoint.read_latest(run_dir)
    assert saved.step == 200
    agent = DQN.load(saved.model_file)
    assert all(np.isfinite(p.detach().numpy()).all() for p in agent.q_net.parameters())


# ---------------------------------------------------------------------------------- damaged checkpoints


SMALL = ["-n", "2000", "--no-progress", "--set", "learning_starts=200", "checkpoint_freq=500", "net_arch=[16]",
         "eval_freq=0", "buffer_size=2000", "train_freq=4", "gradient_steps=1", "torch_threads=1"]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped at env step 1000 by SIGTERM (emulated in-process: the flag the handler sets)."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    original = RunRecorder.on_checkpoint

    def stop_after_second(self, agent):
        original(self, agent)
        if agent.num_timesteps == 1000:
            self.stop_requested = signal.SIGTERM

    RunRecorder.on_checkpoint = stop_after_second
    try:
        assert main(["train", "--env", "CartPole-v1", "--run-dir", str(run_dir), *SMALL]) == 143
    finally:
        RunRecorder.on_checkpoint = original
    return run_dir


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def future_format(folder: Path) -> None:
    manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
    (folder / checkpoint.MANIFEST).write_text(json.dumps({**manifest, "format": 99}))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda ckpt: shutil.rmtree(ckpt), "holds no checkpoint to resume from"),
        (lambda ckpt: truncate(ckpt / "replay.frames.npy"), "replay.frames.npy is truncated"),
        (lambda ckpt: flip_a_byte(ckpt / "model.pt"), "model.pt does not match its sha256 (corrupt)"),
        (lambda ckpt: flip_a_byte(ckpt / "env.pkl"), "env.pkl does not match its sha256"),
        (lambda ckpt: (ckpt / checkpoint.MANIFEST).unlink(), "manifest.json is missing"),
        (lambda ckpt: (ckpt / "state.json").unlink(), "state.json is missing"),
        (future_format, "has format 99; this qzoo (0.1.0) reads format 1"),
    ],
    ids=["missing", "truncated", "corrupt-model", "corrupt-env", "no-manifest", "no-state", "future-format"],
)
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(stopped_run, tmp_path, capsys, damage, fragment):
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    damage(checkpoint.latest(run_dir / "checkpoints") or run_dir / "checkpoints" / checkpoint.folder_name(1000))
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("qzoo: error:") and fragment in err[0], err
    assert snapshot(run_dir) == before


def test_resume_refuses_a_finished_run_and_config_changes(stopped_run, tmp_path, capsys):
    before = snapshot(stopped_run)
    assert main(["train", "--resume", str(stopped_run), "--set", "gamma=0.5"]) == 2
    assert "--set takes only actors there, not gamma" in capsys.readouterr().err
    # actors: a distributed run's actor count only (tests/test_apex.py, tests/test_distributed.py)
    assert main(["train", "--resume", str(stopped_run), "--set", "actors=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained in one process" in err[0]
    assert snapshot(stopped_run) == before
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_stopped_run_resumes_to_the_weights_of_the_run_left_alone(stopped_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    assert main(["train", "--resume", str(run_dir), "--json", "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", "--env", "CartPole-v1", "--json", "--run-dir", str(tmp_path / "alone"), *SMALL]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["steps"] == alone["steps"] == 2000
    assert resumed["weights_sha256"] == alone["weights_sha256"]
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_tabular_run_resumes_exactly(tmp_path, capsys, monkeypatch):
    argv = ["--algo", "qlearning", "--env", "FrozenLake-v1", "-n", "6000", "--no-progress", "--json",
            "--set", "checkpoint_freq=1000", "eval_freq=2000", "n_eval_episodes=5", "log_interval=500"]
    assert main(["train", *argv, "--run-dir", str(tmp_path / "alone")]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    original = RunRecorder.on_checkpoint

    def stop_at_3000(self, agent):
        original(self, agent)
        if agent.num_timesteps == 3000:
            self.stop_requested = signal.SIGTERM

    monkeypatch.setattr(RunRecorder, "on_checkpoint", stop_at_3000)
    assert main(["train", *argv, "--run-dir", str(tmp_path / "run")]) == 143
    monkeypatch.setattr(RunRecorder, "on_checkpoint", original)
    saved = checkpoint.read_latest(tmp_path / "run")
    with np.load(saved.model_file, allow_pickle=False) as data:  # the table stays pickle-free
        assert data["q_table"].shape == (16, 4)
    assert main(["train", "--resume", str(tmp_path / "run"), "--json", "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["weights_sha256"] == alone["weights_sha256"] and resumed["episodes"] == alone["episodes"]
    for name in ("episodes.csv", "train.csv", "evaluations.csv"):
        assert rows(tmp_path / "run", name) == rows(tmp_path / "alone", name), name


# ------------------------------------------------------------------------------------------- full disk

FULL_DISK_ARGV = ["--env", "CartPole-v1", "-n", "30000", "--no-progress", "--set", "learning_starts=30000",
                  "checkpoint_freq=1000", "eval_freq=0", "buffer_size=30000", "net_arch=[16]"]


def mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def check_full_disk_failure(run_dir: Path, returncode: int, stderr: str) -> None:
    assert returncode == 2
    lines = [line for line in stderr.splitlines() if line.startswith("qzoo: error")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "cannot write the checkpoint of env step" in lines[0]
    failed_step = int(lines[0].split("env step ")[1].split(" ")[0])
    assert lines[0].endswith(f"the checkpoint of env step {failed_step - 1000} is intact")
    checkpoints = run_dir / "checkpoints"
    assert not any(checkpoints.glob(".step-*.tmp"))  # the half-written checkpoint was removed
    saved = checkpoint.read_latest(run_dir)
    assert saved.step == failed_step - 1000
    agent = checkpoint.restore(DQN, saved)
    assert agent.num_timesteps == saved.step and len(agent.buffer) == saved.step
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint_tmpfs(tmp_path):
    mount_point = tmp_path / "tiny"
    if not mount_tmpfs(mount_point, "1m"):
        pytest.skip("mounting a tmpfs is not permitted here; the RLIMIT_FSIZE test covers a failed write")
    try:
        run_dir = mount_point / "run"
        done = subprocess.run([str(QZOO), "train", *FULL_DISK_ARGV, "--run-dir", str(run_dir)],
                              capture_output=True, text=True)
        assert "No space left on device" in done.stderr
        check_full_disk_failure(run_dir, done.returncode, done.stderr)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_file_size_limit_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([str(QZOO), "train", *FULL_DISK_ARGV, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, preexec_fn=_limit_file_size)
    assert "File too large" in done.stderr or "written" in done.stderr  # numpy reports a short write
    check_full_disk_failure(run_dir, done.returncode, done.stderr)


# ---------------------------------------------------------------------------------------------- Atari

ATARI = ["--env", "BreakoutNoFrameskip-v4", "-n", "500", "--seed", "1", "--deterministic", "--no-progress", "--json",
         "--set", "buffer_size=1000", "learning_starts=100", "checkpoint_freq=150", "eval_freq=0", "log_interval=50",
         "net_arch=[32]", "target_update_interval=100"]


@pytest.mark.slow
def test_atari_run_killed_and_resumed_gives_the_weights_of_the_run_left_alone(tmp_path):
    alone = finish(*ATARI, "--run-dir", str(tmp_path / "alone"))
    run_dir = tmp_path / "run"
    process = start(*ATARI, "--run-dir", str(run_dir))
    wait_for(lambda: last_logged_step(run_dir) >= 350, process)  # past the checkpoint of step 300
    kill(process)
    saved = checkpoint.read_latest(run_dir)
    assert saved.step == 300
    frames = np.load(saved.path / "replay.frames.npy", mmap_mode="r")
    assert frames.shape[1:] == (84, 84) and frames.dtype == np.uint8  # frames once, not stacks
    resumed = finish("--resume", str(run_dir))
    assert resumed["weights_sha256"] == alone["weights_sha256"]
    assert rows(run_dir, "episodes.csv") == rows(tmp_path / "alone", "episodes.csv")
