"""qzoo tune, plot, record and push, through main(argv) on tiny real runs."""

import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import optuna
import pytest
import yaml

from qzoo.cli import main
from qzoo.hub import parse_model_card
from qzoo.video import count_frames

QZOO = str(Path(sys.executable).parent / "qzoo")
TINY_TUNE = ["--env", "CartPole-v1", "-n", "1500", "--evaluations", "2", "--eval-episodes", "2", "--seed", "0"]


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def train(run_dir: Path, env="CartPole-v1", steps=1000, seed=0, *extra):
    argv = ["train", "--env", env, "-n", str(steps), "--seed", str(seed), "--run-dir", str(run_dir), "--no-progress",
            "--set", "eval_freq=250", "n_eval_episodes=2", "learning_starts=200", "net_arch=[32,32]", *extra]
    assert main(argv) == 0
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        train(root / f"cartpole-{seed}", seed=seed)
    assert main(["train", "--algo", "qlearning", "--env", "FrozenLake-v1", "-n", "3000", "--run-dir",
                 str(root / "frozenlake"), "--no-progress", "--set", "eval_freq=1000", "n_eval_episodes=20"]) == 0
    return root


# ------------------------------------------------------------------------------------------- tune


def test_tune_runs_its_trials_writes_a_best_preset_that_trains_and_continues_the_study(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", *TINY_TUNE, "--trials", "3", "--out", str(out), "--json"]) == 0
    summary = last_json(capsys)
    assert summary["n_trials"] == 3 and summary["trials_run"] == [0, 1, 2]
    assert (out / "study.db").is_file() and (out / "trials.csv").is_file()
    assert "| rank | trial | value |" in (out / "report.md").read_text()
    trials = (out / "trials.csv").read_text().splitlines()  # Optuna's study.trials_dataframe()
    assert trials[0].startswith("number,value,datetime_start") and len(trials) == 4
    for figure in ("optimization_history.png", "param_importances.png"):  # Optuna's own plots
        assert cv2.imread(str(out / figure)) is not None, figure
    best = yaml.safe_load((out / "best_params.yml").read_text())["CartPole-v1"]
    assert best == summary["best"]["hyperparameters"]

    run_dir = tmp_path / "from-best"
    assert main(["train", "--env", "CartPole-v1", "-c", str(out / "best_params.yml"), "-n", "300",
                 "--run-dir", str(run_dir), "--no-progress"]) == 0
    trained = yaml.safe_load((run_dir / "config.yml").read_text())["CartPole-v1"]
    assert all(trained[k] == v for k, v in best.items())

    capsys.readouterr()
    assert main(["tune", *TINY_TUNE, "--trials", "2", "--out", str(out), "--json"]) == 0
    again = last_json(capsys)
    assert again["n_trials"] == 5 and again["trials_run"] == [3, 4]


def test_tune_rainbow_searches_the_switches_parameters_never_epsilon_and_its_best_trains(tmp_path, capsys):
    out = tmp_path / "tune"
    fixed = ["train_freq=4", "gradient_steps=1", "batch_size=32", "learning_starts=100", "net_arch=[32,32]"]
    assert main(["tune", "--algo", "rainbow", *TINY_TUNE, "--trials", "2", "--out", str(out), "--json",
                 "--set", *fixed]) == 0
    summary = last_json(capsys)
    best = summary["best"]["hyperparameters"]  # the sampled values and the fixed ones
    assert {"n_step", "prioritized_replay_alpha", "prioritized_replay_beta0", "noisy_sigma0", "adam_eps"} <= set(best)
    assert not {"exploration_fraction", "exploration_final_eps"} & set(best)
    assert (best["train_freq"], best["learning_starts"]) == (4, 100)  # --set keys are never sampled
    run_dir = tmp_path / "from-best"
    assert main(["train", "--algo", "rainbow", "--env", "CartPole-v1", "-c", str(out / "best_params.yml"), "-n", "300",
                 "--set", *fixed, "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / "run.json").read_text())["variant"] == "rainbow"


def test_a_diverging_trial_is_pruned_not_a_crash(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", *TINY_TUNE, "--trials", "2", "--out", str(out), "--json", "--set", "learning_rate=1e30",
                 "learning_starts=0", "train_freq=1", "gradient_steps=1"]) == 0
    summary = last_json(capsys)
    assert summary["states"]["pruned"] == 2 and summary["best"] is None
    assert not (out / "best_params.yml").exists()


def test_ctrl_c_keeps_finished_trials_and_the_same_command_continues(tmp_path):
    out = tmp_path / "tune"
    argv = [QZOO, "tune", *TINY_TUNE, "--trials", "50", "--out", str(out)]
    # A user's Ctrl-C reaches a process whose SIGINT is at its default. A suite started in the background of a
    # non-interactive shell (`make test &`) has SIGINT ignored, and children inherit that: the tune then never
    # saw the signal (exit 0 after its 50 trials). The child starts from the default, whoever started pytest.
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    finished = 0
    deadline = time.monotonic() + 240
    while finished < 1 and time.monotonic() < deadline:
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="qzoo-dqn-CartPole-v1", storage=storage)
            finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        except Exception:  # the study is not created yet
            continue
    assert worker.poll() is None, "the tune ended before it was interrupted"
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130, err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="qzoo-dqn-CartPole-v1", storage=storage)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 1
    before = len(study.get_trials())
    done = subprocess.run([QZOO, "tune", *TINY_TUNE, "--trials", "1", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(optuna.load_study(study_name="qzoo-dqn-CartPole-v1", storage=storage).get_trials()) == before + 1


# ------------------------------------------------------------------------------------------- plot


def test_plot_writes_valid_images_whose_size_follows_the_data(runs, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["plot", str(runs / "cartpole-0"), str(runs / "cartpole-1"), "--out", str(one)]) == 0
    assert main(["plot", str(runs), "--out", str(two), "--json"]) == 0
    report = last_json(capsys)
    assert report["runs"] == 3 and report["envs"] == ["CartPole-v1", "FrozenLake-v1"]
    sizes = {}
    for folder in (one, two):
        image = cv2.imread(str(folder / "curves.png"))
        assert image is not None and image.shape[2] == 3
        sizes[folder.name] = image.shape[:2]
        assert ET.parse(folder / "curves.svg").getroot().tag.endswith("svg")
        assert cv2.imread(str(folder / "iqm.png")) is not None
    assert sizes["two"][1] > sizes["one"][1], "two envs take two panels"
    scores = (two / "scores.md").read_text()
    assert "| CartPole-v1 | dqn | 2 |" in scores and "| FrozenLake-v1 | qlearning | 1 |" in scores
    assert "| dqn |" in scores.split("# IQM")[1]


def test_plot_labels_runs_by_their_variant_so_switches_are_not_merged_with_plain_dqn(runs, tmp_path, capsys):
    dueling = train(tmp_path / "dueling", "CartPole-v1", 600, 0, "dueling=true")
    assert main(["plot", str(runs / "cartpole-0"), str(dueling), "--out", str(tmp_path / "plots"), "--format", "png",
                 "--label-keys", "double_q"]) == 0
    scores = (tmp_path / "plots" / "scores.md").read_text()
    assert "| CartPole-v1 | dqn double_q=True | 1 |" in scores
    assert "| CartPole-v1 | dqn+dueling double_q=True | 1 |" in scores


def test_plot_by_wall_clock_time_and_smoothed_training_returns(runs, tmp_path):
    assert main(["plot", str(runs), "--out", str(tmp_path), "--x", "time", "--source", "train", "--smooth", "5",
                 "--format", "png"]) == 0
    assert cv2.imread(str(tmp_path / "curves.png")) is not None and not (tmp_path / "curves.svg").exists()


def test_plot_of_a_folder_without_runs_is_one_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- record


def test_record_writes_an_mp4_and_gif_of_full_colour_episodes(runs, tmp_path, capsys):
    out = tmp_path / "cartpole.mp4"
    assert main(["record", str(runs / "cartpole-0"), "--episodes", "2", "--out", str(out), "--gif", "--json"]) == 0
    result = last_json(capsys)
    frames, shape = count_frames(out)
    assert frames == result["frames"] >= 2 * 9  # every step of both episodes, plus each first frame
    assert shape == (400, 600, 3)  # CartPole's rendered picture, not its 4-number observation
    gif_frames, gif_shape = count_frames(out.with_suffix(".gif"))
    # Pillow merges identical consecutive frames into one longer frame: never more frames than the mp4.
    assert frames - 4 <= gif_frames <= frames and gif_shape[:2] == (400, 600)


def test_record_shows_the_atari_screen_not_the_network_input(tmp_path, capsys):
    from qzoo.dqn import DQN

    DQN("SpaceInvadersNoFrameskip-v4", buffer_size=100, eval_freq=0).save(tmp_path / "model.pt")
    out = tmp_path / "si.mp4"
    assert main(["record", str(tmp_path / "model.pt"), "--max-steps", "60", "--out", str(out), "--json"]) == 0
    frames, shape = count_frames(out)
    assert frames == last_json(capsys)["frames"] == 61
    assert shape == (210, 160, 3)


def test_record_of_minatar_regression_float_frames_crashed_the_encoder(tmp_path, capsys):
    """MinAtar renders its 10x10 grid as floats in [0, 1]: the GIF writer raised a TypeError traceback."""
    import numpy as np

    from qzoo.dqn import DQN
    from qzoo.video import video_frame

    DQN("MinAtar/Breakout-v1", buffer_size=100, eval_freq=0).save(tmp_path / "model.pt")
    out = tmp_path / "breakout.mp4"
    assert main(["record", str(tmp_path / "model.pt"), "--episodes", "2", "--out", str(out), "--gif", "--json"]) == 0
    frames, shape = count_frames(out)
    assert frames == last_json(capsys)["frames"] >= 2 * 2
    assert shape == (160, 160, 3)  # each cell of the grid a 16x16 block
    assert count_frames(out.with_suffix(".gif"))[1][:2] == (160, 160)
    grid = np.zeros((10, 10, 3))
    grid[2, 3] = (1.0, 0.5, 0.0)
    big = video_frame(grid)
    assert big.dtype == np.uint8 and (big[32:48, 48:64] == (255, 128, 0)).all() and big[:32].max() == 0


# ------------------------------------------------------------------------------------------- push


def test_push_folder_card_parses_and_round_trips_through_evaluate_and_train(runs, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["push", str(runs / "cartpole-0"), "--out", str(out), "--episodes", "3", "--seed", "7", "--json"]) == 0
    pushed = last_json(capsys)
    for name in ("README.md", "config.yml", "model.pt", "results.json", "replay.mp4"):
        assert (out / name).is_file(), name
    card = parse_model_card((out / "README.md").read_text())
    metric = card["model-index"][0]["results"][0]["metrics"][0]
    results = json.loads((out / "results.json").read_text())
    assert metric["type"] == "mean_reward" and metric["value"] == f"{results['mean']:.2f} +/- {results['std']:.2f}"
    assert pushed["mean"] == results["mean"] and pushed["folder"] == str(out)
    assert card["model-index"][0]["results"][0]["dataset"]["name"] == "CartPole-v1"
    assert count_frames(out / "replay.mp4")[0] > 1

    assert main(["evaluate", str(out), "--episodes", "3", "--seed", "7", "--json"]) == 0
    assert last_json(capsys)["returns"] == results["returns"]

    assert main(["info", str(out), "--json"]) == 0
    source_sha = last_json(capsys)["weights_sha256"]
    assert main(["train", "--from", str(out), "-n", "0", "--run-dir", str(tmp_path / "again"), "--json"]) == 0
    assert last_json(capsys)["weights_sha256"] == source_sha  # the new run starts from the pushed weights


def test_push_refuses_without_a_token_or_into_a_used_folder(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))  # no cached login either
    assert main(["push", str(runs / "cartpole-0"), "--repo-id", "someone/cartpole"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(["push", str(runs / "cartpole-0"), "--out", str(used)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


class _FailingHub:
    """huggingface_hub.HfApi's stand-in: records the token it was given, then fails the upload (no network)."""

    tokens: list = []

    def __init__(self, token=None, **kwargs):
        self.tokens.append(token)

    def create_repo(self, repo_id, exist_ok=False):
        pass

    def upload_folder(self, **kwargs):
        raise ConnectionError("Hub unreachable")


def test_push_takes_the_token_from_the_flag_then_hf_token_then_the_cached_login_and_keeps_a_failed_upload(
        runs, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FailingHub)
    monkeypatch.setattr(_FailingHub, "tokens", [])
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text("hf_cached_login")  # what huggingface-cli login / notebook_login() leave
    # HF_HOME/token as huggingface_hub resolved it when it was imported (its constants are read once).
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    push = ["push", str(runs / "cartpole-0"), "--repo-id", "me/cartpole", "--episodes", "1", "--no-video"]
    assert main(push) == 2
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert main(push) == 2
    assert main([*push, "--token", "hf_from_flag"]) == 2
    assert _FailingHub.tokens == ["hf_cached_login", "hf_from_env", "hf_from_flag"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qzoo: error:")]
    assert len(errors) == 3 and all("upload to me/cartpole failed (Hub unreachable)" in e for e in errors)
    kept = Path(errors[-1].rsplit("kept in ", 1)[1])
    assert (kept / "model.pt").is_file() and (kept / "README.md").is_file()  # upload it again or by hand
