"""Several copies of an env stepped together (``n_envs``), with Gymnasium's vector envs.

Autoreset is ``SAME_STEP``: when a copy's episode ends, the step returns that copy's first
observation of the next episode, and the true final observation in ``info["final_obs"]``, which is
what the replay memory must store as ``next_obs`` (a truncation bootstraps from it).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import gymnasium as gym
import numpy as np


def make_vector_env(make_one: Callable[..., gym.Env], n_envs: int, asynchronous: bool, **kwargs: Any) -> gym.vector.VectorEnv:
    """``n_envs`` copies of ``make_one(**kwargs)``: in subprocesses (async) or in this process (sync)."""
    fns = [partial(make_one, **kwargs) for _ in range(n_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="spawn")
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def final_observations(next_obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """``next_obs`` with the rows of finished episodes replaced by their true final observations."""
    done = info.get("_final_obs")
    if done is None or not done.any():
        return next_obs
    true_next = next_obs.copy()
    for i in np.flatnonzero(done):
        true_next[i] = info["final_obs"][i]
    return true_next


def finished_episodes(info: dict[str, Any]) -> list[tuple[int, float, int]]:
    """(copy index, real return, length) of each game that ended at this step."""
    final = info.get("final_info")
    if not final or "episode" not in final:
        return []
    stats, mask = final["episode"], final["_episode"]
    return [(int(i), float(stats["r"][i]), int(stats["l"][i])) for i in np.flatnonzero(mask)]
