"""One seam for the fast update paths: which agents may take them, and the bursts that take them.

``DQN.train_step`` is the paper's gradient step (Mnih et al. 2015, Algorithm 1) through autograd. Three measured
speed tricks (benchmarks/README.md) compute the same numbers in fewer operations, and each is decided here, in one
function, so that the training loop stays readable and a new switch cannot silently slip past them:

* ``flat_path`` -> ``FlatMLPUpdates.steps(n)``: the plain MLP's n gradient steps of one train_freq
  crossing by ``qzoo.mlp_step.FlatMLP`` (autograd's and Adam's arithmetic without a graph, 2.8x end to end on
  CartPole), the minibatches drawn at once and the target network's Q(s', .) computed in one pass; the same for
  QR-DQN's plain MLP (``distributional: qr``), whose quantile Huber loss FlatMLP also differentiates by hand;
* ``flat_path`` -> ``FlatHeadUpdates.steps(n)``: the Rainbow switches on the MLP (dueling, noisy, C51,
  prioritised replay) by ``qzoo.head_step.FlatHead``, one minibatch at a time;
* ``target_copy``: the target network with its weights in bfloat16 between target updates, under autocast;
* ``training_memory_format``: channels-last weights and minibatches for the frame CNNs under bfloat16.

tests/test_fast_updates.py runs every config field that enters the learning step through the flat steps and
through autograd on twin agents, or checks that the field turns the flat steps off.
"""

from __future__ import annotations

import copy
from typing import Callable, Protocol

import numpy as np
import torch

from qzoo.buffer import ReplayBuffer
from qzoo.config import DQNConfig
from qzoo.head_step import FlatHead
from qzoo.losses import c51_target, td_target
from qzoo.mlp_step import FlatMLP, loss_values, private_op_problems
from qzoo.networks import FRAME_NETWORKS, QFunction
from qzoo.sumtree import beta_schedule

MLP_BURST_ROWS = 4_096  # transitions sampled at once for the plain MLP's steps (RL-Zoo CartPole: 2 bursts of 64 steps)


class Learner(Protocol):
    """What the flat steps read of an agent (``qzoo.dqn.DQN``), which this module never imports."""

    config: DQNConfig
    q_net: QFunction
    target_net: QFunction
    optimizer: torch.optim.Optimizer
    n_actions: int
    num_timesteps: int
    horizon: int

    @property
    def buffer(self) -> ReplayBuffer: ...

    def _to_device(self, array: np.ndarray) -> torch.Tensor: ...

    def _target_forward(self, next_obs: torch.Tensor) -> torch.Tensor: ...


def flat_path(config: DQNConfig, q_net: QFunction, optimizer: torch.optim.Optimizer,
              autocast_dtype: torch.dtype | None) -> str | None:
    """Which flat steps compute what autograd's ``DQN.train_step`` would, to float32 rounding: ``mlp``
    (``FlatMLPUpdates``), ``head`` (``FlatHeadUpdates``) or None (autograd).

    Both implement one optimizer (Adam in torch's form, one parameter group, no weight decay, amsgrad or
    maximize), float32, and networks on a flatten body; they call private torch ops, without which (another
    torch) the agent uses autograd. ``manual_mlp_step: false`` turns them off (the plain path, for comparison).

    * ``mlp``: ``FlatMLP``'s network (Flatten, Linear and ReLU layers: no dueling, noise or C51 atoms) with the
      unweighted mean Huber or squared loss, or QR-DQN's quantile Huber loss, and uniform replay: its bursts draw
      their minibatches at once.
    * ``head``: ``FlatHead``'s, the Rainbow switches on that network (dueling streams, noisy layers, C51 atoms,
      the Huber or squared loss without atoms) with prioritised replay or without: one step at a time, as the
      priorities of a step choose the next minibatch. QR-DQN with another switch stays with autograd.
    """
    group = optimizer.param_groups[0]
    adam = (type(optimizer) is torch.optim.Adam and len(optimizer.param_groups) == 1
            and group["weight_decay"] == 0 and not group["amsgrad"] and not group["maximize"])
    if not (config.manual_mlp_step and adam and autocast_dtype is None) or private_op_problems():
        return None
    q_head = config.distributional == "none" and config.loss in ("huber", "mse")
    if q_net.plain_mlp_layers() is not None and not config.prioritized_replay and (
            q_head or config.distributional == "qr"):
        return "mlp"
    if q_net.head_streams() is not None and (q_head or config.distributional == "c51"):
        return "head"
    return None


def flat_updates(agent: "Learner", path: str | None) -> "FlatMLPUpdates | FlatHeadUpdates":
    """The agent's flat steps for ``flat_path``'s answer (``FlatMLPUpdates`` for None: never called then)."""
    return FlatHeadUpdates(agent) if path == "head" else FlatMLPUpdates(agent)


