"""The DQN agent: Mnih et al. (2015), Algorithm 1, with Double DQN (van Hasselt et al. 2016) and the Rainbow
switches (Hessel et al. 2018: dueling, noisy, distributional c51 / qr, n_step, prioritized_replay) as parameters.

``DQN.learn`` is the whole training loop and reads like the paper's algorithm:

    for each env step t:
        with probability epsilon_t pick a random action, else argmax_a Q(s, a)       (epsilon-greedy)
        step the env, store (s, a, r, s', terminated, truncated) in replay memory D
        every train_freq steps after learning_starts: sample minibatches from D and
            take gradient steps on loss(Q(s, a), y), y = r + gamma * (1 - terminated) * Q_target(s', a*)
        every target_update_interval steps: Q_target <- Q                                 (fixed Q-targets)

The switches change a few lines each (docs/rainbow.md): the network's head (``build_q_network``), epsilon
(0 with NoisyNets, whose noise is redrawn before every action and every update), the minibatch (n-step
returns, prioritised rows and importance weights, from ``ReplayBuffer``) and the loss in ``train_step``.
Everything counts env steps (agent steps, after frame skip). The maths lives in ``qzoo.losses``, the measured
fast paths of the update behind one seam in ``qzoo.fast_updates``; the run folder (CSV, TensorBoard,
checkpoints) is the caller's ``Recorder``.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qzoo import config as cfg
from qzoo.agent import Evaluations, Recorder, check_observation, predict_actions, resolve_config
from qzoo.buffer import ReplayBuffer, replay_bytes
from qzoo.envs import EnvOptions, make_env
from qzoo.errors import QzooError, TrainingDiverged
from qzoo.evaluation import EvalStats, StepHook
from qzoo.fast_updates import flat_path, flat_updates, target_copy, training_memory_format
from qzoo.files import atomic_write
from qzoo.losses import c51_loss, c51_target, q_loss, q_loss_per_sample, quantile_huber_loss, soft_update, td_target
from qzoo.networks import FRAME_NETWORKS, QFunction, build_q_network, choose_network, weights_sha256
from qzoo.periodic import PeriodicWork, crossings
from qzoo.schedules import linear_schedule
from qzoo.sumtree import beta_schedule
from qzoo.threads import resolve_torch_threads
from qzoo.vector import final_observations, finished_episodes, make_envpool, make_vector_env

MODEL_FORMAT = 1
ALGO = "dqn"


def resolve_precision(requested: str, device: torch.device, network_kind: str) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32.

    ``auto`` picks bfloat16 for the CNN where it is native (measured here with AVX512-BF16: the Atari
    gradient step about 2x faster); the small MLPs of classic control gain nothing from it.
    """
    if requested == "float32" or (requested == "auto" and network_kind not in FRAME_NETWORKS):
        return None
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if requested == "bfloat16" or native:
        return torch.bfloat16
    return None


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> cuda when a GPU is visible, else cpu; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise QzooError("device cuda was asked for but no CUDA GPU is visible; use --set device=cpu")
    return torch.device(requested)


