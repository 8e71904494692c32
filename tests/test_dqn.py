"""The agent: gradient step, determinism, save/load, predict."""

import copy

import numpy as np
import pytest
import torch

from qzoo.dqn import DQN, read_model_file
from qzoo.errors import QzooError

FAST = dict(n_timesteps=1500, learning_starts=500, train_freq=4, gradient_steps=1, buffer_size=5000,
            target_update_interval=100, eval_freq=0, batch_size=32, net_arch=[32, 32])


def test_a_gradient_step_moves_the_online_network_and_never_the_target():
    agent = DQN("CartPole-v1", **{**FAST, "learning_starts": 10_000})
    agent.learn(600)  # fills replay memory; no training before learning_starts
    online_before = [p.clone() for p in agent.q_net.parameters()]
    target_before = [p.clone() for p in agent.target_net.parameters()]
    agent.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(online_before, agent.q_net.parameters()))
    for before, after in zip(target_before, agent.target_net.parameters()):
        assert torch.equal(before, after) and after.grad is None


def test_target_network_is_copied_every_target_update_interval():
    agent = DQN("CartPole-v1", **{**FAST, "target_update_interval": 700})
    agent.learn(650)
    assert any(not torch.equal(a, b) for a, b in zip(agent.q_net.parameters(), agent.target_net.parameters()))
    agent.learn(50)  # env step 700: the copy
    assert all(torch.equal(a, b) for a, b in zip(agent.q_net.parameters(), agent.target_net.parameters()))


