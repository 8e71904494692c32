"""Ape-X's pure parts (Horgan et al. 2018, "Distributed Prioritized Experience Replay"), without Ray.

Many actors, each stepping its own ``n_envs`` env copies with its own fixed epsilon, send *chunks* of experience to
one learner
that owns the replay memory, the networks and the run folder. ``qzoo.distributed`` wraps ``Actor`` with
``ray.remote`` at launch and runs the learner's loop; everything here is plain Python and numpy, so it is
tested without a cluster:

- ``actor_epsilon``: Ape-X's epsilon of actor i of N (Horgan et al. 2018, section 4.1).
- ``ChunkBuilder`` / ``Chunk``: what an actor sends. It takes the same calls as ``ReplayBuffer.add`` (one stream
  per env copy) and keeps only what the replay memory stores: each new frame once (the newest frame of each next
  observation: for Atari one 84x84 frame, not the 4-frame stack) plus the whole first observation of each
  episode, and the copy each transition came from. For Atari that is about 7 KB per env step instead of 56 KB.
- ``ingest``: the learner's side; it replays a chunk into the actor's streams of the ``ReplayBuffer`` (lane
  ``actor * n_envs + copy``) through the same ``add`` calls, so the arrays, the n-step successor links and the
  sum-tree priorities are those that the actor's own ``add`` calls would have made (tests/test_apex.py checks it
  with hypothesis).
- ``RateLimiter``: keeps gradient steps per env step inside a band around ``gradient_steps / train_freq``, as
  Reverb's ``SampleToInsertRatio`` (Cassirer et al. 2021) keeps samples per insert: the learner neither races
  ahead of its data nor falls behind it, so a distributed run learns like the single-process preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qzoo.buffer import ReplayBuffer
from qzoo.schedules import linear_schedule

APEX_EPSILON_BASE = 0.4  # Horgan et al. 2018, section 4.1: eps_i = 0.4 ** (1 + 7 i / (N - 1))
APEX_EPSILON_ALPHA = 7.0


def actor_epsilon(index: int, n_actors: int) -> float:
    """Ape-X's fixed epsilon of actor ``index`` of ``n_actors`` (N > 1): eps_i = 0.4 ** (1 + 7 i / (N - 1)).

    Actor 0 explores most (0.4), actor N - 1 least (0.4 ** 8, about 0.00066). With one actor there is no
    spread to make: the caller uses qzoo's decaying schedule instead (``Actor.epsilon``).
    """
    if n_actors < 2:
        raise ValueError("Ape-X's epsilons need two actors or more; one actor follows qzoo's schedule")
    return APEX_EPSILON_BASE ** (1.0 + APEX_EPSILON_ALPHA * index / (n_actors - 1))


@dataclass
class Chunk:
    """A few hundred env steps of one actor's copies. T transitions, R episode starts, E finished episodes.

    ``copies`` (T,): the env copy (the actor's stream) of each transition, in the order the actor stepped them.
    ``reset_obs`` (R, *obs_shape): the first observation of each episode that starts in this chunk, in order;
    ``starts`` (T,): transition t leaves from such an observation. ``next_frames`` (T, *frame_shape): the newest
    frame of each next observation (the whole observation when nothing is stacked). ``actions``, ``rewards``
    (as the memory stores them: clipped on Atari), ``terminated``, ``truncated`` (T,). ``episode_returns`` and
    ``episode_lengths`` (E,): real (unclipped) scores of the games that ended. ``weights_version``: the
    published weights the actor acted with; ``node_id``: where it ran (set by the Ray host).
    """

    reset_obs: np.ndarray
    starts: np.ndarray
    next_frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    copies: np.ndarray
    epsilon: float = 0.0
    weights_version: int = -1
    node_id: str = ""

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.reset_obs, self.starts, self.next_frames, self.actions, self.rewards,
                                      self.terminated, self.truncated, self.episode_returns, self.episode_lengths,
                                      self.copies))


@dataclass
class ChunkBuilder:
    """Collects an actor's transitions into chunks; ``add`` takes ``ReplayBuffer.add``'s arguments, ``copy`` its
    ``env_index``.

    Each copy's stream is at an episode start at first and after every termination or truncation, exactly when the
    replay memory's stream is (``ReplayBuffer._current`` is None): then the whole ``obs`` is kept.
    """

    stack: int
    n_copies: int = 1
    at_start: list = field(default_factory=list)
    _reset_obs: list = field(default_factory=list)
    _starts: list = field(default_factory=list)
    _frames: list = field(default_factory=list)
    _actions: list = field(default_factory=list)
    _rewards: list = field(default_factory=list)
    _terminated: list = field(default_factory=list)
    _truncated: list = field(default_factory=list)
    _returns: list = field(default_factory=list)
    _lengths: list = field(default_factory=list)
    _copies: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.at_start = [True] * self.n_copies

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool,
            truncated: bool, copy: int = 0) -> None:
        self._starts.append(self.at_start[copy])
        if self.at_start[copy]:
            self._reset_obs.append(np.array(obs))
        self._frames.append(np.array(next_obs[-1] if self.stack > 1 else next_obs))
        self._actions.append(int(action))
        self._rewards.append(float(reward))
        self._terminated.append(bool(terminated))
        self._truncated.append(bool(truncated))
        self._copies.append(copy)
        self.at_start[copy] = bool(terminated or truncated)

    def episode(self, episode_return: float, length: int) -> None:
        """A real game ended (its unclipped score; on Atari one game spans several life-loss episodes)."""
        self._returns.append(float(episode_return))
        self._lengths.append(int(length))

    def take(self, obs_shape: tuple[int, ...], obs_dtype, epsilon: float = 0.0) -> Chunk:
        """The chunk of everything added since the last ``take``; the builder starts a new one."""
        frame_shape = obs_shape[1:] if self.stack > 1 else obs_shape

        def stacked(items: list, shape: tuple[int, ...]) -> np.ndarray:
            return np.stack(items).astype(obs_dtype, copy=False) if items else np.zeros((0, *shape), obs_dtype)

        chunk = Chunk(
            reset_obs=stacked(self._reset_obs, obs_shape), starts=np.array(self._starts, dtype=bool),
            next_frames=stacked(self._frames, frame_shape), actions=np.array(self._actions, dtype=np.int64),
            rewards=np.array(self._rewards, dtype=np.float32), terminated=np.array(self._terminated, dtype=bool),
            truncated=np.array(self._truncated, dtype=bool),
            episode_returns=np.array(self._returns, dtype=np.float64),
            episode_lengths=np.array(self._lengths, dtype=np.int64),
            copies=np.array(self._copies, dtype=np.int16),  # n_envs <= config.MAX_N_ENVS (1024)
            epsilon=epsilon,
        )
        for items in (self._reset_obs, self._starts, self._frames, self._actions, self._rewards, self._terminated,
                      self._truncated, self._returns, self._lengths, self._copies):
            items.clear()
        return chunk


def ingest(buffer: ReplayBuffer, chunk: Chunk, first_stream: int) -> int:
    """Store an actor's chunk in its streams of the replay memory (copy k in stream ``first_stream + k``); returns
    how many of those streams were cut short first.

    The same ``add`` calls as the actor's: ``obs`` matters to ``add`` only at an episode start (it stores that
    observation's frames), and of ``next_obs`` only the newest frame. A copy whose first transition here starts an
    episode while the memory's stream is still inside one (its actor was restarted, or the run resumed) first
    closes that stream as truncated (``ReplayBuffer.end_stream``): its last transition bootstraps, nothing links
    across.
    """
    cut = 0
    copies, firsts = np.unique(chunk.copies, return_index=True)
    for copy, t in zip(copies.tolist(), firsts.tolist()):  # checked before anything is stored
        if not chunk.starts[t] and buffer.stream_at_start(first_stream + copy):
            raise ValueError(f"a chunk of stream {first_stream + copy} continues an episode the memory has not "
                             "seen: chunks out of order")
    for copy, t in zip(copies.tolist(), firsts.tolist()):
        if chunk.starts[t] and not buffer.stream_at_start(first_stream + copy):
            buffer.end_stream(first_stream + copy)
            cut += 1
    resets = iter(chunk.reset_obs)
    for t in range(chunk.steps):
        obs = next(resets) if chunk.starts[t] else None  # None: add reads the stream's own frames
        frame = chunk.next_frames[t]
        next_obs = frame[None] if buffer.stack > 1 else frame
        buffer.add(obs, int(chunk.actions[t]), float(chunk.rewards[t]), next_obs, bool(chunk.terminated[t]),
                   bool(chunk.truncated[t]), env_index=first_stream + int(chunk.copies[t]))
    return cut


class RateLimiter:
    """Gradient steps per env step inside a band, as Reverb's ``SampleToInsertRatio``.

    With ratio r = gradient_steps / train_freq, the single-process loop has taken about r * (t - learning_starts)
    gradient steps after t env steps. Here the learner may take a gradient step while
    ``updates < r * (t - learning_starts + band)`` (else it waits for data: a slow producer), and actors may
    send more while ``updates >= r * (t - learning_starts - band)`` (else they wait for the learner: a fast
    producer). ``band`` counts env steps; Reverb's ``error_buffer`` counts samples.
    """

    def __init__(self, ratio: float, learning_starts: int, band: int):
        if ratio <= 0 or band < 0:
            raise ValueError("the rate limiter needs ratio > 0 and band >= 0")
        self.ratio, self.learning_starts, self.band = ratio, learning_starts, band

    def target(self, env_steps: int) -> float:
        """Gradient steps the single-process loop would have taken after ``env_steps``."""
        return self.ratio * max(0, env_steps - self.learning_starts)

    def updates_allowed(self, env_steps: int, updates: int) -> int:
        """Gradient steps the learner may take now before it must wait for more env steps."""
        if env_steps <= self.learning_starts:
            return 0
        return max(0, math.ceil(self.target(env_steps) + self.ratio * self.band) - updates)

    def updates_owed(self, env_steps: int, updates: int) -> int:
        """Gradient steps still missing to reach the single-process count (the learner's catch-up at the end)."""
        return max(0, math.floor(self.target(env_steps)) - updates)

    def may_insert(self, env_steps: int, updates: int) -> bool:
        """Whether actors may send more: the learner is not more than ``band`` env steps behind its data."""
        return updates >= self.target(env_steps) - self.ratio * self.band


class Actor:
    """One Ape-X actor, without Ray: its ``n_envs`` env copies, its copy of the Q-network for acting, its epsilon
    and its streams (one per copy).

    It is a DQN agent built from the run's config (``torch_threads`` 1, actors 0, no replay memory allocated) whose
    weights the learner replaces (``set_weights``); it acts with ``DQN._act`` (one env) or ``DQN.vector_step``
    (qzoo's vector env, or EnvPool with ``vec_env: envpool``), so NoisyNets, every network head and the env options
    are the single-process agent's own. All its copies act with its one epsilon (Horgan et al. 2018 give each
    actor one epsilon).
    """

    def __init__(self, env_id: str, config, index: int, n_actors: int):
        from qzoo import config as cfg
        from qzoo.dqn import DQN

        # Training-episode seeds apart from other actors' and from evaluation's (agent.EVAL_SEED_OFFSET); also the
        # actor agent's own seed, so that EnvPool's copies (seeded when made) and NoisyNet draws differ by actor.
        self.reset_seed: int | None = config.seed + 10_000 * (index + 1)
        actor_config = cfg.replace(config, "actor", torch_threads=1, device="cpu", actors=0, eval_freq=0,
                                   checkpoint_freq=0, seed=self.reset_seed % (cfg.MAX_SEED + 1))
        self.agent = DQN(env_id, actor_config)
        self.agent.rng = np.random.default_rng((config.seed, index))  # each actor its own exploration draws
        self.index, self.n_actors, self.n_envs = index, n_actors, config.n_envs
        self.builder = ChunkBuilder(self.agent.stack, self.n_envs)
        self._transitions = self._steps()
        self._run_step, self._horizon = 0, 1
        self.env_steps = 0

    def epsilon(self, run_step: int, horizon: int) -> float:
        """Ape-X's fixed epsilon; with one actor, qzoo's schedule at the run's env step; 0 with NoisyNets."""
        c = self.agent.config
        if c.noisy:
            return 0.0
        if self.n_actors > 1:
            return actor_epsilon(self.index, self.n_actors)
        progress = run_step / max(horizon, 1)
        return linear_schedule(c.exploration_initial_eps, c.exploration_final_eps, c.exploration_fraction, progress)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        import torch

        # torch.tensor copies: the arrays of ray.get are read-only views of the object store.
        self.agent.q_net.load_state_dict({name: torch.tensor(array) for name, array in weights.items()})

    def _steps(self):
        """The actor's transitions, one env step each, for ever: (copy, ``ReplayBuffer.add``'s arguments, the real
        game it ended as (return, length) or None). Epsilon is read at each env step (or vector step)."""
        env, seed = self.agent.env, self.reset_seed
        if self.n_envs == 1:
            obs = None
            while True:
                if obs is None:
                    obs, _ = env.reset(seed=seed)
                    seed = None  # seeded once; later episodes continue the env's generator
                action = self.agent._act(obs, self.epsilon(self._run_step, self._horizon))
                next_obs, reward, terminated, truncated, info = env.step(action)
                game = (float(info["episode"]["r"]), int(info["episode"]["l"])) if "episode" in info else None
                yield 0, (obs, action, float(reward), next_obs, terminated, truncated), game
                obs = None if terminated or truncated else next_obs
        obs, _ = env.reset(seed=[seed + i for i in range(self.n_envs)])  # the vector env resets copies itself
        while True:
            obs, transitions, games = self.agent.vector_step(obs, self.epsilon(self._run_step, self._horizon))
            # A game is reported at the step that ended it, a transition of that copy (EnvPool's reset step is next).
            ended = {i: (episode_return, length) for i, episode_return, length in games}
            for i, transition in transitions:
                yield i, transition, ended.pop(i, None)

    def collect(self, steps: int, run_step: int = 0, horizon: int = 1) -> Chunk:
        """``steps`` env steps over the copies, epsilon-greedily; ``run_step`` (env steps over all actors when
        asked) and ``horizon`` place a lone actor on qzoo's epsilon schedule.

        With n_envs copies a vector step makes up to n_envs transitions; those past ``steps`` wait for the next
        chunk, so that the learner gets exactly the env steps it asked for (and the run exactly n_timesteps). At
        the end of the run the last waiting ones are never sent.
        """
        self._run_step, self._horizon = run_step, horizon
        for _ in range(steps):
            copy, transition, game = next(self._transitions)
            self._run_step += 1
            self.builder.add(*transition, copy=copy)
            if game is not None:  # a real game ended (not only a life): its unclipped score
                self.builder.episode(*game)
        self.env_steps += steps
        epsilon = self.epsilon(self._run_step - 1 if steps else run_step, horizon)  # the last step's
        return self.builder.take(self.agent.obs_shape, self.agent.obs_dtype, epsilon)


def weights_of(q_net) -> dict[str, np.ndarray]:
    """The Q-network's weights as contiguous CPU numpy arrays: what one publication puts in the object store."""
    return {name: tensor.detach().cpu().contiguous().numpy().copy() for name, tensor in q_net.state_dict().items()}
