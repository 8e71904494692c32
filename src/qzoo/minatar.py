"""MinAtar (Young & Tian 2019): five Atari games on a 10x10 grid, an env family of its own.

The ``minatar`` package (PyPI 1.0.15) ships Gymnasium envs, ``MinAtar/<Game>-v0`` (all 6 actions) and
``MinAtar/<Game>-v1`` (each game's minimal action set), but registers them through a ``gymnasium.envs``
entry point that Gymnasium 1.x no longer loads: ``register()`` calls the package's own ``register_envs()``.

Observations: MinAtar gives (10, 10, C) bools, one channel per kind of object (C = 4 for Asterix and Breakout,
7 for Freeway, 10 for Seaquest, 6 for SpaceInvaders). ``ChannelsFirst`` turns them into (C, 10, 10) uint8
zeros and ones, the layout of torch's convolutions and of qzoo's replay memory (100 C bytes a frame).
Nothing else is wrapped: no frame skip, no frame stacking, no reward clipping (Young & Tian 2019, section 3:
the game state is Markov by design, with channels for trails and ball direction). The package's defaults stay:
sticky actions with probability 0.1 and difficulty ramping. Episodes have no time limit but Freeway's own
2,500 frames; ``env_kwargs`` ``max_episode_steps=N`` adds one (``gymnasium.make`` takes it).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}

_registered = False


def register() -> bool:
    """Register ``MinAtar/*`` ids with Gymnasium; False when the ``minatar`` package is not installed."""
    global _registered
    if _registered:
        return True
    try:
        import minatar.gym
    except ImportError:
        return False
    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar.gym.register_envs()
    _registered = True
    return True


def is_minatar(spec: gym.envs.registration.EnvSpec) -> bool:
    """True for the envs of the ``minatar`` package, whatever id they were registered under."""
    entry = spec.entry_point
    return isinstance(entry, str) and entry.startswith("minatar")


class ChannelsFirst(gym.ObservationWrapper):
    """(10, 10, C) bool -> (C, 10, 10) uint8 of zeros and ones."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, (channels, height, width), dtype=np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(obs, (2, 0, 1)), dtype=np.uint8)


def make_minatar(env_id: str, env_kwargs: dict | None = None, render_mode: str | None = None) -> gym.Env:
    """``env_id`` with real episode returns recorded (``info["episode"]``) and channels-first observations.

    Training and evaluation envs are the same: MinAtar has no training-only wrapper.
    """
    with warnings.catch_warnings():
        # -v0 (all six actions, as in Young & Tian 2019) is a deliberate choice, not an out-of-date id.
        warnings.filterwarnings("ignore", message=".*out of date.*")
        env = gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
    env = gym.wrappers.RecordEpisodeStatistics(env)
    return ChannelsFirst(env)
