"""Evaluation: the real score of full episodes under a (nearly) greedy policy.

``play_episodes`` is the one episode loop of ``qzoo evaluate``, ``qzoo record`` and ``qzoo enjoy``: the same
seeds, the same epsilon-greedy draws, a hook for what each command shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

# An evaluation episode ends at the env's own time limit, else after this many env steps (treated as a
# truncation, like a time limit): an env without a limit (``--env-kwargs max_episode_steps=-1``) or a policy stuck
# in a loop must not make evaluation spin forever. Atari envs have their own: 27,000 env steps = 108,000 frames
# (Machado et al. 2018; ``envs.ATARI_MAX_EPISODE_STEPS``). See docs/departures.md, Evaluation.
DEFAULT_MAX_EPISODE_STEPS = 100_000


class EvaluationStopped(Exception):
    """``should_stop`` said so during an evaluation (SIGINT / SIGTERM in a training run): the evaluation is dropped."""


def time_limit(env: gym.Env) -> int | None:
    """The env's own episode step limit (its innermost positive ``TimeLimit``), or None when it has none."""
    limit, layer = None, env
    while layer is not None:
        if isinstance(layer, gym.wrappers.TimeLimit) and (layer._max_episode_steps or 0) > 0:
            limit = layer._max_episode_steps
        layer = getattr(layer, "env", None)
    return limit


def episode_step_cap(env: gym.Env) -> int:
    """Where an evaluation episode ends at the latest: the env's time limit, else ``DEFAULT_MAX_EPISODE_STEPS``."""
    return time_limit(env) or DEFAULT_MAX_EPISODE_STEPS


@dataclass(frozen=True)
class EvalStats:
    """Returns and lengths of evaluation episodes. ``result`` = mean - std, the Hugging Face course's pass figure."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    capped: bool = False  # the last episode was cut by a step cap (record, enjoy): its return is partial

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


@dataclass(frozen=True)
class StepEvent:
    """What ``play_episodes`` hands its hook: once after each reset, then after every env step.

    ``step`` counts this episode's env steps (0: the first observation, before any action), ``total_steps``
    those of all episodes so far. ``done``: this episode gets no more steps (terminated, truncated, or cut
    by ``max_steps``); ``capped``: it was cut by ``max_steps``. ``env`` is the env being played, so a hook
    can ``env.render()`` the current state.
    """

    env: gym.Env
    episode: int
    step: int
    total_steps: int
    episode_return: float
    done: bool
    capped: bool = False


StepHook = Callable[[StepEvent], None]  # what a command shows of the episodes it plays


def play_episodes(
    greedy_action: Callable[[np.ndarray], int],
    env: gym.Env,
    n_episodes: int,
    seed: int,
    epsilon: float = 0.0,
    on_step: StepHook | None = None,
    max_steps: int | None = None,
    max_episode_steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvalStats:
    """The one episode loop of ``evaluate``, ``record`` and ``enjoy``: episode i starts from ``reset(seed=seed + i)``.

    Each step is epsilon-greedy: with probability ``epsilon`` a uniform random action from a generator seeded
    with ``seed``, which is drawn from only when epsilon > 0 (so a greedy run draws nothing). Mnih et al. 2015
    evaluate with epsilon 0.05; the commands pass the run's ``eval_epsilon`` unless ``--epsilon`` is given.
    ``on_step`` sees every observation, the first one after each reset included (see ``StepEvent``).

    ``max_steps`` caps env steps over all episodes. An episode cut by the cap is kept in ``returns`` and
    ``lengths`` with what it earned so far and ``EvalStats.capped`` is set; no episode starts once the cap is
    reached, so fewer than ``n_episodes`` may be reported. ``env`` must be an evaluation env: unclipped
    rewards, no life-loss episodes.

    ``max_episode_steps`` ends each episode after that many env steps, as a time limit truncates it (a full
    episode, not ``capped``). ``should_stop`` is asked after every env step; True raises ``EvaluationStopped``
    (a training run's SIGINT / SIGTERM stops an evaluation within one env step).
    """
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    rng = np.random.default_rng(seed)
    n_actions = int(env.action_space.n)
    returns, lengths = [], []
    total_steps, capped = 0, False
    for i in range(n_episodes):
        if max_steps is not None and total_steps >= max_steps:
            break
        obs, _ = env.reset(seed=seed + i)
        total, length, done = 0.0, 0, False
        if on_step is not None:
            on_step(StepEvent(env, i, 0, total_steps, 0.0, False))
        while not done:
            # The draw order (rng.random, then rng.integers) is the one evaluations have always used: same seed,
            # same numbers.
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                action = greedy_action(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            total_steps += 1
            if should_stop is not None and should_stop():
                raise EvaluationStopped
            done = terminated or truncated or (max_episode_steps is not None and length >= max_episode_steps)
            capped = not done and max_steps is not None and total_steps >= max_steps
            if on_step is not None:
                on_step(StepEvent(env, i, length, total_steps, total, done or capped, capped))
            if capped:
                break  # the for loop's cap check starts no further episode
        returns.append(total)
        lengths.append(length)
    return EvalStats(tuple(returns), tuple(lengths), capped)


def evaluate(
    greedy_action: Callable[[np.ndarray], int],
    env: gym.Env,
    n_episodes: int,
    seed: int,
    epsilon: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
    on_step: StepHook | None = None,
) -> EvalStats:
    """Play ``n_episodes`` full episodes (``play_episodes``), each ending at the latest at
    ``episode_step_cap(env)``: the real score. ``on_step`` sees them as ``play_episodes``' hook does (``qzoo
    evaluate``'s progress lines)."""
    return play_episodes(greedy_action, env, n_episodes, seed, epsilon, on_step=on_step,
                         max_episode_steps=episode_step_cap(env), should_stop=should_stop)