class DQN:
    """A Deep Q-Network agent with ``learn``, ``predict``, ``save`` and ``load``.

    >>> agent = DQN("CartPole-v1", n_timesteps=50_000, seed=1)   # preset + overrides
    >>> agent.learn()
    >>> action, _ = agent.predict(obs)
    """

    algo = ALGO
    file_suffix = ".pt"

    def __init__(self, env_id: str, config: cfg.DQNConfig | None = None, **hyperparameters: Any):
        config = resolve_config(env_id, config, hyperparameters, ALGO, "DQN()")
        config.check_combination()
        self.env_id = env_id
        self.config = config
        self.device = resolve_device(config.device)
        # --deterministic: bit-exact CPU kernels (the config checks the device and a fixed thread count).
        torch.use_deterministic_algorithms(config.deterministic and self.device.type == "cpu")
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)

        # An Ape-X learner (actors > 0) steps no env: its actors step the n_envs copies (qzoo.apex.Actor). Its one
        # env gives the spaces and the checkpoint's env.pkl, so a distributed run with n_envs > 1 still resumes.
        copies = config.n_envs if config.actors == 0 else 1
        if copies > 1 and config.vec_env == "envpool":
            self.env = make_envpool(env_id, copies, config.seed, self._env_options())
            space, actions = self.env.single_observation_space, self.env.single_action_space
        elif copies > 1:
            self.env = make_vector_env(make_env, copies, config.vec_env == "async", env_id=env_id,
                                       options=self._env_options(), training=True)
            space, actions = self.env.single_observation_space, self.env.single_action_space
        else:
            self.env = self.make_env(training=True)
            space, actions = self.env.observation_space, self.env.action_space
        self.obs_shape, self.obs_dtype = tuple(space.shape), space.dtype
        self.n_actions = int(actions.n)
        self.network_kind = choose_network(self.obs_shape, self.obs_dtype, config.network)
        # torch_threads 0: one thread for small networks, the free cores for frame CNNs (qzoo.threads, measured).
        torch.set_num_threads(resolve_torch_threads(config.torch_threads, self.network_kind in FRAME_NETWORKS))
        self.q_net = build_q_network(
            self.obs_shape, self.obs_dtype, self.n_actions, self.network_kind, config.net_arch,
            dueling=config.dueling, noisy=config.noisy, distribution=config.distributional,
            n_atoms=config.n_atoms if config.distributional != "none" else 1, v_min=config.v_min, v_max=config.v_max,
            sigma0=config.noisy_sigma0,
        )
        self.autocast_dtype = resolve_precision(config.precision, self.device, self.network_kind)
        self.memory_format = training_memory_format(self.autocast_dtype, self.network_kind)  # NHWC for bfloat16 CNNs
        self.q_net.to(self.device, memory_format=self.memory_format)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.optimizer = self._make_optimizer()
        self._target_copy: QFunction | None = None  # what _target_forward evaluates; made again by update_target
        # The MLP's gradient steps by hand, plain or under the Rainbow head, where they compute what train_step does.
        path = flat_path(config, self.q_net, self.optimizer, self.autocast_dtype)
        self.manual_mlp_step = path is not None
        self._fast_updates = flat_updates(self, path)
        self._buffer: ReplayBuffer | None = None  # allocated at the first learn(): predict-only agents need none

        self.num_timesteps = 0
        self.num_episodes = 0
        self.num_updates = 0
        self.horizon = config.n_timesteps  # the env step where the current learn() ends: epsilon decays over it
        self._pending_losses: list[float] = []  # losses since the last train.csv row
        self._obs: np.ndarray | None = None
        self.evaluations = Evaluations(self)

    # ------------------------------------------------------------------------------ construction

    def _env_options(self) -> EnvOptions:
        c = self.config
        return EnvOptions(c.frame_stack, c.atari_protocol, c.atari_crop, c.env_kwargs)

    def make_env(self, training: bool, render_mode: str | None = None):
        """This agent's env: for training (clipped rewards, life-loss episodes on Atari) or evaluation."""
        return make_env(self.env_id, self._env_options(), training=training, render_mode=render_mode)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.q_net.parameters()
        if self.config.optimizer == "rmsprop":
            # Mnih et al. (2015), Extended Data Table 1: squared gradient momentum 0.95, min squared gradient 0.01.
            return torch.optim.RMSprop(params, lr=self.config.learning_rate, alpha=0.95, eps=0.01, centered=True)
        # One fused kernel for the whole update instead of a loop over tensors (torch >= 2.4, CPU and CUDA).
        return torch.optim.Adam(params, lr=self.config.learning_rate, eps=self.config.adam_eps, fused=True)

    @property
    def stack(self) -> int:
        """Frames per observation the replay memory can share between transitions (1: none)."""
        return self.obs_shape[0] if self.network_kind in FRAME_NETWORKS and len(self.obs_shape) == 3 else 1

    def replay_bytes(self) -> int:
        """The replay memory's size, before allocating it (an estimate with LZ4 compression)."""
        frame_shape = self.obs_shape[1:] if self.stack > 1 else self.obs_shape
        return replay_bytes(self.config.buffer_size, frame_shape, self.obs_dtype, self.stack,
                            compress=self.config.replay_compression == "lz4", n_step=self.config.n_step,
                            prioritized=self.config.prioritized_replay)

    memory_bytes = replay_bytes  # what the run allocates beyond the networks

    @property
    def exact_resume(self) -> bool:
        """Env copies in other processes (n_envs > 1) keep state a checkpoint cannot hold. An Ape-X learner holds
        none (its actors' envs start afresh on resume, their replay streams closed as truncated): it resumes."""
        return self.config.n_envs == 1 or self.config.actors > 0

    @property
    def variant(self) -> str:
        """The switches that are on, by name: ``dqn``, ``rainbow`` (all of them) or e.g. ``dqn+dueling+n_step=3``.

        Model files say ``algo: dqn`` whatever the switches (one agent class loads them all); this names the variant
        for ``qzoo info`` and run.json.
        """
        c = self.config
        switches = (("dueling", c.dueling), ("noisy", c.noisy), ("prioritized", c.prioritized_replay))
        on = [name for name, active in switches if active]
        on += [c.distributional] if c.distributional != "none" else []
        on += [f"n_step={c.n_step}"] if c.n_step > 1 else []
        if c.double_q and len(on) == 5:
            return "rainbow"
        return "+".join([ALGO, *on])

    def describe(self) -> dict[str, Any]:
        replay = self.replay_bytes()
        return {"variant": self.variant, "network": self.network_kind, "obs_shape": list(self.obs_shape),
                "n_actions": self.n_actions, "replay_bytes": replay,
                "replay_bytes_per_transition": replay / self.config.buffer_size}

    @property
    def buffer(self) -> ReplayBuffer:
        if self._buffer is None:
            c = self.config
            self._buffer = ReplayBuffer(
                # One stream per env copy; with Ape-X actors (qzoo.distributed), one per actor lane.
                c.buffer_size, self.obs_shape, self.obs_dtype, self.stack, c.n_envs * max(c.actors, 1),
                seed=c.seed,
                compress=c.replay_compression == "lz4", n_step=c.n_step, gamma=c.gamma,
                prioritized=c.prioritized_replay, alpha=c.prioritized_replay_alpha,
                priority_eps=c.prioritized_replay_eps,
            )
        return self._buffer

    # ------------------------------------------------------------------------------------ acting

    def exploration_rate(self, horizon: int | None = None) -> float:
        c = self.config
        if c.noisy:
            return 0.0  # NoisyNets explore by their noise alone (Fortunato et al. 2018, section 3.1)
        progress = self.num_timesteps / max(horizon or c.n_timesteps, 1)
        return linear_schedule(c.exploration_initial_eps, c.exploration_final_eps, c.exploration_fraction, progress)

    def _autocast(self):
        """bfloat16 autocast when the precision asks for it; float32 otherwise."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                              enabled=self.autocast_dtype is not None)

    def _q(self, net: QFunction, obs: torch.Tensor) -> torch.Tensor:
        """Q(s, .) (B, A) of either network, whatever its head (C51's mean, QR's mean quantile)."""
        return net.q_values(obs)

    @torch.inference_mode()
    def q_values(self, obs: np.ndarray, noise: bool = False) -> np.ndarray:
        """Q(s, .) for one observation (A,) or a batch (B, A).

        NoisyNets: the mean weights unless ``noise`` (training's acting); evaluation and ``predict`` are greedy
        in the mean network, as in Kaixhin/Rainbow (Fortunato et al. 2018 evaluate with noise: docs/departures.md).
        Always float32, whatever ``precision``: for one observation autocast's casts of the weights cost more
        than bfloat16 saves (Nature CNN, one frame stack: 0.47 ms float32, 0.82 ms bfloat16; benchmarks/README.md).
        """
        single = obs.shape == self.obs_shape
        batch = torch.as_tensor(obs[None] if single else obs, device=self.device)
        with contextlib.nullcontext() if noise else self.q_net.mean_weights():
            q = self._q(self.q_net, batch).float().cpu().numpy()
        return q[0] if single else q

    def greedy_action(self, obs: np.ndarray) -> int:
        return int(self.q_values(obs).argmax())

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[Any, None]:
        """SB3-style: (action or actions, None). Non-deterministic uses the final exploration epsilon."""
        greedy = self.q_values(check_observation(obs, self.obs_shape)).argmax(axis=-1)
        return predict_actions(greedy, deterministic, self.config.exploration_final_eps, self.n_actions, self.rng)

    def _act(self, obs: np.ndarray, epsilon: float) -> int:
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.n_actions))  # no forward pass needed
        if self.config.noisy:  # a new noise sample for every action (Fortunato et al. 2018, Algorithm 1)
            self.q_net.reset_noise()
            return int(self.q_values(obs, noise=True).argmax())
        return self.greedy_action(obs)

    def _act_batch(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        """Epsilon-greedy for each env copy; one forward pass for the copies that act greedily."""
        explore = self.rng.random(len(obs)) < epsilon
        actions = self.rng.integers(self.n_actions, size=len(obs))
        if not explore.all():
            if self.config.noisy:  # one noise sample per vector step, as _act draws one per action
                self.q_net.reset_noise()
            actions[~explore] = self.q_values(obs[~explore], noise=self.config.noisy).argmax(axis=1)
        return actions

    def _collect(self, epsilon: float, recorder: Recorder | None) -> int:
        """Act in the env, store the transition(s) in replay memory; returns the env steps taken."""
        if self.config.n_envs > 1:
            return self._collect_vector(epsilon, recorder)
        action = self._act(self._obs, epsilon)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.buffer.add(self._obs, action, float(reward), next_obs, terminated, truncated)
        self._obs = next_obs
        self.num_timesteps += 1
        if terminated or truncated:
            self._obs, _ = self.env.reset()
        if "episode" in info:  # a real game ended (not only a life): its unclipped score
            self._end_episode(recorder, float(info["episode"]["r"]), int(info["episode"]["l"]))
        return 1

    def _collect_vector(self, epsilon: float, recorder: Recorder | None) -> int:
        self._obs, transitions, games = self.vector_step(self._obs, epsilon)
        for i, transition in transitions:
            self.buffer.add(*transition, env_index=i)
        self.num_timesteps += len(transitions)
        for _, episode_return, length in games:
            self._end_episode(recorder, episode_return, length)
        return len(transitions)

    def vector_step(self, obs: np.ndarray, epsilon: float) -> tuple[np.ndarray, list[tuple[int, tuple]], list]:
        """One epsilon-greedy step of the env copies from ``obs``: the next observations, (copy, ``ReplayBuffer.add``'s
        arguments) of each transition, and ``finished_episodes``' games. Also an Ape-X actor's step (``apex.Actor``)."""
        actions = self._act_batch(obs, epsilon)
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        true_next = final_observations(next_obs, info)  # the copies that reset show their final obs here
        # EnvPool's NEXT_STEP autoreset: a copy whose episode ended last step only reset now (no transition).
        resets = getattr(self.env, "autoresets", None)
        transitions = [(i, (obs[i], int(actions[i]), float(rewards[i]), true_next[i], bool(terminated[i]),
                            bool(truncated[i]))) for i in range(len(actions)) if resets is None or not resets[i]]
        return next_obs, transitions, finished_episodes(info)

    def _end_episode(self, recorder: Recorder | None, episode_return: float, length: int) -> None:
        self.num_episodes += 1
        if recorder:
            recorder.on_episode(self, episode_return, length)

    # ---------------------------------------------------------------------------------- learning

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A batch array on the training device. On a GPU: from pinned memory, copied asynchronously,
        so the copy overlaps the work queued before it; on the CPU: the numpy memory itself, no copy."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def train_step(self) -> float:
        """One gradient step of Algorithm 1 (Mnih et al. 2015) through autograd, on a minibatch (uniform or
        prioritised, 1- or n-step): y = r + gamma * (1 - terminated) * Q_target(s', a*), a gradient step on
        loss(Q(s, a), y) with the gradient norm clipped; returns the loss. ``train_steps`` takes n of them."""
        c = self.config
        beta = beta_schedule(c.prioritized_replay_beta0, self.num_timesteps / max(self.horizon, 1))
        batch = self.buffer.sample(c.batch_size, beta)
        obs, next_obs = (self._to_device(frames).contiguous(memory_format=self.memory_format)
                         for frames in (batch.obs, batch.next_obs))
        actions = self._to_device(batch.actions).long()
        rewards, terminated = self._to_device(batch.rewards), self._to_device(batch.terminated)
        # n-step: y = G + gamma^k (1 - terminated) Q(s_{t+k}, a*); the per-sample discount replaces gamma.
        gamma = c.gamma if batch.discounts is None else self._to_device(batch.discounts)
        weights = None if batch.weights is None else self._to_device(batch.weights)
        if c.noisy:  # fresh noise for every update, online and target (Fortunato et al. 2018, Algorithm 1)
            self.q_net.reset_noise()
            self.target_net.reset_noise()

        # NoisyNets: the online network's passes over s' and s share one noise sample, so its noisy weights are
        # built once for both (networks.NoisyLinear).
        with self._autocast(), self.q_net.shared_noisy_weights():
            with torch.no_grad():
                next_target = self._target_forward(next_obs).float()  # Q, C51 probabilities or quantiles at s'
                # Double DQN: the online network picks a* at s', without a graph. Measured here, one
                # forward pass over cat(s, s') costs more in the backward pass than it saves
                # (benchmarks/README.md, levers).
                next_out_online = self._head(next_obs) if c.double_q else None
            out_obs = self._head(obs)
        if c.distributional == "none":
            target = td_target(rewards, terminated, next_target, gamma, next_out_online)
            q_taken = out_obs.gather(1, actions.unsqueeze(1)).squeeze(1)
            if weights is None:
                loss, priorities = q_loss(q_taken, target, c.loss), None
            else:  # Schaul et al. 2016: importance-weighted loss, priorities from |delta|
                loss, priorities = q_loss_per_sample(q_taken, target, c.loss, weights).loss, (target - q_taken).detach()
        else:  # C51 / QR: the per-sample losses are the priorities (Hessel et al. 2018, section 3)
            loss, priorities = self._distributional_loss(out_obs, next_out_online, next_target, actions, rewards,
                                                         terminated, gamma, weights)
        if priorities is not None:  # the memory keeps p_i = (|x_i| + eps)^alpha (Schaul et al. 2016)
            self.buffer.update_priorities(batch.rows, priorities.float().cpu().numpy())

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), c.max_grad_norm)
        self.optimizer.step()
        return self._finish_update(loss.item())

    def _finish_update(self, value: float) -> float:
        self.num_updates += 1
        if not np.isfinite(value):
            raise TrainingDiverged(f"the loss became {value} at env step {self.num_timesteps}; lower learning_rate")
        return value

    def train_steps(self, n: int) -> list[float]:
        """``n`` gradient steps, as one train_freq crossing asks for; their losses. The plain MLP takes them through
        the flat-buffer steps where those compute what ``train_step`` does (``qzoo.fast_updates``)."""
        if self.manual_mlp_step:
            return [self._finish_update(loss) for loss in self._fast_updates.steps(n)]
        return [self.train_step() for _ in range(n)]

    def _target_forward(self, next_obs: torch.Tensor) -> torch.Tensor:
        """The target network's output at s', under the caller's autocast; with bfloat16, from a bfloat16 copy of
        the target network made once per target update (``qzoo.fast_updates.target_copy``): the same values."""
        if self._target_copy is None:  # after update_target, or in a new (or loaded) agent
            self._target_copy = target_copy(self.target_net, self.autocast_dtype, self.config.noisy)
        return self._target_copy(next_obs)

    def update_target(self) -> None:
        """Q_target <- Q (Mnih et al. 2015: every C env steps), or Polyak averaging with ``tau`` < 1; the bfloat16
        copy of the target that ``_target_forward`` reads is made again from the new weights."""
        soft_update(self.target_net, self.q_net, self.config.tau)
        self._target_copy = None

    def _head(self, obs: torch.Tensor) -> torch.Tensor:
        """The online network's output for the loss: Q (B, A), C51 logits or QR quantiles (B, A, K), in float32."""
        out = self.q_net.head_outputs(obs).float()  # C51: logits, the loss takes a log-softmax of them
        return out.squeeze(2) if self.config.distributional == "none" else out

    def _distributional_loss(self, out_obs, next_out_online, next_target, actions, rewards, terminated, gamma, weights):
        """C51 (Bellemare et al. 2017) or QR-DQN (Dabney et al. 2018) loss; returns (loss, per-sample priorities).

        a* = argmax_a of the mean Q of the online network at s' (Double DQN, as Rainbow) or of the target network.
        The priorities are the per-sample losses (None without importance ``weights``): the KL / cross-entropy for
        C51 (Hessel et al. 2018, section 3), the quantile Huber loss for QR (Dabney et al. do not prioritise; our
        choice, docs/departures.md). C51's log-probabilities are a log-softmax of the taken actions' logits:
        numerically stable, the same value as the log of the softmax.
        """
        c, rows = self.config, torch.arange(len(actions), device=self.device)
        discounts = gamma * (1.0 - terminated.float())  # gamma^k, or 0 after a termination
        if c.distributional == "c51":
            target_probs = c51_target(next_target, rewards, discounts, self.q_net.support, next_out_online)
            log_probs = torch.log_softmax(out_obs[rows, actions], dim=1)
            result = c51_loss(log_probs, target_probs, weights)
        else:
            next_q = (next_target if next_out_online is None else next_out_online).mean(dim=2)
            best = next_q.argmax(dim=1)
            target_quantiles = rewards[:, None] + discounts[:, None] * next_target[rows, best]
            result = quantile_huber_loss(out_obs[rows, actions], target_quantiles, 1.0, weights)
        return result.loss, (result.per_sample if weights is not None else None)

    def learn(self, total_timesteps: int | None = None, recorder: Recorder | None = None) -> "DQN":
        """Train for ``total_timesteps`` env steps (default: the config's ``n_timesteps``).

        Calling ``learn`` again continues the same run: counters, replay memory and env state carry on.
        """
        c = self.config
        horizon = self.num_timesteps + (c.n_timesteps if total_timesteps is None else total_timesteps)
        self.horizon = horizon
        gradient_steps = c.train_freq if c.gradient_steps == -1 else c.gradient_steps
        if self._obs is None:
            seeds = [c.seed + i for i in range(c.n_envs)] if c.n_envs > 1 else c.seed
            self._obs, _ = self.env.reset(seed=seeds)
        periodic = PeriodicWork(self, recorder, self._pending_losses)
        losses = self._pending_losses

        while self.num_timesteps < horizon:
            epsilon = self.exploration_rate(horizon)
            steps = self._collect(epsilon, recorder)  # act epsilon-greedily, store (s, a, r, s') in D
            t = self.num_timesteps
            if t > c.learning_starts:
                # gradient steps on minibatches sampled from D
                losses.extend(self.train_steps(crossings(t, steps, c.train_freq) * gradient_steps))
            if crossings(t, steps, c.target_update_interval):
                self.update_target()  # Q_target <- Q every C env steps
            if periodic.after_env_step(epsilon, steps):
                break
        return self

    def evaluate(self, n_episodes: int, seed: int | None = None, epsilon: float | None = None,
                 on_step: StepHook | None = None) -> EvalStats:
        """Full episodes on an evaluation env (real scores); seeds differ from training's."""
        return self.evaluations.run(n_episodes, seed, epsilon, on_step)

    def close(self) -> None:
        """Close the training and evaluation envs (async env copies are subprocesses)."""
        self.env.close()
        self.evaluations.close()

    # ------------------------------------------------------------------------------ persistence

    def weights_sha256(self) -> str:
        return weights_sha256(self.q_net)

    def initialise_from(self, other: "DQN") -> None:
        """Start from another agent's weights (``qzoo train --from``): online and target networks."""
        try:
            self.q_net.load_state_dict(other.q_net.state_dict())
        except RuntimeError:
            raise QzooError("--from: the source's network does not fit this config (net_arch, network)") from None
        self.target_net.load_state_dict(self.q_net.state_dict())

    def state(self, with_training_state: bool = False) -> dict[str, Any]:
        """What ``save`` writes: everything needed to act, and optionally to keep training."""
        state = {
            "format": MODEL_FORMAT,
            "algo": ALGO,
            "env_id": self.env_id,
            "config": self.config.to_dict(),
            "num_timesteps": self.num_timesteps,
            "num_episodes": self.num_episodes,
            "num_updates": self.num_updates,
            "q_net": self.q_net.state_dict(),
        }
        if with_training_state:
            state["target_net"] = self.target_net.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def save(self, path: str | Path, with_training_state: bool = False) -> None:
        """Write the model atomically: a crash mid-write leaves any previous file intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state(with_training_state)
        atomic_write(path, lambda f: torch.save(state, f))

    def resume_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What exact resume needs beyond ``save``'s file: (JSON-ready numbers, named arrays).

        The schedule position (``horizon``), the losses not yet logged, the exploration generator,
        the current observation and the whole replay memory (``ReplayBuffer.state``).
        """
        numbers: dict[str, Any] = {"horizon": self.horizon, "pending_losses": list(self._pending_losses),
                                   "best_mean_return": self.evaluations.best_mean_return, "rng": self.rng.bit_generator.state}
        arrays = {} if self._obs is None else {"obs": np.asarray(self._obs)}
        if self._buffer is not None:
            numbers["replay"], replay_arrays = self._buffer.state()
            arrays.update({f"replay.{name}": array for name, array in replay_arrays.items()})
        return numbers, arrays

    def restore_resume_state(self, numbers: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The inverse of ``resume_state``, on an agent loaded from the same checkpoint's model file."""
        self.horizon = int(numbers["horizon"])
        self._pending_losses = [float(x) for x in numbers["pending_losses"]]
        self.evaluations.best_mean_return = float(numbers["best_mean_return"])
        self.rng.bit_generator.state = numbers["rng"]
        self._obs = np.array(arrays["obs"]) if "obs" in arrays else None
        if "replay" in numbers:
            replay = {name.removeprefix("replay."): a for name, a in arrays.items() if name.startswith("replay.")}
            self.buffer.restore(numbers["replay"], replay)

    @classmethod
    def load(cls, path: str | Path, **config_overrides: Any) -> "DQN":
        """Rebuild an agent from ``save``'s file; a missing or damaged file is a QzooError."""
        state = read_model_file(path)
        config = cfg.build({**state["config"], **config_overrides}, str(path))
        agent = cls(state["env_id"], config)
        agent.q_net.load_state_dict(state["q_net"])
        agent.target_net.load_state_dict(state.get("target_net", state["q_net"]))
        if "optimizer" in state:
            agent.optimizer.load_state_dict(state["optimizer"])
        agent.num_timesteps = int(state["num_timesteps"])
        agent.num_episodes = int(state["num_episodes"])
        agent.num_updates = int(state["num_updates"])
        return agent


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Load a model file safely (``weights_only``: no pickled code runs); check its format."""
    path = Path(path)
    if not path.is_file():
        raise QzooError(f"model file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise QzooError(f"cannot read model file {path}: it is truncated or not a qzoo model ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("algo") != ALGO or "q_net" not in state:
        raise QzooError(f"{path} is not a qzoo DQN model file")
    if state.get("format") != MODEL_FORMAT:
        raise QzooError(f"{path} has model format {state.get('format')}; this qzoo reads format {MODEL_FORMAT}")
    return state