def test_same_seed_same_run_different_seed_different_run():
    runs = [DQN("CartPole-v1", **FAST, seed=seed).learn().weights_sha256() for seed in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_save_load_gives_identical_actions(tmp_path):
    agent = DQN("CartPole-v1", **FAST).learn()
    agent.save(tmp_path / "model.pt")
    loaded = DQN.load(tmp_path / "model.pt")
    obs = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.weights_sha256() == agent.weights_sha256()
    assert loaded.num_timesteps == agent.num_timesteps == 1500


def test_predict_single_and_batch():
    agent = DQN("CartPole-v1", **FAST)
    action, state = agent.predict(np.zeros(4, dtype=np.float32))
    assert isinstance(action, int) and state is None
    actions, _ = agent.predict(np.zeros((5, 4), dtype=np.float32))
    assert actions.shape == (5,)


def test_damaged_model_files_are_clear_errors(tmp_path):
    agent = DQN("CartPole-v1", **FAST)
    agent.save(tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(QzooError, match="truncated or not a qzoo model"):
        read_model_file(tmp_path / "truncated.pt")
    with pytest.raises(QzooError, match="not found"):
        read_model_file(tmp_path / "missing.pt")
    torch.save({"format": 99, "algo": "dqn", "q_net": {}}, tmp_path / "future.pt")
    with pytest.raises(QzooError, match="format 99"):
        read_model_file(tmp_path / "future.pt")


def test_atari_agent_uses_the_nature_cnn_and_compact_replay():
    agent = DQN("SpaceInvadersNoFrameskip-v4", buffer_size=1000, learning_starts=200, eval_freq=0)
    assert agent.network_kind == "cnn" and agent.stack == 4
    q = agent.q_values(np.zeros((4, 84, 84), dtype=np.uint8))
    assert q.shape == (6,)
    assert agent.replay_bytes() / 1000 < 7300


def test_device_auto_picks_cuda_only_where_there_is_one(monkeypatch):
    from qzoo.dqn import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(QzooError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_precision_auto_is_bfloat16_for_the_cnn_on_native_hardware_only(monkeypatch):
    from qzoo.dqn import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, "mlp") is None
    assert resolve_precision("float32", cpu, "cnn") is None
    assert resolve_precision("bfloat16", cpu, "mlp") is torch.bfloat16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", cpu, "cnn") is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_precision("auto", cpu, "cnn") is torch.bfloat16


# ------------------------------------------------------------------ fast path: the same numbers, fewer casts


def test_pixel_bytes_go_straight_to_bfloat16_with_the_values_of_the_float32_route():
    from qzoo.networks import scaled_input

    every_byte = torch.arange(256, dtype=torch.uint8).reshape(4, 8, 8)
    assert torch.equal(scaled_input(every_byte, 255.0), every_byte.float() / 255.0)  # no autocast: float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct = scaled_input(every_byte, 255.0)
    assert direct.dtype == torch.bfloat16
    assert torch.equal(direct, (every_byte.float() / 255.0).to(torch.bfloat16))  # what autocast's conv saw before


ATARI_FAST = dict(buffer_size=2000, learning_starts=200, train_freq=4, batch_size=8, target_update_interval=100,
                  eval_freq=0, checkpoint_freq=0, precision="bfloat16", seed=0)


def test_the_bfloat16_target_copy_equals_autocast_of_the_target_and_follows_every_target_update():
    agent = DQN("BreakoutNoFrameskip-v4", **ATARI_FAST)
    obs = torch.randint(0, 256, (4, *agent.obs_shape), dtype=torch.uint8)

    def both():
        with agent._autocast(), torch.no_grad():
            return agent.target_net(obs).float(), agent._target_forward(obs).float()

    agent.learn(250)  # learning from 200, target copies at 100 and 200
    reference, fast = both()
    assert torch.equal(reference, fast)
    agent.learn(100)  # more gradient steps and a target copy at 300: a stale copy would now differ
    reference_after, fast_after = both()
    assert not torch.equal(reference_after, reference)
    assert torch.equal(reference_after, fast_after)
    assert all(p.dtype == torch.float32 for p in agent.target_net.parameters())  # the checkpointed target stays float32


def test_a_loaded_agent_and_a_polyak_update_give_a_bfloat16_copy_of_their_own_target(tmp_path):
    """update_target makes the copy again from the new weights (tau < 1 too), and an agent loaded from a file
    evaluates the loaded target network, not the one it was built with."""
    agent = DQN("BreakoutNoFrameskip-v4", **{**ATARI_FAST, "tau": 0.5})
    obs = torch.randint(0, 256, (4, *agent.obs_shape), dtype=torch.uint8)

    def both(a):
        with a._autocast(), torch.no_grad():
            return a.target_net(obs).float(), a._target_forward(obs).float()

    agent.learn(250)  # learning from 200: the online network moved away from the target
    stale, _ = both(agent)
    agent.update_target()
    reference, fast = both(agent)
    assert not torch.equal(reference, stale) and torch.equal(reference, fast)
    agent.save(tmp_path / "model.pt", with_training_state=True)
    loaded = DQN.load(tmp_path / "model.pt")
    assert torch.equal(both(loaded)[1], fast)


def test_acting_is_float32_whatever_the_training_precision():
    agent = DQN("BreakoutNoFrameskip-v4", **ATARI_FAST)
    obs = np.random.default_rng(0).integers(0, 256, agent.obs_shape, dtype=np.uint8)
    with torch.no_grad():
        float32_q = agent.q_net(torch.from_numpy(obs)[None]).numpy()[0]
    assert np.array_equal(agent.q_values(obs), float32_q)


def test_bfloat16_frame_cnns_train_channels_last_as_the_plain_layout_does(tmp_path):
    """Channels-last (NHWC) weights and minibatches for the bfloat16 Nature CNN: the same gradient step as the
    usual layout up to bfloat16 rounding, and model files that load into either layout with the same weights."""
    agent = DQN("BreakoutNoFrameskip-v4", **ATARI_FAST)
    conv = agent.q_net.features[0]
    assert agent.memory_format == torch.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    float32 = DQN("BreakoutNoFrameskip-v4", **{**ATARI_FAST, "precision": "float32"})
    assert float32.memory_format == torch.contiguous_format
    agent.learn(200)  # fills the memory; the first gradient step comes after learning_starts
    plain = copy.deepcopy(agent)
    plain.memory_format = torch.contiguous_format
    for net in (plain.q_net, plain.target_net):
        net.to(memory_format=torch.contiguous_format)
    assert plain.q_net.features[0].weight.is_contiguous()
    losses = [(agent.train_step(), plain.train_step()) for _ in range(5)]  # the same minibatches (same generator)
    np.testing.assert_allclose(*zip(*losses), rtol=0.02)
    for a, b in zip(agent.q_net.parameters(), plain.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=0.02, atol=2e-4)
    agent.save(tmp_path / "model.pt")
    loaded = DQN.load(tmp_path / "model.pt", precision="float32")  # channels-last file into the usual layout
    assert loaded.memory_format == torch.contiguous_format and loaded.weights_sha256() == agent.weights_sha256()