class FlatMLPUpdates:
    """The plain MLP's gradient steps through ``FlatMLP``, in bursts of at most ``MLP_BURST_ROWS`` transitions.

    The target network only changes between env steps and uniform sampling does not depend on the weights, so
    a burst's n minibatches are drawn in one call (``ReplayBuffer.sample_steps``: the same rows as n calls of
    ``sample``) and the target network's Q(s', .) is computed in one pass over all of them; Double DQN's a* is
    still picked with each step's own weights. The weights go back into ``q_net`` and Adam's moments into the
    agent's ``torch.optim.Adam`` after each burst, so checkpoints are unchanged and either path continues the
    other. Memory stays bounded whatever gradient_steps and batch_size are.
    """

    def __init__(self, agent: Learner):
        self.agent = agent
        self._flat: tuple[FlatMLP, list[torch.nn.Linear]] | None = None  # the buffers and q_net's layers

    def steps(self, n: int) -> list[float]:
        """``n`` gradient steps; the loss of each, as ``qzoo.losses.q_loss`` reports it."""
        burst = max(1, MLP_BURST_ROWS // self.agent.config.batch_size)
        return [loss for start in range(0, n, burst) for loss in self._burst(min(burst, n - start))]

    def _burst(self, n: int) -> list[float]:
        agent, c = self.agent, self.agent.config
        size = c.batch_size
        batch = agent.buffer.sample_steps(n, size)

        def per_step(array: np.ndarray) -> torch.Tensor:  # (n * B, ...) -> (n, B, ...)
            return agent._to_device(array).view(n, size, *array.shape[1:])

        x, next_x = (per_step(a).flatten(2).float() for a in (batch.obs, batch.next_obs))
        rewards, terminated = per_step(batch.rewards), per_step(batch.terminated)
        # n-step: y = G + gamma^k (1 - terminated) Q(s_{t+k}, a*); the per-sample discount replaces gamma.
        gamma = c.gamma if batch.discounts is None else per_step(batch.discounts)
        with torch.no_grad():
            next_target = agent.target_net(next_x.flatten(0, 1)).view(n, size, -1)
        flat, linears = self._flat_mlp()
        flat.load(linears, agent.optimizer)
        if c.distributional == "qr":
            losses = flat.train_quantiles(x, per_step(batch.actions).long(),
                                          self._quantile_targets(flat, next_x, next_target, rewards, terminated, gamma))
            flat.store(linears, agent.optimizer)
            return losses.tolist()
        if c.double_q:
            def target(k: int) -> torch.Tensor:  # van Hasselt et al. 2016: a* from this step's weights
                discount = gamma if isinstance(gamma, float) else gamma[k]
                return td_target(rewards[k], terminated[k], next_target[k], discount, flat.q(next_x[k]))
        else:
            discount = gamma if isinstance(gamma, float) else gamma.flatten()
            y = td_target(rewards.flatten(), terminated.flatten(), next_target.flatten(0, 1), discount).view(n, size)
            target = y.__getitem__
        deltas = flat.train(x, per_step(batch.actions).long(), target)
        flat.store(linears, agent.optimizer)
        return loss_values(deltas, c.loss).tolist()

    def _quantile_targets(self, flat: FlatMLP, next_x: torch.Tensor, next_target: torch.Tensor,
                          rewards: torch.Tensor, terminated: torch.Tensor, gamma: float | torch.Tensor
                          ) -> Callable[[int], torch.Tensor]:
        """QR-DQN's target quantiles of step k, as ``DQN._distributional_loss`` makes them:
        T theta_j = r + gamma^k (1 - terminated) theta_j(s', a*), theta from the target network (n, B, A, N), a* the
        argmax of the mean quantile of the online network at this step's weights (Double DQN) or of the target's."""
        c = self.agent.config
        n, size = rewards.shape
        next_target = next_target.view(n, size, -1, c.n_atoms)
        rows = torch.arange(size, device=rewards.device)

        def target(k: int) -> torch.Tensor:
            discount = gamma if isinstance(gamma, float) else gamma[k]
            discounts = discount * (1.0 - terminated[k].float())
            pick = flat.q(next_x[k]).view(size, -1, c.n_atoms) if c.double_q else next_target[k]
            best = pick.mean(dim=2).argmax(dim=1)
            return rewards[k][:, None] + discounts[:, None] * next_target[k][rows, best]
        return target

    def _flat_mlp(self) -> tuple[FlatMLP, list[torch.nn.Linear]]:
        linears, c = self.agent.q_net.plain_mlp_layers(), self.agent.config
        if self._flat is None or any(a is not b for a, b in zip(self._flat[1], linears)):
            loss, quantiles = ("quantile", c.n_atoms) if c.distributional == "qr" else (c.loss, 0)
            self._flat = (FlatMLP(linears, loss, c.max_grad_norm, quantiles), linears)
        return self._flat


class FlatHeadUpdates:
    """The Rainbow head's gradient steps through ``FlatHead``, one minibatch at a time, as ``DQN.train_step``.

    Each step samples its minibatch (prioritised: with the priorities the previous step wrote), redraws the
    noise of both networks in the same order as ``train_step`` (so the same seed draws the same numbers),
    evaluates the target network as ``train_step`` does and steps the online head by hand. The weights go back
    into ``q_net`` and Adam's moments into the agent's ``torch.optim.Adam`` after the n steps of a call.
    """

    def __init__(self, agent: "Learner"):
        self.agent = agent
        self._flat: tuple[FlatHead, list[torch.Tensor]] | None = None  # the buffers and q_net's parameters

    def steps(self, n: int) -> list[float]:
        """``n`` gradient steps; the loss of each, as ``DQN.train_step`` reports it."""
        agent, c = self.agent, self.agent.config
        flat, parameters = self._flat_head()
        flat.load_tensors(parameters, agent.optimizer)
        beta = beta_schedule(c.prioritized_replay_beta0, agent.num_timesteps / max(agent.horizon, 1))
        losses = [self._step(flat, beta) for _ in range(n)]
        flat.store_tensors(parameters, agent.optimizer)
        return losses

    def _step(self, flat: FlatHead, beta: float) -> float:
        agent, c = self.agent, self.agent.config
        batch = agent.buffer.sample(c.batch_size, beta)
        obs, next_obs = agent._to_device(batch.obs), agent._to_device(batch.next_obs)
        actions = agent._to_device(batch.actions).long()
        rewards, terminated = agent._to_device(batch.rewards), agent._to_device(batch.terminated)
        gamma = c.gamma if batch.discounts is None else agent._to_device(batch.discounts)
        weights = None if batch.weights is None else agent._to_device(batch.weights)
        if c.noisy:  # fresh noise for every update, online then target, as train_step draws it
            agent.q_net.reset_noise()
            agent.target_net.reset_noise()
        flat.build()
        with torch.no_grad():
            next_target = agent._target_forward(next_obs).float()  # Q or C51 probabilities at s'
        next_online = flat.outputs(next_obs.flatten(1).float(), keep=False) if c.double_q else None
        out = flat.outputs(obs.flatten(1).float())
        if c.distributional == "c51":
            discounts = gamma * (1.0 - terminated.float())
            target = c51_target(next_target, rewards, discounts, agent.q_net.support, next_online)
        else:
            target = td_target(rewards, terminated, next_target, gamma,
                               None if next_online is None else next_online.squeeze(2))
        loss, priorities = flat.step(out, actions, target, weights)
        if weights is not None:  # prioritised replay: p_i from this step's losses, as train_step writes them
            agent.buffer.update_priorities(batch.rows, priorities.float().cpu().numpy())
        return loss.item()

    def _flat_head(self) -> tuple[FlatHead, list[torch.Tensor]]:
        agent, c = self.agent, self.agent.config
        parameters = list(agent.q_net.parameters())
        if self._flat is None or any(a is not b for a, b in zip(self._flat[1], parameters)):
            atoms, loss = (c.n_atoms, "c51") if c.distributional == "c51" else (1, c.loss)
            head = FlatHead(agent.q_net.head_streams(), parameters, agent.n_actions, atoms, loss, c.max_grad_norm)
            self._flat = (head, parameters)
        return self._flat


def target_copy(target_net: QFunction, autocast_dtype: torch.dtype | None, noisy: bool) -> QFunction:
    """The network ``DQN._target_forward`` evaluates Q_target(s', .) with: ``target_net`` itself, or under bfloat16
    a copy with its weights in bfloat16, made again after every target update (``DQN.update_target``).

    Why: autocast would cast the target's weights (1.7M for the Nature CNN) at every gradient step; it rounds
    to nearest the same way, so the values are identical (tests/test_dqn.py). NoisyNets redraw the target's
    noise at every step, in float32 parameters: no copy for them.
    """
    if autocast_dtype is None or noisy:
        return target_net
    lowp = copy.deepcopy(target_net)
    for param in lowp.parameters():  # weights only, as autocast: buffers (C51's support) stay float32
        param.data = param.data.to(autocast_dtype)
    return lowp


def training_memory_format(autocast_dtype: torch.dtype | None, network_kind: str) -> torch.memory_format:
    """Frame CNNs under bfloat16 keep weights and minibatches channels-last (NHWC), the layout oneDNN's bfloat16
    convolutions compute in: the Nature CNN's gradient step 1.2x faster here (benchmarks/README.md)."""
    if autocast_dtype is not None and network_kind in FRAME_NETWORKS:
        return torch.channels_last
    return torch.contiguous_format
