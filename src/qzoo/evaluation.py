"""Evaluation: the real score of full episodes under a (nearly) greedy policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class EvalStats:
    """Returns and lengths of evaluation episodes. ``result`` = mean - std, the Hugging Face course's pass figure."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def result(self) -> float:
        return self.mean - self.std

    def to_dict(self) -> dict:
        return {
            "episodes": len(self.returns),
            "mean": self.mean,
            "std": self.std,
            "result": self.result,
            "mean_length": float(np.mean(self.lengths)),
            "returns": list(self.returns),
        }


def evaluate(
    greedy_action: Callable[[np.ndarray], int],
    env: gym.Env,
    n_episodes: int,
    seed: int,
    epsilon: float = 0.0,
) -> EvalStats:
    """Play ``n_episodes`` full episodes; episode i starts from ``reset(seed=seed + i)``.

    With probability ``epsilon`` an action is uniform at random (Mnih et al. 2015 evaluate with 0.05).
    ``env`` must be an evaluation env: unclipped rewards, no life-loss episodes.
    """
    rng = np.random.default_rng(seed)
    n_actions = int(env.action_space.n)
    returns, lengths = [], []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed + i)
        total, length, done = 0.0, 0, False
        while not done:
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                action = greedy_action(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    return EvalStats(tuple(returns), tuple(lengths))
