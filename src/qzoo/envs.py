"""One factory for every Gymnasium env with a Discrete action space, Atari preprocessing included.

Atari protocols (the wrapper stack is built bottom-up in this order):

``nature`` (``*NoFrameskip-v4`` ids; Mnih et al. 2015, Methods): up to 30 no-op actions at the start of
each game; each action repeated 4 frames, the observation the pixel-wise max of the last two (Atari
sprites flicker); a time limit of 27,000 env steps (108,000 frames, 30 minutes of play: Machado et al.
2018); for training only, a lost life ends the episode; FIRE pressed on reset where the game needs it;
for training only, rewards clipped to their sign; grayscale frames, optionally cropped, resized to 84x84;
the last 4 frames stacked.

``machado`` (``ALE/*-v5`` ids; Machado et al. 2018): sticky actions with probability 0.25 in place of
no-op starts, no life-loss signal, no FIRE on reset; frame skip, max-pool, clipping and stacking as above.

MinAtar (``MinAtar/*`` ids, Young & Tian 2019): see ``qzoo.minatar``; (C, 10, 10) uint8 observations.

Training-only wrappers never wrap an evaluation env, so evaluation reports the real game score over
full games. The real score of every training game is recorded below those wrappers too
(``info["episode"]``).
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from qzoo import minatar
from qzoo.errors import QzooError

ATARI_SCREEN = (210, 160)
ATARI_MAX_EPISODE_STEPS = 27_000  # 108,000 frames at frame skip 4 (Machado et al. 2018, section 5)

_ale_registered = False


def _register_envs(env_id: str | None = None) -> None:
    """Taxi-v3 where Gymnasium (>= 1.3) only registers Taxi-v4; ALE's games and MinAtar's when ``env_id`` is
    one of theirs (None: all of them).

    Taxi-v4 changed only the optional rainy and fickle-passenger modes; with both off (the default)
    its dynamics, rewards and 200-step limit are Taxi-v3's, so the course's env id keeps working.
    ale_py and minatar load only for an id Gymnasium does not know without them: importing minatar brings
    matplotlib, pandas and scipy, and the two together added 120 MB to a CartPole run's memory (measured).
    """
    global _ale_registered
    if "Taxi-v3" not in gym.registry and "Taxi-v4" in gym.registry:
        v4 = gym.registry["Taxi-v4"]
        gym.register("Taxi-v3", entry_point=v4.entry_point, max_episode_steps=v4.max_episode_steps,
                     reward_threshold=v4.reward_threshold, kwargs={"is_rainy": False, "fickle_passenger": False})
    if env_id is not None and env_id in gym.registry:
        return
    if env_id is None or env_id.startswith("MinAtar/"):
        minatar.register()  # MinAtar/*: Gymnasium 1.x no longer loads the package's entry point itself
    if not _ale_registered and (env_id is None or not env_id.startswith("MinAtar/")):
        import ale_py

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on every import
        gym.register_envs(ale_py)
        _ale_registered = True


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``; an unknown id is an error with close matches."""
    _register_envs(env_id)
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        _register_envs()  # every family's ids, for the suggestions
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise QzooError(f"unknown env id {env_id!r}{hint}") from None


def is_atari(env_id: str) -> bool:
    entry = env_spec(env_id).entry_point
    return isinstance(entry, str) and entry.startswith("ale_py")


def family(env_id: str) -> str | None:
    """The preset family of an env id: ``atari`` for ALE games, ``minatar`` for MinAtar's, else None."""
    if is_atari(env_id):
        return "atari"
    return "minatar" if minatar.is_minatar(env_spec(env_id)) else None


