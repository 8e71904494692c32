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


def wandb_records(path) -> list:
    """The protobuf records of an offline W&B run file (``run-*.wandb``), as ``wandb sync`` reads them.

    wandb 0.31 has no Python reader of its own any more (its Go core writes the file), so this reads the framing it
    keeps: a 7-byte header (``:W&B``, a magic, a version), then LevelDB's log format: 32 KiB blocks of chunks, each
    with a 7-byte header (CRC, little-endian length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail too
    short for a header is padding.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    records, parts, pos = [], [], 7
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def offline_run(folder) -> dict:
    """An offline W&B run's name, group, job type, config and final summary, decoded from its records."""
    import json

    run = {"config": {}, "summary": {}}
    for record in wandb_records(next(folder.glob("*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group, job_type=record.run.job_type)
            run["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "summary":
            run["summary"].update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.summary.update})
    return run


def test_tune_track_offline_makes_one_wandb_run_per_trial_with_its_hyperparameters_and_value(tmp_path, monkeypatch,
                                                                                          capsys):
    import json

    import optuna

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    out = tmp_path / "tune"
    assert main(["tune", "--env", "CartPole-v1", "-n", "500", "--evaluations", "2", "--eval-episodes", "2",
                 "--seed", "0", "--trials", "2", "--out", str(out), "--study-name", "cartpole", "--track",
                 "--wandb-project", "qzoo-test", "--set", "torch_threads=1", "net_arch=[32,32]"]) == 0
    study = optuna.load_study(study_name="cartpole", storage=f"sqlite:///{out / 'study.db'}")
    runs = {run["config"]["trial"]: run for run in map(offline_run, (out / "wandb").glob("offline-run-*"))}
    assert sorted(runs) == [0, 1]
    for trial in study.get_trials():
        run = runs[trial.number]
        assert (run["name"], run["group"], run["job_type"]) == (f"cartpole-trial-{trial.number}", "cartpole", "trial")
        sampled = trial.user_attrs["hyperparameters"]
        assert sampled and {k: run["config"][k] for k in sampled} == json.loads(json.dumps(sampled))
        assert run["config"]["sampled"] == sorted(sampled) and run["config"]["study"] == "cartpole"
        assert (run["config"]["env_id"], run["config"]["net_arch"], run["config"]["n_timesteps"]) == (
            "CartPole-v1", [32, 32], 500)  # the fixed values too
        assert run["summary"]["state"] == trial.state.name.lower()
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run["summary"]["value"] == trial.value == run["summary"]["result_seed_0"]
        assert "eval/result" in run["summary"]  # the periodic evaluations' history
