"""The command line, in-process through main(argv), on tiny runs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo.cli import main

DATA = Path(__file__).parent / "data"
TINY = ["--set", "learning_starts=200", "eval_freq=500", "n_eval_episodes=2", "checkpoint_freq=500",
        "log_interval=250", "net_arch=[32,32]", "train_freq=4", "gradient_steps=1"]


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    assert main(["train", "--env", "CartPole-v1", "-n", "1000", "--seed", "1", "--run-dir", str(run_dir),
                 "--no-progress", *TINY]) == 0
    return run_dir


def test_train_writes_a_complete_run_folder(cartpole_run):
    for name in ("config.yml", "run.json", "episodes.csv", "train.csv", "evaluations.csv", "model.pt",
                 "checkpoints/latest.pt", "checkpoints/best.pt"):
        assert (cartpole_run / name).is_file(), name
    assert any((cartpole_run / "tb").iterdir())
    meta = json.loads((cartpole_run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 1000
    assert meta["command"].startswith("qzoo train --env CartPole-v1")
    assert meta["versions"]["torch"].startswith("2.13.0")
    assert meta["machine"]["cpu"] and meta["machine"]["cpus"] >= 1  # docs/results.md's CPU column
    with open(cartpole_run / "episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) >= 1 and all(float(e["return"]) > 0 for e in episodes)
    with open(cartpole_run / "evaluations.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [500, 1000]


def test_saved_config_trains_again(cartpole_run, tmp_path, capsys):
    report = run_json(capsys, ["train", "--env", "CartPole-v1", "-c", str(cartpole_run / "config.yml"),
                               "--dry-run", "--json"])
    assert report["config"]["n_timesteps"] == 1000 and report["config"]["seed"] == 1
    assert report["config"]["net_arch"] == [32, 32]


def test_evaluate_reports_mean_std_and_result(cartpole_run, capsys):
    report = run_json(capsys, ["evaluate", str(cartpole_run), "--episodes", "3", "--json"])
    assert report["env_id"] == "CartPole-v1" and report["episodes"] == 3
    assert report["result"] == pytest.approx(report["mean"] - report["std"])
    assert len(report["returns"]) == 3 and all(r >= 1 for r in report["returns"])


def test_info_fingerprints_the_weights(cartpole_run, capsys):
    from qzoo.dqn import DQN

    report = run_json(capsys, ["info", str(cartpole_run), "--json"])
    assert report["env_id"] == "CartPole-v1" and report["algo"] == "dqn" and report["steps"] == 1000
    assert report["weights_sha256"] == DQN.load(cartpole_run / "model.pt").weights_sha256()


def test_enjoy_without_a_screen_writes_frames(cartpole_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    # CartPole episodes last at least 8 steps: 5 episodes reach the 20-step cap.
    assert main(["enjoy", str(cartpole_run), "--episodes", "5", "--max-steps", "20",
                 "--frames-dir", str(tmp_path / "frames")]) == 0
    frames = sorted((tmp_path / "frames").glob("*.png"))
    started = [line for line in capsys.readouterr().out.splitlines() if line.startswith("episode ")]
    # As record's video: each episode's first frame, then one per env step (its last frame too).
    assert 2 <= len(started) <= 3 and len(frames) == 20 + len(started)
    import cv2

    assert cv2.imread(str(frames[0])).shape[2] == 3


def test_dry_run_reports_compact_atari_replay(capsys):
    report = run_json(capsys, ["train", "--env", "SpaceInvadersNoFrameskip-v4", "--dry-run", "--json"])
    assert report["network"] == "cnn" and report["obs_shape"] == [4, 84, 84]
    assert report["replay_bytes"] / report["config"]["buffer_size"] <= 7200


def test_rlzoo_config_file_is_accepted(capsys):
    assert main(["train", "--env", "SpaceInvadersNoFrameskip-v4", "-c", str(DATA / "hf_course_dqn.yml"),
                 "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "ignored env_wrapper" in err and "ignored optimize_memory_usage" in err


def test_presets_lists_every_family(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for key in ("atari", "CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3", "BreakoutNoFrameskip-v4"):
        assert key in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--env", "CartPol-v1"], "did you mean CartPole-v1"),
        (["train", "--env", "Pendulum-v1"], "discrete actions"),
        (["train", "--env", "CartPole-v1", "--set", "gama=0.9"], "did you mean 'gamma'"),
        (["train", "--env", "CartPole-v1", "--set", "batch_size=big"], "batch_size must be an integer"),
        (["train", "--env", "CartPole-v1", "-c", "/nonexistent.yml"], "config file not found"),
        (["train", "--env", "CartPole-v1", "--set", "buffer_size=100000000000", "net_arch=[4]"], "GiB but only"),
        (["evaluate", "/nonexistent/run"], "run folder not found"),
        (["info", "/nonexistent/run"], "run folder not found"),
        (["train"], "--env"),
    ],
)
def test_bad_input_is_one_clear_line(argv, fragment, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith(("A.L.E", "[Powered"))]
    assert len(lines) == 1 and lines[0].startswith("qzoo: error:") and fragment in lines[0]


def test_malformed_yaml_and_an_occupied_run_folder_leave_saved_work_alone(cartpole_run, tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("learning_rate: [1e-3\n")
    assert main(["train", "--env", "CartPole-v1", "-c", str(bad)]) == 2
    assert "malformed YAML (line 2)" in capsys.readouterr().err
    before = {p: p.read_bytes() for p in cartpole_run.rglob("*") if p.is_file()}
    assert main(["train", "--env", "CartPole-v1", "-n", "10", "--run-dir", str(cartpole_run)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in cartpole_run.rglob("*") if p.is_file()}


def test_console_script_exits_non_zero_without_a_traceback():
    qzoo = Path(sys.executable).parent / "qzoo"
    done = subprocess.run([str(qzoo), "evaluate", "/nonexistent"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "run folder not found" in done.stderr