def atari_protocol(env_id: str, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "machado" if env_id.startswith("ALE/") else "nature"


@dataclass(frozen=True)
class EnvOptions:
    """What the factory needs from a run's config."""

    frame_stack: int = 4
    atari_protocol: str = "auto"
    atari_crop: tuple[int, ...] | None = None
    env_kwargs: dict | None = None


# ----------------------------------------------------------------------------------- Atari wrappers


class NoopReset(gym.Wrapper):
    """After a real reset, take a random number (1..noop_max) of no-op actions (Mnih 2015, Methods)."""

    def __init__(self, env: gym.Env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper):
    """Repeat each action ``skip`` frames; observe the max of the last two frames, sum the rewards."""

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        self.skip = skip
        self._frames = np.zeros((2, *env.observation_space.shape), dtype=np.uint8)

    def step(self, action):
        total = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for i in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if i >= self.skip - 2:
                self._frames[i - (self.skip - 2)] = obs
            if terminated or truncated:
                # The game ended inside the skip: the last frame is the true final one.
                self._frames[:] = obs
                break
        return self._frames.max(axis=0), total, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """Training only: a lost life ends the episode, but the game goes on (Mnih 2015, Methods).

    ``reset`` after a life loss takes one no-op step instead of restarting the game.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE after reset in games that wait for it (Breakout, SpaceInvaders...)."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class ClipReward(gym.RewardWrapper):
    """Training only: reward -> its sign, so one learning rate fits every game (Mnih 2015, Methods)."""

    def reward(self, reward):
        return float(np.sign(reward))


class WarpFrame(gym.ObservationWrapper):
    """Grayscale frame -> optional crop -> 84x84 (Mnih 2015: 'phi', minus the luminance channel choice)."""

    def __init__(self, env: gym.Env, size: int = 84, crop: tuple[int, ...] | None = None):
        super().__init__(env)
        self.size = size
        height, width = env.observation_space.shape[:2]
        top, bottom, left, right = crop or (0, 0, 0, 0)
        if top + bottom >= height or left + right >= width:
            raise QzooError(f"atari_crop {tuple(crop)} leaves nothing of the {height}x{width} screen")
        self._rows = slice(top, height - bottom)
        self._cols = slice(left, width - right)
        self.observation_space = gym.spaces.Box(0, 255, (size, size), dtype=np.uint8)

    def observation(self, obs):
        frame = obs[self._rows, self._cols]
        return cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)


class FrameStack(gym.Wrapper):
    """The last ``k`` frames as one (k, 84, 84) observation; at reset, the first frame repeated.

    The replay memory relies on that padding: it stores a frame once and rebuilds the stacks.
    """

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (k, *shape), dtype=np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.k):
            self._frames.append(obs)
        return np.stack(self._frames), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(obs)
        return np.stack(self._frames), reward, terminated, truncated, info


def _make_atari(env_id: str, options: EnvOptions, training: bool, render_mode: str | None) -> gym.Env:
    protocol = atari_protocol(env_id, options.atari_protocol)
    kwargs: dict[str, Any] = {"obs_type": "grayscale", "frameskip": 1, **(options.env_kwargs or {})}
    if protocol == "nature":
        kwargs.setdefault("repeat_action_probability", 0.0)
    else:
        kwargs.setdefault("repeat_action_probability", 0.25)  # Machado et al. 2018, sticky actions
    env = gym.make(env_id, render_mode=render_mode, max_episode_steps=None, **kwargs)
    if protocol == "nature":
        env = NoopReset(env, noop_max=30)
    env = MaxAndSkip(env, skip=4)
    env = gym.wrappers.TimeLimit(env, ATARI_MAX_EPISODE_STEPS)
    env = gym.wrappers.RecordEpisodeStatistics(env)  # the real game score, before life loss and clipping
    if protocol == "nature":
        if training:
            env = EpisodicLife(env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireReset(env)
    if training:
        env = ClipReward(env)
    env = WarpFrame(env, 84, options.atari_crop)
    return FrameStack(env, options.frame_stack)


def make_env(
    env_id: str,
    options: EnvOptions | None = None,
    training: bool = True,
    render_mode: str | None = None,
) -> gym.Env:
    """Build ``env_id`` for training (``training=True``) or for evaluation (real scores, full games).

    Raises QzooError for an unknown id or an action space that is not Discrete.
    """
    options = options or EnvOptions()
    env_spec(env_id)
    if render_mode != "human":
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame-drawn frames need no screen
    try:
        if is_atari(env_id):
            env = _make_atari(env_id, options, training, render_mode)
        elif minatar.is_minatar(env_spec(env_id)):
            env = minatar.make_minatar(env_id, options.env_kwargs, render_mode)
        else:
            with warnings.catch_warnings():
                # Our Taxi-v3 is Taxi-v4's deterministic env; gymnasium warns that v3 is out of date.
                warnings.filterwarnings("ignore", message=".*out of date.*")
                env = gym.make(env_id, render_mode=render_mode, **(options.env_kwargs or {}))
            env = gym.wrappers.RecordEpisodeStatistics(env)
    except gym.error.DependencyNotInstalled as exc:
        raise QzooError(f"{env_id} needs a package that is not installed: {exc}") from None
    except (TypeError, ValueError, KeyError, AssertionError, gym.error.Error) as exc:
        # gymnasium.make and the env constructors report a bad keyword argument or value in many ways
        # (map_name=nonexistent is a KeyError, max_episode_steps=0 a ValueError): all are the user's env_kwargs.
        if not options.env_kwargs and not isinstance(exc, TypeError):
            raise
        raise QzooError(f"{env_id}: bad env_kwargs {dict(options.env_kwargs or {})}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise QzooError(
            f"{env_id} has a {type(env.action_space).__name__} action space; DQN needs discrete actions"
        )
    return env
