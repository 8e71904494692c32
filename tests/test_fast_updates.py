"""The fast update paths' one seam (qzoo.fast_updates): every config field that enters the learning step is run
through the flat-buffer MLP steps and through autograd on twin agents, or turns the flat steps off on purpose,
or stays out of the learning step. A new DQNConfig field fails here until someone puts it in one of the three."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from qzoo import mlp_step
from qzoo.config import DQNConfig
from qzoo.dqn import DQN
from qzoo.fast_updates import flat_path

# Twin agents act epsilon-greedily with epsilon 1: their actions come from the agent's generator alone, so both
# replay memories hold the same transitions whatever rounding separates their weights.
HARNESS = dict(n_timesteps=400, learning_starts=100, buffer_size=1000, batch_size=32, net_arch=[32, 32], seed=3,
               train_freq=16, gradient_steps=8, target_update_interval=100, exploration_initial_eps=1.0,
               exploration_final_eps=1.0, eval_freq=0, checkpoint_freq=0, log_interval=10**9, torch_threads=1)

# Each field here runs with a value other than its DQNConfig default through both paths.
PARITY_CASES = {
    "learning_rate": {"learning_rate": 3e-3},
    "adam_eps": {"adam_eps": 1e-3},
    "batch_size": {"batch_size": 16},
    "buffer_size": {"buffer_size": 150},  # the ring wraps: old rows are overwritten
    "learning_starts": {"learning_starts": 250},
    "gamma": {"gamma": 0.9},
    "loss": {"loss": "mse"},
    "max_grad_norm": {"max_grad_norm": 0.1},  # clipping at every step
    "double_q": {"double_q": False},
    "net_arch": {"net_arch": [16, 8, 8]},
    "train_freq": {"train_freq": 24},
    "gradient_steps": {"gradient_steps": 3},
    "gradient_steps_per_env_step": {"gradient_steps": -1, "train_freq": 5},
    "target_update_interval": {"target_update_interval": 37},
    "tau": {"tau": 0.3},
    "n_step": {"n_step": 3},  # n-step bursts redraw unusable rows: ReplayBuffer.sample_steps
    "n_step_without_double_q": {"n_step": 2, "double_q": False, "gamma": 0.9},
    "n_envs": {"n_envs": 2, "vec_env": "sync"},  # two interleaved streams in the memory
    # QR-DQN's plain MLP (FlatMLP.quantile_step): a* from the online network, then from the target's (sb3-contrib)
    "distributional": {"distributional": "qr", "n_atoms": 11},
    "distributional_qr_single_q": {"distributional": "qr", "n_atoms": 5, "double_q": False, "n_step": 3},
    # The Rainbow switches on the MLP (qzoo.head_step.FlatHead), one step at a time: each alone, then together
    "dueling": {"dueling": True},
    "noisy": {"noisy": True, "noisy_sigma0": 0.3},  # both twins draw the same noise (learn_twins seeds torch)
    "prioritized_replay": {"prioritized_replay": True, "prioritized_replay_alpha": 0.7,
                           "prioritized_replay_beta0": 0.5, "prioritized_replay_eps": 1e-3},
    "distributional_c51": {"distributional": "c51", "n_atoms": 11, "v_min": -5.0, "v_max": 20.0},
    "rainbow": {"dueling": True, "noisy": True, "distributional": "c51", "n_atoms": 11, "v_min": 0.0, "v_max": 50.0,
                "prioritized_replay": True, "n_step": 3, "loss": "mse"},  # loss: inert under C51
    "rainbow_without_double_q": {"dueling": True, "noisy": True, "prioritized_replay": True, "double_q": False,
                                 "loss": "mse", "max_grad_norm": 0.1},
    "arithmetic_settings": {"deterministic": True, "torch_threads": 1, "device": "cpu"},
}

# Each (env, overrides) turns the flat steps off: FlatMLP does not compute what autograd would with them.
EXCLUDES = {
    "manual_mlp_step": ("CartPole-v1", {"manual_mlp_step": False}),
    "optimizer": ("CartPole-v1", {"optimizer": "rmsprop"}),
    "precision": ("CartPole-v1", {"precision": "bfloat16"}),
    "network": ("BreakoutNoFrameskip-v4", {"network": "cnn", "precision": "float32"}),
}

# The env, acting, evaluation, logging and checkpoint fields: the gradient step never reads them.
OUTSIDE_THE_LEARNING_STEP = {
    "n_timesteps", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps", "frame_stack",
    "atari_protocol", "atari_crop", "env_kwargs", "eval_freq", "n_eval_episodes", "eval_epsilon", "stop_reward",
    "checkpoint_freq", "log_interval", "seed", "replay_compression",
    # Ape-X (qzoo.distributed): who collects and when the learner trains, never what one gradient step computes.
    "actors", "actor_chunk_steps", "max_chunks_in_flight", "weight_publish_seconds", "weight_publish_updates",
    "rate_band", "actor_max_restarts",
}


def test_every_config_field_is_parity_tested_or_excludes_the_fast_path_or_stays_out_of_the_learning_step():
    fields = {f.name for f in dataclasses.fields(DQNConfig)}
    groups = {"parity-tested (PARITY_CASES)": {name for case in PARITY_CASES.values() for name in case},
              "excludes the fast path (EXCLUDES)": set(EXCLUDES),
              "outside the learning step (OUTSIDE_THE_LEARNING_STEP)": OUTSIDE_THE_LEARNING_STEP}
    homes = {name: [group for group, names in groups.items() if name in names] for name in fields}
    unclassified = sorted(name for name, where in homes.items() if not where)
    assert not unclassified, f"classify these DQNConfig fields in tests/test_fast_updates.py: {unclassified}"
    twice = {name: where for name, where in homes.items() if len(where) > 1}
    assert not twice, f"fields classified more than once: {twice}"
    stale = set().union(*groups.values()) - fields
    assert not stale, f"no DQNConfig field has these names: {sorted(stale)}"


def learn_twins(**overrides) -> tuple[DQN, DQN]:
    fast = DQN("CartPole-v1", **{**HARNESS, **overrides})
    plain = copy.deepcopy(fast)
    plain.manual_mlp_step = False  # the paper's train_step through autograd
    for agent in (fast, plain):  # NoisyNets draw from torch's generator: the same numbers for both twins
        torch.manual_seed(11)
        agent.learn()
    return fast, plain


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_the_flat_mlp_steps_learn_what_autograd_learns_for_every_field_of_the_learning_step(case):
    fast, plain = learn_twins(**PARITY_CASES[case])
    assert fast.manual_mlp_step and fast._fast_updates._flat is not None  # the flat steps did run
    assert fast.num_updates == plain.num_updates > 20
    np.testing.assert_allclose(fast._pending_losses, plain._pending_losses, rtol=1e-3, atol=1e-6)
    for a, b in zip(fast.q_net.parameters(), plain.q_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    for a, b in zip(fast.target_net.parameters(), plain.target_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    fast_adam, plain_adam = fast.optimizer.state_dict()["state"], plain.optimizer.state_dict()["state"]
    assert fast_adam.keys() == plain_adam.keys() == set(range(len(list(fast.q_net.parameters()))))
    for key, state in fast_adam.items():
        assert float(state["step"]) == float(plain_adam[key]["step"]) == fast.num_updates
        torch.testing.assert_close(state["exp_avg"], plain_adam[key]["exp_avg"], rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(state["exp_avg_sq"], plain_adam[key]["exp_avg_sq"], rtol=1e-2, atol=1e-9)
    assert fast.buffer.rng.bit_generator.state == plain.buffer.rng.bit_generator.state  # the same minibatches


@pytest.mark.parametrize("switch", [{"dueling": True}, {"noisy": True}, {"prioritized_replay": True}])
def test_qr_dqn_under_another_rainbow_switch_takes_autograds_steps(switch):
    agent = DQN("CartPole-v1", **{**HARNESS, "distributional": "qr", "n_atoms": 5, **switch})
    assert not agent.manual_mlp_step  # neither FlatMLP nor FlatHead computes QR's loss on that network
    assert DQN("CartPole-v1", **{**HARNESS, **switch}).manual_mlp_step


@pytest.mark.parametrize("field", list(EXCLUDES))
def test_fields_the_flat_steps_do_not_implement_turn_them_off(field):
    env_id, overrides = EXCLUDES[field]
    agent = DQN(env_id, **{**HARNESS, **overrides, "net_arch": None})
    assert flat_path(agent.config, agent.q_net, agent.optimizer, agent.autocast_dtype) is None
    assert not agent.manual_mlp_step
    assert DQN("CartPole-v1", **HARNESS).manual_mlp_step  # the same harness without the field: eligible


# ------------------------------------------------------------------ the private torch ops FlatMLP calls


def test_the_private_torch_ops_of_the_flat_steps_exist_with_the_signatures_they_call():
    problems = mlp_step.private_op_problems()
    assert not problems, (
        f"qzoo.mlp_step.FlatMLP calls private torch ops that torch {torch.__version__} does not offer as written: "
        f"{'; '.join(problems)}. Agents now fall back to autograd (about 2.8x slower on CartPole). Adapt "
        "FlatMLP.step and mlp_step.PRIVATE_OPS to this torch, or keep the torch pin (2.13.0).")


def test_without_torch_fused_adam_the_flat_steps_are_not_eligible(monkeypatch):
    monkeypatch.delattr(torch, "_fused_adam_")
    assert mlp_step.private_op_problems() == ["torch._fused_adam_ is missing"]
    assert not DQN("CartPole-v1", **HARNESS).manual_mlp_step


@pytest.mark.parametrize("change", ["missing", "new signature"])
def test_without_the_private_relu_backward_the_agent_learns_through_autograd(change, monkeypatch):
    if change == "missing":
        monkeypatch.setattr(torch.ops.aten, "threshold_backward", object())
    else:
        changed = "aten::threshold_backward(Tensor grad_output, Tensor self, Scalar threshold, bool x) -> Tensor"
        monkeypatch.setitem(mlp_step.PRIVATE_OPS, "threshold_backward", changed)
    assert "aten::threshold_backward" in mlp_step.private_op_problems()[0]
    agent = DQN("CartPole-v1", **HARNESS)
    assert not agent.manual_mlp_step
    agent.learn()
    assert agent.num_updates > 20 and np.isfinite(agent._pending_losses).all()
    assert agent._fast_updates._flat is None  # FlatMLP never ran
