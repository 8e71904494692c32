"""The agent interface: what the commands, the run folder, checkpoints, the Hub folder and videos need of an agent.

``Agent`` is a ``typing.Protocol``: ``DQN`` and ``QLearning`` satisfy it without inheriting from anything, and a
type checker tells a third agent which members it still lacks. ``Recorder`` is the other direction: what an
agent's ``learn`` loop reports to (``qzoo.runs.RunRecorder`` writes a run folder from it; the agent never
imports the run folder, so the Python API trains without writing anything). The helpers
below are the parts the two agents share (config resolution in the constructor, ``predict``'s exploration,
the evaluation env and its seeds), written once.

Adding an agent: define every member of ``Agent``; register the class in ``qzoo.algos``; give it a config
dataclass in ``qzoo.config.SCHEMAS``. ``tests/test_agent.py`` checks both agents against the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

import numpy as np

from qzoo import config as cfg
from qzoo.envs import family
from qzoo.errors import QzooError
from qzoo.evaluation import EvalStats, StepHook, evaluate

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes start from seeds this far from training's
_A = TypeVar("_A", bound="Agent")


class Recorder(Protocol):
    """What the training loop reports; ``qzoo.runs.RunRecorder`` writes it to a run folder."""

    def on_episode(self, agent: "Agent", episode_return: float, length: int) -> None: ...
    def on_train(self, agent: "Agent", metrics: dict[str, float]) -> None: ...
    def on_evaluation(self, agent: "Agent", stats: EvalStats, improved: bool) -> None:
        """A periodic evaluation; ``improved``: it beat every earlier one (``Evaluations.note``)."""
    def on_checkpoint(self, agent: "Agent") -> None: ...
    stop_requested: int  # a signal number once SIGINT or SIGTERM arrived, else 0


@runtime_checkable
class Agent(Protocol):
    """An agent that learns, acts, evaluates itself and saves, as every qzoo command uses it."""

    algo: str  # the name in model files and run.json: "dqn" (any switches) or "qlearning"
    file_suffix: str  # of its model files: ".pt" or ".npz"
    env_id: str
    config: Any  # its frozen config dataclass (``qzoo.config.SCHEMAS``)
    env: Any  # the training env (a checkpoint pickles it; resume replaces it)
    num_timesteps: int  # env steps taken (after frame skip)
    num_episodes: int  # training episodes finished
    horizon: int  # the env step where the current learn() ends: schedules decay over it
    evaluations: "Evaluations"  # its evaluation env and the best evaluation so far

    @property
    def variant(self) -> str:
        """The algorithm with its switches, for ``qzoo info``, run.json and plots: ``dqn``, ``rainbow``, ..."""

    @property
    def network_kind(self) -> str:
        """``mlp``, ``cnn``, ``de_cnn``, ``minatar``, or ``table`` for a Q-table: tuning's search space."""

    @property
    def exact_resume(self) -> bool:
        """Whether a checkpoint can hold this agent's whole state (not with env copies in other processes)."""

    def make_env(self, training: bool, render_mode: str | None = None) -> Any: ...
    def memory_bytes(self) -> int: ...
    def describe(self) -> dict[str, Any]: ...
    def exploration_rate(self, horizon: int | None = None) -> float: ...
    def greedy_action(self, obs: Any) -> int: ...
    def predict(self, obs: Any, deterministic: bool = True) -> tuple[Any, None]: ...
    def learn(self: _A, total_timesteps: int | None = None, recorder: Recorder | None = None) -> _A: ...
    def evaluate(self, n_episodes: int, seed: int | None = None, epsilon: float | None = None,
                 on_step: StepHook | None = None) -> EvalStats: ...
    def initialise_from(self, other: Any) -> None: ...
    def weights_sha256(self) -> str: ...
    def save(self, path: str | Path, with_training_state: bool = False) -> None: ...
    def resume_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...
    def restore_resume_state(self, numbers: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...
    def close(self) -> None: ...

    @classmethod
    def load(cls: type[_A], path: str | Path, **config_overrides: Any) -> _A: ...


# ------------------------------------------------------------------------------ shared helpers


def resolve_config(env_id: str, config: Any, hyperparameters: dict[str, Any], algo: str, owner: str) -> Any:
    """An agent constructor's config: the preset of ``env_id`` with ``hyperparameters`` on top when no config is
    given, else ``config`` with them replaced (``owner`` names the caller in error messages, e.g. ``DQN()``)."""
    if config is None:
        config, _ = cfg.resolve(env_id, family(env_id), overrides=hyperparameters, algo=algo)
    elif hyperparameters:
        config = cfg.replace(config, owner, **hyperparameters)
    return config


def check_observation(obs: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``obs`` as an array of one observation of ``shape`` or a batch of them; else a QzooError saying the shape
    expected (``predict`` is the API's door for observations from anywhere)."""
    try:
        array = np.asarray(obs)
    except (TypeError, ValueError):
        raise QzooError(f"predict: expected an observation of shape {shape}, got {type(obs).__name__}") from None
    if array.shape != shape and array.shape[1:] != shape:
        raise QzooError(f"predict: expected an observation of shape {shape} or a batch (N, *{shape}), "
                        f"got shape {array.shape}")
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        raise QzooError(f"predict: the observation must hold finite numbers (dtype {array.dtype})")
    return array


def predict_actions(greedy: np.ndarray, deterministic: bool, epsilon: float, n_actions: int,
                    rng: np.random.Generator) -> tuple[Any, None]:
    """SB3's ``predict`` from the greedy actions of one observation (a 0-d array) or a batch: (actions, None).

    Non-deterministic: each action is uniform at random with probability ``epsilon`` (the final exploration rate).
    """
    actions = greedy
    if not deterministic:
        explore = rng.random(actions.shape) < epsilon
        actions = np.where(explore, rng.integers(n_actions, size=actions.shape), actions)
    return (int(actions) if actions.ndim == 0 else actions), None


class Evaluations:
    """An agent's evaluations: its evaluation env (made on first use, then kept) and the best mean return so far.

    Seeds: by default episode i of an evaluation starts from ``config.seed + EVAL_SEED_OFFSET + i``, apart from
    training's; epsilon by default is the config's ``eval_epsilon`` (the rule of ``qzoo.evaluation``).
    The best mean return is the run's one record of it: ``note`` updates it after each periodic evaluation,
    the run folder saves ``best.pt`` when it improved, and exact resume keeps it in the agent's state.
    """

    def __init__(self, agent: Any):
        self._agent = agent
        self._env: Any = None
        self.best_mean_return = -float("inf")
        # Asked after every evaluation step; True stops the evaluation (``EvaluationStopped``). A training run
        # sets it to its recorder's stop flag, so SIGINT / SIGTERM end an evaluation within one env step.
        self.should_stop: Callable[[], bool] | None = None

    def run(self, n_episodes: int, seed: int | None = None, epsilon: float | None = None,
            on_step: StepHook | None = None) -> EvalStats:
        agent = self._agent
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
            raise QzooError(f"evaluate: n_episodes must be an integer >= 1, got {n_episodes!r}")
        if seed is not None and not (isinstance(seed, int) and 0 <= seed <= cfg.MAX_SEED):
            raise QzooError(f"evaluate: seed must be an integer in [0, {cfg.MAX_SEED}], got {seed!r}")
        if epsilon is not None and not 0 <= epsilon <= 1:
            raise QzooError(f"evaluate: epsilon must be in [0, 1], got {epsilon!r}")
        if self._env is None:
            self._env = agent.make_env(training=False)
        seed = agent.config.seed + EVAL_SEED_OFFSET if seed is None else seed
        epsilon = agent.config.eval_epsilon if epsilon is None else epsilon
        return evaluate(agent.greedy_action, self._env, n_episodes, seed, epsilon, should_stop=self.should_stop,
                        on_step=on_step)

    def note(self, stats: EvalStats) -> bool:
        """Record a periodic evaluation; True when it beat every earlier one."""
        improved = stats.mean > self.best_mean_return
        self.best_mean_return = max(self.best_mean_return, stats.mean)
        return improved

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
