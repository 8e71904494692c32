"""Several env copies stepped together (n_envs): counting, storage and episodes."""

import numpy as np
import pytest

from qzoo.dqn import DQN
from qzoo.periodic import crossings

SMALL = dict(buffer_size=5000, learning_starts=200, train_freq=4, gradient_steps=1, target_update_interval=100,
             eval_freq=0, batch_size=32, net_arch=[32, 32], n_timesteps=2000)


def test_crossings_count_env_steps_whatever_the_stride():
    assert [crossings(t, 1, 4) for t in range(1, 9)] == [0, 0, 0, 1, 0, 0, 0, 1]
    assert crossings(12, 3, 4) == 1  # 9..12 passes 12
    assert crossings(10, 3, 4) == 1  # 7..10 passes 8 without landing on it
    assert crossings(12, 8, 4) == 2  # a stride longer than the interval passes it twice
    assert crossings(11, 3, 4) == 0


class Episodes:
    stop_requested = 0

    def __init__(self):
        self.returns = []

    def on_episode(self, agent, episode_return, length):
        self.returns.append((episode_return, length))

    def on_train(self, agent, metrics): ...
    def on_evaluation(self, agent, stats, improved): ...
    def on_checkpoint(self, agent): ...


@pytest.mark.parametrize("vec_env", ["sync", "async"])
def test_four_copies_count_every_env_step_and_train_as_often_as_one(vec_env):
    agent = DQN("CartPole-v1", **SMALL, n_envs=4, vec_env=vec_env, seed=3)
    recorder = Episodes()
    agent.learn(recorder=recorder)
    assert agent.num_timesteps == 2000 and len(agent.buffer) == 2000
    # One gradient step per train_freq = 4 env steps after learning_starts, as with one env.
    assert agent.num_updates == (2000 - 200) // 4
    assert len(recorder.returns) == agent.num_episodes > 4
    assert all(r == length for r, length in recorder.returns)  # CartPole pays 1 a step: return = length
    batch = agent.buffer.sample(512)
    # CartPole's pole angle moves little in one step: next_obs follows obs (never a reset state of another episode).
    assert np.abs(batch.next_obs[:, 2] - batch.obs[:, 2]).max() < 0.1


def test_same_seed_same_run_with_several_copies():
    runs = [DQN("CartPole-v1", **SMALL, n_envs=3, vec_env="sync", seed=s).learn().weights_sha256() for s in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]


def test_interleaved_streams_never_mix_their_frames():
    from collections import deque

    from qzoo.buffer import ReplayBuffer

    buffer = ReplayBuffer(400, (4, 2, 2), np.int32, stack=4, n_envs=2, seed=0)
    lengths = {0: [3, 7, 1, 20, 5, 9], 1: [10, 2, 2, 15, 4, 30]}
    streams = {}
    for i in (0, 1):  # each stream: its own frame values (stream * 100000 + counter), episodes of its own
        plan = [(ep, t) for ep, n in enumerate(lengths[i]) for t in range(n)]
        streams[i] = {"plan": plan, "pos": 0, "counter": 0, "frames": None}
    expected = {}
    action_id = 0
    while any(st["pos"] < len(st["plan"]) for st in streams.values()):
        for i, st in streams.items():  # one step of each stream in turn, as a vector env does
            if st["pos"] >= len(st["plan"]):
                continue
            ep, t = st["plan"][st["pos"]]
            if t == 0:
                st["counter"] += 1
                st["frames"] = deque([np.full((2, 2), i * 100000 + st["counter"])] * 4, maxlen=4)
            obs = np.stack(st["frames"])
            st["counter"] += 1
            st["frames"].append(np.full((2, 2), i * 100000 + st["counter"]))
            next_obs = np.stack(st["frames"])
            last = t == lengths[i][ep] - 1
            buffer.add(obs, action_id, 0.0, next_obs, last, False, env_index=i)
            expected[action_id] = (obs, next_obs)
            action_id += 1
            st["pos"] += 1
    batch = buffer.sample(2000)
    for k, a in enumerate(batch.actions):
        np.testing.assert_array_equal(batch.obs[k], expected[int(a)][0])
        np.testing.assert_array_equal(batch.next_obs[k], expected[int(a)][1])


def test_a_run_of_several_copies_saves_its_model_and_refuses_an_inexact_resume(tmp_path, capsys):
    from qzoo.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "-n", "400", "--run-dir", str(run_dir), "--no-progress", "--set",
                 "n_envs=2", "vec_env=sync", "checkpoint_freq=200", "learning_starts=100", "net_arch=[16]"]) == 0
    assert (run_dir / "checkpoints" / "latest.pt").is_file() and (run_dir / "model.pt").is_file()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "cannot resume exactly" in capsys.readouterr().err


def test_envpool_copies_store_real_transitions_and_report_real_scores():
    """vec_env envpool: EnvPool's C++ Atari envs, whose NEXT_STEP reset steps store nothing. Stored transitions chain
    frame by frame (next_obs is obs shifted by one new frame: the true final observation, never a reset one),
    rewards are clipped while each game reports its real score, and every count is in stored env steps."""
    recorder = Episodes()
    agent = DQN("SpaceInvadersNoFrameskip-v4", n_envs=2, vec_env="envpool", buffer_size=5000, learning_starts=2400,
                eval_freq=0, checkpoint_freq=0, seed=0, n_timesteps=2400)
    vector_steps, step = [], agent.env.step
    agent.env.step = lambda actions: vector_steps.append(1) or step(actions)
    agent.learn(recorder=recorder)
    rows = len(agent.buffer)
    assert agent.num_timesteps == rows == 2400
    # Each ended episode costs its copy one reset step that stores nothing (but those still to come).
    ended = int(agent.buffer.terminated[:rows].sum() + agent.buffer.truncated[:rows].sum())
    assert 2 * len(vector_steps) - rows == ended - int(agent.env.ended.sum()) > 0
    batch = agent.buffer.sample(2000)
    np.testing.assert_array_equal(batch.next_obs[:, :-1], batch.obs[:, 1:])
    assert set(np.unique(agent.buffer.rewards[:rows])) <= {0.0, 1.0} and agent.buffer.rewards[:rows].sum() > 0
    assert agent.buffer.terminated[:rows].sum() >= 3 * len(recorder.returns)  # a lost life ends a training episode
    assert recorder.returns and all(r % 5 == 0 and length > 100 for r, length in recorder.returns)
    assert any(r > 5 for r, _ in recorder.returns)  # real points (5 to 200 a hit), not the clipped 1s


def test_envpool_is_for_atari_games_with_the_nature_protocol():
    from qzoo.errors import QzooError

    with pytest.raises(QzooError, match="vec_env envpool runs ALE's"):
        DQN("CartPole-v1", **SMALL, n_envs=2, vec_env="envpool")
    with pytest.raises(QzooError, match="atari_crop"):
        DQN("BreakoutNoFrameskip-v4", n_envs=2, vec_env="envpool", atari_crop=[10, 0, 0, 0], buffer_size=1000)
