"""Stable-Baselines3 DQN zips in and out (qzoo.sb3): SB3 models trained here, read by qzoo to the same Q-values;
qzoo runs exported, loaded by SB3 to the same actions; zips that would run code refused without running it."""

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from qzoo.algos import load_agent
from qzoo.cli import main

sb3 = pytest.importorskip("stable_baselines3")
torch.set_num_threads(1)
ATARI = "SpaceInvadersNoFrameskip-v4"


@pytest.fixture(scope="module")
def cartpole_zip(tmp_path_factory):
    model = sb3.DQN("MlpPolicy", "CartPole-v1", learning_starts=100, buffer_size=2_000, target_update_interval=100,
                    policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")
    model.learn(600)
    path = tmp_path_factory.mktemp("sb3") / "cartpole.zip"
    model.save(path)
    return path


def sb3_q_values(model, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        tensor, _ = model.policy.obs_to_tensor(obs)
        return model.policy.q_net(tensor).numpy()


def test_an_sb3_mlp_dqn_reads_into_qzoo_with_the_same_q_values_and_hyperparameters(cartpole_zip):
    model = sb3.DQN.load(cartpole_zip, device="cpu")
    agent = load_agent(cartpole_zip, "CartPole-v1")
    obs = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    np.testing.assert_allclose(agent.q_values(obs), sb3_q_values(model, obs), rtol=1e-6, atol=1e-6)
    assert agent.config.net_arch == (32, 32) and agent.config.double_q is False  # SB3 runs plain DQN
    assert (agent.config.target_update_interval, agent.config.buffer_size) == (100, 2_000)
    assert agent.num_timesteps == 600


def test_evaluate_info_and_train_from_an_sb3_zip(cartpole_zip, tmp_path, capsys):
    assert main(["evaluate", str(cartpole_zip), "--env", "CartPole-v1", "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert main(["info", str(cartpole_zip)]) == 2  # the zip does not name its env
    assert "does not name its env; pass --env" in capsys.readouterr().err
    named = tmp_path / "dqn-CartPole-v1.zip"  # RL-Zoo's file name names it
    named.write_bytes(cartpole_zip.read_bytes())
    assert main(["info", str(named), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["env_id"] == "CartPole-v1"
    run = tmp_path / "run"
    assert main(["train", "--from", str(cartpole_zip), "--env", "CartPole-v1", "-n", "300", "--run-dir", str(run),
                 "--no-progress", "--set", "eval_freq=0", "torch_threads=1"]) == 0
    assert "from: " in capsys.readouterr().err  # a new run (its own counters) from the zip's weights
    assert load_agent(run / "model.pt").config.net_arch == (32, 32)


def test_export_of_a_qzoo_cartpole_run_predicts_the_same_actions_in_sb3(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "-n", "600", "--run-dir", str(run), "--no-progress",
                 "--set", "eval_freq=0", "learning_starts=100", "net_arch=[32,16]", "torch_threads=1"]) == 0
    out = tmp_path / "model.zip"
    assert main(["export", str(run), "--format", "sb3", "--out", str(out)]) == 0
    model, agent = sb3.DQN.load(out, device="cpu"), load_agent(run / "model.pt")
    obs = np.random.default_rng(1).normal(size=(100, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], agent.predict(obs)[0])
    np.testing.assert_allclose(sb3_q_values(model, obs), agent.q_values(obs), rtol=1e-6, atol=1e-6)
    again = load_agent(out)  # the exported zip names its env for qzoo
    assert again.env_id == "CartPole-v1" and again.weights_sha256() == agent.weights_sha256()


def test_export_refuses_rainbow_heads_with_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "-n", "50", "--run-dir", str(run), "--no-progress",
                 "--set", "eval_freq=0", "dueling=true", "torch_threads=1"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", "sb3", "--out", str(tmp_path / "m.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no dueling head" in err and not (tmp_path / "m.zip").exists()


class _MakesAFile:
    """A pickle that would create a file when loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _zip_with(path: Path, source: Path, **replace: bytes) -> Path:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as out:
        for name in original.namelist():
            out.writestr(name, replace.get(name.replace(".", "_"), original.read(name)))
    return path


def test_a_zip_whose_policy_pth_or_data_would_run_code_is_refused_and_nothing_runs(cartpole_zip, tmp_path, capsys):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"q_net.q_net.0.weight": _MakesAFile(marker)}, buffer)
    bad_weights = _zip_with(tmp_path / "dqn-CartPole-v1.zip", cartpole_zip, policy_pth=buffer.getvalue())
    assert main(["evaluate", str(bad_weights)]) == 2
    assert "policy.pth is not plain weights; refused" in capsys.readouterr().err and not marker.exists()

    data = json.loads(zipfile.ZipFile(cartpole_zip).read("data"))
    import base64

    data["policy_kwargs"] = {":type:": "<class 'x'>", ":serialized:": base64.b64encode(pickle.dumps(_MakesAFile(marker))).decode()}
    bad_data = _zip_with(tmp_path / "data.zip", cartpole_zip, data=json.dumps(data).encode())
    assert main(["evaluate", str(bad_data), "--env", "CartPole-v1"]) == 2
    assert "custom DQN policy" in capsys.readouterr().err and not marker.exists()
    pickled = _zip_with(tmp_path / "pickled.zip", cartpole_zip, data=pickle.dumps(_MakesAFile(marker)))
    assert main(["evaluate", str(pickled), "--env", "CartPole-v1"]) == 2
    assert "data entry is not JSON" in capsys.readouterr().err and not marker.exists()


def test_a_non_dqn_sb3_model_is_one_line(tmp_path, capsys):
    model = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0, device="cpu")
    model.save(tmp_path / "ppo.zip")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "ppo.zip"), "--env", "CartPole-v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "qzoo reads DQN's MlpPolicy and CnnPolicy" in err


@pytest.mark.slow
def test_an_sb3_cnn_dqn_on_atari_reads_into_qzoo_and_a_qzoo_atari_run_exports(tmp_path, capsys):
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)  # the NoFrameskip-v4 ids, whichever test runs first
    env = VecFrameStack(make_atari_env(ATARI, n_envs=1, seed=0), n_stack=4)  # channels last, (1, 84, 84, 4)
    model = sb3.DQN("CnnPolicy", env, learning_starts=100, buffer_size=1_000, train_freq=4, seed=0, device="cpu")
    model.learn(300)
    path = tmp_path / f"dqn-{ATARI}.zip"
    model.save(path)
    agent = load_agent(path)  # the env comes from RL-Zoo's file name
    assert agent.obs_shape == (4, 84, 84) and agent.network_kind == "cnn"
    # The policy sees SB3's stack transposed channels first (VecTransposeImage): qzoo's layout.
    frames, obs = [], env.reset()
    for _ in range(100):
        frames.append(np.transpose(obs[0], (2, 0, 1)))
        obs, *_ = env.step([env.action_space.sample()])
    frames = np.stack(frames)
    np.testing.assert_allclose(agent.q_values(frames), sb3_q_values(sb3.DQN.load(path, device="cpu"), frames),
                               rtol=1e-5, atol=1e-5)
    assert main(["evaluate", str(path), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1
    run = tmp_path / "run"
    assert main(["train", "--from", str(path), "-n", "200", "--run-dir", str(run), "--no-progress",
                 "--set", "eval_freq=0", "buffer_size=1000", "torch_threads=1", "learning_starts=50"]) == 0

    out = tmp_path / "export.zip"
    assert main(["export", str(run), "--format", "sb3", "--out", str(out)]) == 0
    exported, trained = sb3.DQN.load(out, device="cpu"), load_agent(run / "model.pt")
    np.testing.assert_array_equal(exported.predict(frames, deterministic=True)[0], trained.predict(frames)[0])
    np.testing.assert_allclose(sb3_q_values(exported, frames), trained.q_values(frames), rtol=1e-5, atol=1e-5)
