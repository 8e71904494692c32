"""`qzoo train --track` in W&B's offline mode: a local W&B run with the config, the metrics and the model."""

import pytest

from qzoo.cli import main

pytest.importorskip("wandb")


def test_track_offline_writes_a_local_wandb_run_with_the_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    run = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "-n", "1000", "--run-dir", str(run), "--no-progress", "--track",
                 "--wandb-project", "qzoo-test", "--set", "eval_freq=500", "n_eval_episodes=2", "log_interval=250",
                 "learning_starts=100", "torch_threads=1"]) == 0
    (offline,) = (run / "wandb").glob("offline-run-*")
    # W&B's run file (protobuf records, read by `wandb sync`): every metric key once per row logged, at least.
    (history,) = offline.glob("*.wandb")
    data = history.read_bytes()
    assert data.count(b"train/epsilon") >= 4 and data.count(b"train/loss") >= 3  # log_interval 250 over 1000 steps
    assert data.count(b"eval/mean_return") >= 2 and b"rollout/episode_return" in data  # eval_freq 500
    assert b"learning_rate" in data and b"CartPole-v1" in data  # the config
    assert b"model.pt" in data and b"finished" in data  # the final model's artifact, the status
    assert (run / "train.csv").is_file() and any((run / "tb").iterdir())  # TensorBoard and the CSVs as ever
