"""Tabular Q-learning (Watkins 1989), the step before Deep Q-Learning, for Discrete observation spaces.

The Q-function is a table with one row per state and one column per action:

    for each env step:
        with probability epsilon pick a random action, else argmax_a Q[s, a] (ties broken at random)
        step the env and update the table towards the Bellman target:
            Q[s, a] += lr * (r + gamma * max_a' Q[s', a'] - Q[s, a])     (no bootstrap from a terminal)

It has the same interface as ``qzoo.dqn.DQN`` (``learn``, ``predict``, ``evaluate``, ``save``, ``load``)
and writes the same run folder, so the two sit side by side on one command line. The table is saved
as ``.npz`` (numpy arrays and a JSON string; loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from qzoo import config as cfg
from qzoo.agent import Evaluations, Recorder, predict_actions, resolve_config
from qzoo.envs import EnvOptions, make_env
from qzoo.errors import QzooError
from qzoo.evaluation import EvalStats, StepHook
from qzoo.files import atomic_write
from qzoo.periodic import PeriodicWork
from qzoo.schedules import exponential_schedule, linear_schedule

MODEL_FORMAT = 1
ALGO = "qlearning"


def q_learning_update(
    q_table: np.ndarray, state: int, action: int, reward: float, next_state: int, terminated: bool,
    learning_rate: float, gamma: float,
) -> float:
    """Q[s, a] += lr * (r + gamma * (1 - terminated) * max_a' Q[s', a'] - Q[s, a]), in place.

    A truncation (time limit) still bootstraps from s': only a real terminal has no future.
    Returns the TD error before the update.
    """
    future = 0.0 if terminated else float(q_table[next_state].max())
    td_error = reward + gamma * future - float(q_table[state, action])
    q_table[state, action] += learning_rate * td_error
    return td_error


class QLearning:
    """A Q-table agent with ``learn``, ``predict``, ``evaluate``, ``save`` and ``load``."""

    algo = ALGO
    file_suffix = ".npz"

    def __init__(self, env_id: str, config: cfg.QLearningConfig | None = None, **hyperparameters: Any):
        config = resolve_config(env_id, config, hyperparameters, ALGO, "QLearning()")
        self.env_id = env_id
        self.config = config
        self.env = self.make_env(training=True)
        space = self.env.observation_space
        if not isinstance(space, gym.spaces.Discrete):
            self.env.close()
            raise QzooError(
                f"{env_id} has a {type(space).__name__} observation space; tabular Q-learning needs a Discrete one "
                "(use --algo dqn)"
            )
        self.n_states, self.n_actions = int(space.n), int(self.env.action_space.n)
        self.q_table = np.zeros((self.n_states, self.n_actions), dtype=np.float64)
        self.rng = np.random.default_rng(config.seed)
        self.num_timesteps = 0
        self.num_episodes = 0
        self.horizon = config.n_timesteps  # the env step where the current learn() ends
        self._pending_td_errors: list[float] = []  # squared TD errors since the last train.csv row
        self._obs: int | None = None
        self.evaluations = Evaluations(self)

    def make_env(self, training: bool, render_mode: str | None = None) -> gym.Env:
        return make_env(self.env_id, EnvOptions(env_kwargs=self.config.env_kwargs), training, render_mode)

    variant = ALGO  # a Q-table has no switches
    network_kind = "table"
    exact_resume = True  # one env in this process: a checkpoint holds everything

    def memory_bytes(self) -> int:
        return self.q_table.nbytes

    def describe(self) -> dict[str, Any]:
        return {"table_shape": [self.n_states, self.n_actions], "memory_bytes": self.memory_bytes()}

    # ------------------------------------------------------------------------------------ acting

    def exploration_rate(self, horizon: int | None = None) -> float:
        c = self.config
        if c.exploration_schedule == "exponential":
            return exponential_schedule(
                c.exploration_initial_eps, c.exploration_final_eps, c.exploration_decay_rate, self.num_episodes
            )
        progress = self.num_timesteps / max(horizon or c.n_timesteps, 1)
        return linear_schedule(c.exploration_initial_eps, c.exploration_final_eps, c.exploration_fraction, progress)

    def greedy_action(self, state) -> int:
        return int(self.q_table[int(state)].argmax())

    def predict(self, state, deterministic: bool = True) -> tuple[Any, None]:
        """SB3-style: (action or actions, None) for one state or an array of states."""
        greedy = self.q_table[np.asarray(state, dtype=np.int64)].argmax(axis=-1)
        return predict_actions(greedy, deterministic, self.config.exploration_final_eps, self.n_actions, self.rng)

    def _act(self, state: int, epsilon: float) -> int:
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.n_actions))
        row = self.q_table[state]
        # Random among the best: an untouched row (all zeros) must not always pick action 0.
        return int(self.rng.choice(np.flatnonzero(row == row.max())))

    # ---------------------------------------------------------------------------------- learning

    def learn(self, total_timesteps: int | None = None, recorder: Recorder | None = None) -> "QLearning":
        """Train for ``total_timesteps`` env steps (default: the config's ``n_timesteps``); calls continue the run."""
        c = self.config
        horizon = self.num_timesteps + (c.n_timesteps if total_timesteps is None else total_timesteps)
        self.horizon = horizon
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=c.seed)
        td_errors = self._pending_td_errors
        periodic = PeriodicWork(self, recorder, td_errors)
        while self.num_timesteps < horizon:
            epsilon = self.exploration_rate(horizon)
            action = self._act(int(self._obs), epsilon)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            td_error = q_learning_update(self.q_table, int(self._obs), action, float(reward), int(next_obs),
                                         terminated, c.learning_rate, c.gamma)
            td_errors.append(td_error * td_error)  # the loss logged is the mean squared TD error
            self._obs = next_obs
            self.num_timesteps += 1
            if terminated or truncated:
                self._obs, _ = self.env.reset()
            if "episode" in info:
                self.num_episodes += 1
                if recorder:
                    recorder.on_episode(self, float(info["episode"]["r"]), int(info["episode"]["l"]))

            if periodic.after_env_step(epsilon):
                break
        return self

    def evaluate(self, n_episodes: int, seed: int | None = None, epsilon: float | None = None,
                 on_step: StepHook | None = None) -> EvalStats:
        """Greedy play on a separate env; episode i starts from seed + i."""
        return self.evaluations.run(n_episodes, seed, epsilon, on_step)

    def close(self) -> None:
        self.env.close()
        self.evaluations.close()

    # ------------------------------------------------------------------------------ persistence

    def initialise_from(self, other: "QLearning") -> None:
        """Start from another agent's table (``qzoo train --from``)."""
        self.q_table[:] = other.q_table

    def weights_sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.q_table).tobytes()).hexdigest()

    def save(self, path: str | Path, with_training_state: bool = False) -> None:
        """Write the table and its metadata atomically as .npz (no pickle)."""
        del with_training_state  # the table is the whole training state
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": MODEL_FORMAT, "algo": ALGO, "env_id": self.env_id, "config": self.config.to_dict(),
                "num_timesteps": self.num_timesteps, "num_episodes": self.num_episodes}
        atomic_write(path, lambda f: np.savez(f, q_table=self.q_table, meta=np.array(json.dumps(meta))))

    def resume_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What exact resume needs beyond the table: schedule position, generator, current state."""
        numbers = {"horizon": self.horizon, "pending_td_errors": list(self._pending_td_errors),
                   "best_mean_return": self.evaluations.best_mean_return, "rng": self.rng.bit_generator.state,
                   "obs": None if self._obs is None else int(self._obs)}
        return numbers, {}

    def restore_resume_state(self, numbers: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        del arrays  # a Q-table run has none beyond the table, which the model file holds
        self.horizon = int(numbers["horizon"])
        self._pending_td_errors = [float(x) for x in numbers["pending_td_errors"]]
        self.evaluations.best_mean_return = float(numbers["best_mean_return"])
        self.rng.bit_generator.state = numbers["rng"]
        self._obs = numbers["obs"]

    @classmethod
    def load(cls, path: str | Path, **config_overrides: Any) -> "QLearning":
        """Rebuild an agent from ``save``'s file. The file is untrusted: each array's shape is read from its
        ``.npy`` header and checked (the metadata's size, the table's shape against the env's) before anything
        is decompressed, so a small file that would unpack to gigabytes is refused first."""
        import zipfile

        path = Path(path)
        if not path.is_file():
            raise QzooError(f"model file not found: {path}")
        damaged = f"cannot read model file {path}: it is truncated or not a qzoo model"
        try:
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(str(_read_npy(archive, "meta", lambda shape, dtype: shape == () and dtype.kind == "U"
                                                and dtype.itemsize <= MAX_META_BYTES)))
                if not isinstance(meta, dict) or meta.get("algo") != ALGO or meta.get("format") != MODEL_FORMAT:
                    raise QzooError(f"{path} is not a qzoo Q-learning model of format {MODEL_FORMAT}")
                if not isinstance(meta.get("config"), dict):
                    raise QzooError(f"{path} is not a qzoo Q-learning model of format {MODEL_FORMAT}")
                config = cfg.build({**meta["config"], **config_overrides}, str(path), cfg.QLearningConfig)
                agent = cls(str(meta["env_id"]), config)
                expected = agent.q_table.shape

                def fits(shape: tuple[int, ...], dtype: np.dtype) -> bool:
                    if shape != expected or dtype.kind != "f":
                        raise QzooError(f"{path}: table shape {shape} does not fit {meta['env_id']} {expected}")
                    return True

                q_table = _read_npy(archive, "q_table", fits)
        except QzooError:
            raise
        except Exception as exc:  # zipfile, KeyError, ValueError, JSON errors: all mean a damaged file
            raise QzooError(f"{damaged} ({type(exc).__name__})") from None
        agent.q_table[:] = q_table
        agent.num_timesteps = int(meta["num_timesteps"])
        agent.num_episodes = int(meta["num_episodes"])
        return agent


MAX_META_BYTES = 4 << 20  # the metadata is a JSON string of a few KB; its .npy header says its size


def _read_npy(archive: Any, name: str, fits: Any) -> np.ndarray:
    """The array ``name`` of an open .npz, read only once ``fits(shape, dtype)`` accepted its header."""
    with archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if not fits(tuple(shape), dtype):
            raise ValueError(f"{name} has an unexpected shape or type")
    with archive.open(f"{name}.npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)
