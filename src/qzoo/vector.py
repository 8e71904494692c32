"""Several copies of an env stepped together (``n_envs``): Gymnasium's vector envs, or EnvPool's Atari.

Gymnasium's autoreset is ``SAME_STEP`` here: when a copy's episode ends, the step returns that copy's first
observation of the next episode, and the true final observation in ``info["final_obs"]``, which is
what the replay memory must store as ``next_obs`` (a truncation bootstraps from it).

EnvPool (``vec_env: envpool``, ``EnvPoolAtari``) resets a copy at the step after its episode ended
(``NEXT_STEP``): that step ignores the copy's action and returns its first observation with reward 0. The
step that ended the episode already returned the true final observation, so the collector stores it as usual
and stores nothing for the copy at the reset step (``autoresets`` says which copies reset).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from qzoo.envs import ATARI_MAX_EPISODE_STEPS, atari_protocol, is_atari
from qzoo.errors import QzooError


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


class EnvPoolAtari:
    """EnvPool's C++ Atari envs (``envpool.make_gymnasium``), with the ``nature`` protocol of ``qzoo.envs``: up to 30
    no-op starts, 4 frames a step with the max of the last two, FIRE on reset where the game needs it, a 27,000-step
    limit, 84x84 grayscale frames by INTER_AREA, ``frame_stack`` frames; a training env: a lost life ends the episode
    (the game goes on) and rewards are clipped to their sign. EnvPool follows OpenAI Baselines' wrappers in
    Baselines' order (envpool docs, Atari).

    ``step`` returns Gymnasium's vector tuple with EnvPool's NEXT_STEP autoreset (module docstring; ``autoresets``)
    and, like Gymnasium's ``RecordEpisodeStatistics``, ``info["final_info"]["episode"]`` once a game is over: its
    real score (EnvPool's unclipped ``info["reward"]`` summed over every life) and length in env steps. A game is
    over at EnvPool's ``info["terminated"]`` (no life left) or at the time limit. Explicit ``reset(env_id)`` is not
    used between games: it restarts the game, lives included, where a lost life must only continue it (measured).
    """

    def __init__(self, env_id: str, n_envs: int, seed: int, frame_stack: int):
        try:
            import envpool
        except ImportError:
            raise QzooError("vec_env envpool needs the envpool package: pip install -e '.[envpool]'") from None
        self.env = envpool.make_gymnasium(
            env_id.removesuffix("NoFrameskip-v4") + "-v5", num_envs=n_envs, seed=seed, stack_num=frame_stack,
            img_height=84, img_width=84, gray_scale=True, frame_skip=4, noop_max=30, use_fire_reset=True,
            repeat_action_probability=0.0, max_episode_steps=ATARI_MAX_EPISODE_STEPS, episodic_life=True,
            reward_clip=True, full_action_space=False,
        )
        self.num_envs = n_envs
        self.single_observation_space, self.single_action_space = self.env.observation_space, self.env.action_space
        self.autoresets = np.zeros(n_envs, dtype=bool)  # copies whose last step was EnvPool's reset, not a transition
        self.ended = np.zeros(n_envs, dtype=bool)  # copies whose episode ended at the last step: they reset next
        self._returns, self._lengths = np.zeros(n_envs), np.zeros(n_envs, dtype=np.int64)

    def reset(self, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict]:
        """Every copy's first observation (EnvPool seeds its copies at construction: ``seed`` is not used)."""
        obs, _ = self.env.reset()
        self.ended[:] = False
        self._returns[:], self._lengths[:] = 0.0, 0
        return obs, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, terminated, truncated, info = self.env.step(np.asarray(actions, dtype=np.int32))
        self.autoresets = self.ended
        self.ended = terminated | truncated
        self._returns += info["reward"]
        self._lengths += ~self.autoresets
        game_over = info["terminated"].astype(bool) | truncated
        out: dict[str, Any] = {}
        if game_over.any():
            episode = {"r": self._returns.copy(), "l": self._lengths.copy()}
            out["final_info"] = {"episode": episode, "_episode": game_over}
            self._returns[game_over], self._lengths[game_over] = 0.0, 0
        return obs, rewards, terminated, truncated, out

    def close(self) -> None:
        self.env.close()


def make_envpool(env_id: str, n_envs: int, seed: int, options: Any) -> EnvPoolAtari:
    """``EnvPoolAtari`` for a training run; a clear error where EnvPool cannot give qzoo's wrappers."""
    if not (is_atari(env_id) and env_id.endswith("NoFrameskip-v4")
            and atari_protocol(env_id, options.atari_protocol) == "nature"):
        raise QzooError(f"vec_env envpool runs ALE's *NoFrameskip-v4 games with the nature protocol, not {env_id}")
    if options.atari_crop is not None or options.env_kwargs:
        raise QzooError("vec_env envpool takes neither atari_crop nor env_kwargs")
    return EnvPoolAtari(env_id, n_envs, seed, options.frame_stack)
