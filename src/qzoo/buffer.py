"""Replay memory: a preallocated circular buffer that stores each observation frame once.

Layout. Two rings of preallocated numpy arrays:

* the *frame ring* ``frames[F, *frame_shape]`` holds frames (an 84x84 uint8 Atari frame, or a whole
  vector observation when nothing is stacked), in the order they were seen;
* the *transition ring* (``capacity`` rows) holds, for each transition, the absolute frame numbers
  of the ``stack`` frames of ``obs`` and of the newest frame of ``next_obs``, plus action, reward,
  ``terminated`` and ``truncated``.

Each env step writes one new frame (the newest of ``next_obs``); an episode start also writes the
distinct frames of its first observation (one frame with the usual repeat-the-first-frame padding).
A sample rebuilds ``obs`` and ``next_obs`` stacks by indexing the frame ring, so a stack never mixes
two episodes: its frame numbers were recorded within one episode.

Cost per transition for Atari (84x84 frames, stack 4): 7,056 bytes of frame, plus 1% of frame ring
kept for episode-start frames, plus 50 bytes of numbers = about 7.18 KB, against about 56 KB for
storing both 4-frame stacks. When episodes are so short that the frame ring wraps before the
transition ring, the oldest transitions become unusable and are never sampled (see ``_valid``).

With ``compress=True`` each frame is kept as an LZ4 block instead (lossless): Atari frames are
mostly background, so a SpaceInvaders frame takes about 1.6 KB instead of 7,056 bytes (Pong and
Breakout well under 0.5 KB). A sample decompresses each distinct frame it needs once; the frame ring
is then a list of ``bytes``, and its size depends on the game (``nbytes_used`` measures it).

``terminated`` and ``truncated`` stay separate: a time-limit truncation is not a terminal, and the
TD target bootstraps through it (Pardo et al. 2018, "Time Limits in Reinforcement Learning").

n-step returns (``n_step > 1``) are computed at sample time from the 1-step rows, so the memory is the
same for every n. Each row records ``successor``, the row of the same stream's next transition (-1 until
it is written), so a window follows its own stream even when ``n_envs`` streams interleave; the ring
overwrites rows oldest first, so a live row's successors are live too. A window is usable once it holds
n rows or ends on a termination or truncation (``n_step_returns`` stops there); the newest
rows of a stream wait. Cost: 8 more bytes per transition. ``end_stream`` closes a stream mid-episode as a
truncation (an Ape-X actor restarted: ``qzoo.apex.ingest``); ``restripe`` closes every stream and goes on with
another number of them (an Ape-X run resumed with another actor count: the rows are shared by all streams, only
each stream's bookkeeping changes).

Prioritised replay (``prioritized=True``, Schaul et al. 2016): a ``SumTree`` over the transition rows,
16 bytes per row (capacity rounded up to a power of two). A row enters with priority 0 and gets the
largest priority seen so far once its n-step window is complete; ``update_priorities`` sets
(|delta| + eps)^alpha after a gradient step. Sampling is O(B log N). Rows the frame ring can no longer
rebuild (``_valid``) are set to 0 when drawn, and redrawn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from qzoo.errors import QzooError
from qzoo.sumtree import SumTree, importance_weights, proportional_priorities

_INDEX_DTYPE = np.int64  # absolute frame numbers: they never wrap, which makes validity a comparison


class NStepReturns(NamedTuple):
    """Shapes (B,), (B,), (B,): sum_{j<k} gamma^j r_j, the bootstrap discount, and k - 1."""

    returns: np.ndarray
    discounts: np.ndarray
    bootstrap_offset: np.ndarray


def n_step_returns(
    rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, gamma: float
) -> NStepReturns:
    """The n-step return of each window of n consecutive transitions of one stream (Sutton & Barto, eq. 7.1).

    The window stops after k <= n transitions: at its first termination or truncation, else after n. Then

        G = sum_{j=0}^{k-1} gamma^j r_{t+j}
        y = G + discount * max_a Q(s_{t+k}, a),   discount = 0 if transition t+k-1 terminated, else gamma^k.

    A termination inside the window: no bootstrap. A truncation inside it (a time limit, Pardo et al. 2018):
    bootstrap from that transition's final observation with gamma^k, k < n. Transitions after the first end
    belong to the next episode and are ignored. ``bootstrap_offset`` = k - 1 names the transition of the window
    whose ``next_obs`` is s_{t+k}. n = 1 gives DQN's one-step target.

    numpy, not torch: the replay memory computes this at sample time from the rows it already gathered, so
    one memory serves every n. The caller passes only windows that are complete or end on an episode end.
    Shapes: rewards, terminated, truncated (B, n). Returns float32, float32, int64 arrays of shape (B,).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    terminated = np.asarray(terminated, dtype=bool)
    ended = terminated | np.asarray(truncated, dtype=bool)
    n = rewards.shape[1]
    # k - 1: the first end in the window, or the last transition when the episode runs through it.
    offset = np.where(ended.any(axis=1), ended.argmax(axis=1), n - 1)
    steps = np.arange(n)
    inside = steps[None, :] <= offset[:, None]
    returns = (rewards * gamma ** steps[None, :] * inside).sum(axis=1)
    last_terminated = terminated[np.arange(rewards.shape[0]), offset]
    discounts = np.where(last_terminated, 0.0, float(gamma) ** (offset + 1))
    return NStepReturns(returns.astype(np.float32), discounts.astype(np.float32), offset.astype(np.int64))


class ReplayBatch(NamedTuple):
    """A minibatch; shapes (B, *obs_shape), (B,), (B,), (B, *obs_shape), (B,), (B,), then optional (B,) each.

    With ``n_step > 1``, ``rewards`` are the n-step returns sum_{j<k} gamma^j r_{t+j}, ``next_obs`` is s_{t+k},
    ``terminated`` / ``truncated`` say how the window ended and ``discounts`` is gamma^k, or 0 after a
    termination (``n_step_returns``); it is None for 1-step batches. ``rows`` are the
    transition rows sampled and ``weights`` the importance-sampling weights (prioritised replay only).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    discounts: np.ndarray | None = None
    rows: np.ndarray | None = None
    weights: np.ndarray | None = None


def frame_ring_size(capacity: int, stack: int, n_envs: int = 1) -> int:
    """Frames kept for ``capacity`` transitions: one each, plus room for episode-start frames."""
    if stack == 1:
        return 2 * capacity  # vector observations are small: room for an episode start per step
    return capacity + capacity // 100 + 2 * stack * n_envs


# Planning figure for a compressed frame: LZ4 block plus the bytes object and list slot that hold it.
# Measured on SpaceInvaders, the least compressible of our Atari presets: about 1.6 KB of block.
COMPRESSED_FRAME_ESTIMATE = 1_700


def replay_bytes(capacity: int, frame_shape: tuple[int, ...], frame_dtype, stack: int, n_envs: int = 1,
                 compress: bool = False, n_step: int = 1, prioritized: bool = False) -> int:
    """Bytes the buffer will take, computed before allocating anything (an estimate when compressed)."""
    frame_bytes = int(np.prod(frame_shape)) * np.dtype(frame_dtype).itemsize
    if compress:
        frame_bytes = min(frame_bytes, COMPRESSED_FRAME_ESTIMATE)
    per_transition = (stack + 1) * np.dtype(_INDEX_DTYPE).itemsize + 4 + 4 + 1 + 1  # frame numbers, action, reward, flags
    extra = 0
    if n_step > 1:
        extra += capacity * np.dtype(_INDEX_DTYPE).itemsize  # successor rows
    if prioritized:
        extra += 2 * (1 << max(0, (capacity - 1).bit_length())) * 8  # the sum tree, float64
    return frame_ring_size(capacity, stack, n_envs) * frame_bytes + capacity * per_transition + extra


class ArrayFrames:
    """The frame ring as one preallocated array: ``put`` copies a frame in, ``get`` is fancy indexing."""

    def __init__(self, size: int, frame_shape: tuple[int, ...], dtype):
        self.data = np.zeros((size, *frame_shape), dtype=dtype)

    def put(self, slot: int, frame: np.ndarray) -> None:
        self.data[slot] = frame

    def get(self, slots: np.ndarray) -> np.ndarray:
        return self.data[slots]

    def used_bytes(self, filled: int) -> int:
        return self.data.nbytes

    def state(self, filled: int) -> dict[str, np.ndarray]:
        return {"frames": self.data[:filled]}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        saved = arrays["frames"]
        if saved.dtype != self.data.dtype or saved.shape[1:] != self.data.shape[1:] or len(saved) > len(self.data):
            raise ValueError(f"replay frames {saved.dtype}{saved.shape} do not fit {self.data.dtype}{self.data.shape}")
        self.data[: len(saved)] = saved


class CompressedFrames:
    """The frame ring as LZ4 blocks, one per frame: lossless, a few microseconds each way."""

    def __init__(self, size: int, frame_shape: tuple[int, ...], dtype):
        import lz4.block

        self._lz4 = lz4.block
        self.frame_shape, self.dtype = tuple(frame_shape), np.dtype(dtype)
        self.frame_bytes = int(np.prod(frame_shape)) * self.dtype.itemsize
        self.blocks: list[bytes] = [b""] * size

    def put(self, slot: int, frame: np.ndarray) -> None:
        self.blocks[slot] = self._lz4.compress(np.ascontiguousarray(frame, dtype=self.dtype), store_size=False)

    def get(self, slots: np.ndarray) -> np.ndarray:
        """Frames for an array of slots; each distinct slot is decompressed once."""
        unique, inverse = np.unique(slots, return_inverse=True)
        frames = np.empty((len(unique), *self.frame_shape), dtype=self.dtype)
        for i, slot in enumerate(unique.tolist()):
            raw = self._lz4.decompress(self.blocks[slot], uncompressed_size=self.frame_bytes)
            frames[i] = np.frombuffer(raw, dtype=self.dtype).reshape(self.frame_shape)
        return frames[inverse.reshape(slots.shape)]

    def used_bytes(self, filled: int) -> int:
        # Block bytes plus each bytes object's header (33) and its list slot (8).
        return sum(len(b) for b in self.blocks[:filled]) + 41 * len(self.blocks)

    def state(self, filled: int) -> dict[str, np.ndarray]:
        blocks = self.blocks[:filled]
        lengths = np.array([len(b) for b in blocks], dtype=np.int64)
        return {"frame_blocks": np.frombuffer(b"".join(blocks), dtype=np.uint8), "frame_block_lengths": lengths}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        data, lengths = arrays["frame_blocks"].tobytes(), arrays["frame_block_lengths"]
        if len(lengths) > len(self.blocks) or int(lengths.sum()) != len(data):
            raise ValueError("compressed replay frames do not fit this memory")
        ends = np.cumsum(lengths)
        for i, (start, end) in enumerate(zip(np.concatenate([[0], ends[:-1]]).tolist(), ends.tolist())):
            self.blocks[i] = data[start:end]


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(nbytes: int, what: str = "replay memory") -> None:
    """Refuse, before allocating, a buffer larger than the memory available now."""
    available = available_memory_bytes()
    if available is not None and nbytes > available:
        raise QzooError(
            f"the {what} needs {nbytes / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB is available; "
            "lower buffer_size (e.g. --set buffer_size=100000)"
        )


class ReplayBuffer:
    """Circular replay memory for ``n_envs`` streams of transitions (see the module docstring)."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype=np.float32,
        stack: int = 1,
        n_envs: int = 1,
        seed: int | None = None,
        compress: bool = False,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.5,
        priority_eps: float = 1e-6,
    ):
        if stack > 1 and (len(obs_shape) < 1 or obs_shape[0] != stack):
            raise ValueError(f"stacked observations must have shape ({stack}, ...), got {obs_shape}")
        self.capacity = capacity
        self.stack = stack
        self.n_envs = n_envs
        self.obs_shape = tuple(obs_shape)
        self.frame_shape = self.obs_shape[1:] if stack > 1 else self.obs_shape
        self.compress = compress and stack > 1  # vectors are too small to gain from it
        if n_step > 1 and capacity <= n_step * n_envs:
            raise ValueError(f"capacity {capacity} is too small for {n_envs} streams of {n_step}-step windows")
        self.n_step, self.gamma = n_step, gamma
        self.alpha, self.priority_eps = alpha, priority_eps
        self.nbytes = replay_bytes(capacity, self.frame_shape, obs_dtype, stack, n_envs, self.compress, n_step,
                                   prioritized)
        check_fits(self.nbytes)
        self.frame_capacity = frame_ring_size(capacity, stack, n_envs)
        store = CompressedFrames if self.compress else ArrayFrames
        self.frames_dtype = obs_dtype
        self.frames = store(self.frame_capacity, self.frame_shape, obs_dtype)
        self.obs_frames = np.zeros((capacity, stack), dtype=_INDEX_DTYPE)
        self.next_frame = np.zeros(capacity, dtype=_INDEX_DTYPE)
        self.actions = np.zeros(capacity, dtype=np.int32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.truncated = np.zeros(capacity, dtype=np.bool_)
        # n-step: the row of the same stream's next transition, -1 until written.
        self.successor = np.full(capacity, -1, dtype=_INDEX_DTYPE) if n_step > 1 else None
        self._last_row: list[int] = [-1] * n_envs  # each stream's newest row (n-step links)
        self.tree = SumTree(capacity) if prioritized else None
        # Prioritised: each stream's newest rows whose n-step window is not complete yet (priority 0 meanwhile).
        self._waiting: list[list[int]] = [[] for _ in range(n_envs)]
        self.frames_written = 0  # absolute count: frame number n lives at frames[n % frame_capacity]
        self.pos = 0  # next transition row to write
        self.full = False
        # The frame numbers of each stream's current observation; None at an episode start.
        self._current: list[np.ndarray | None] = [None] * n_envs
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def nbytes_used(self) -> int:
        """Bytes held now: the allocation, or for compressed frames the blocks stored so far."""
        if not self.compress:
            return self.nbytes
        index_bytes = self.capacity * ((self.stack + 1) * np.dtype(_INDEX_DTYPE).itemsize + 10)
        return index_bytes + self.frames.used_bytes(min(self.frames_written, self.frame_capacity))

    def _write_frame(self, frame: np.ndarray) -> int:
        number = self.frames_written
        self.frames.put(number % self.frame_capacity, frame)
        self.frames_written += 1
        return number

    def _frames_of(self, obs: np.ndarray) -> np.ndarray:
        """Store the first observation of an episode: each distinct consecutive frame once."""
        if self.stack == 1:
            return np.array([self._write_frame(obs)], dtype=_INDEX_DTYPE)
        numbers = np.empty(self.stack, dtype=_INDEX_DTYPE)
        for i in range(self.stack):
            if i > 0 and np.array_equal(obs[i], obs[i - 1]):
                numbers[i] = numbers[i - 1]
            else:
                numbers[i] = self._write_frame(obs[i])
        return numbers

    def add(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
        env_index: int = 0,
    ) -> None:
        """Store one transition of stream ``env_index``; ``next_obs`` is the true next (or final) observation."""
        current = self._current[env_index]
        if current is None:
            current = self._frames_of(obs)
        newest = self._write_frame(next_obs[-1] if self.stack > 1 else next_obs)
        row = self.pos
        self.obs_frames[row] = current
        self.next_frame[row] = newest
        self.actions[row] = action
        self.rewards[row] = reward
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        if self.successor is not None:
            self.successor[row] = -1
            last = self._last_row[env_index]
            if last >= 0:
                self.successor[last] = row
            self._last_row[env_index] = -1 if terminated or truncated else row
        if self.tree is not None:
            self._admit(row, env_index, terminated or truncated)
        self.pos = (self.pos + 1) % self.capacity
        self.full = self.full or self.pos == 0
        if terminated or truncated:
            self._current[env_index] = None
        else:
            self._current[env_index] = np.append(current[1:], newest)

    def stream_at_start(self, env_index: int) -> bool:
        """Whether stream ``env_index``'s next transition starts an episode (its ``obs`` frames get stored)."""
        return self._current[env_index] is None

    def end_stream(self, env_index: int) -> None:
        """Close stream ``env_index`` mid-episode as a truncation (its producer went away: an Ape-X actor restarted).

        What ``add`` would have stored had the env truncated at the stream's newest transition: that row becomes
        truncated (n-step windows stop there and bootstrap from its next_obs, Pardo et al. 2018), the n-step link
        is cut, waiting rows get the max priority, and the next ``add`` of the stream starts an episode. With
        1-step returns the row is not marked: no 1-step target reads ``truncated``.
        """
        if self.successor is not None and self._last_row[env_index] >= 0:
            self.truncated[self._last_row[env_index]] = True
            self._last_row[env_index] = -1
        if self.tree is not None and self._waiting[env_index]:
            ready, self._waiting[env_index] = self._waiting[env_index], []
            self.tree.update(np.array(ready, dtype=np.int64), np.full(len(ready), self.tree.max_priority))
        self._current[env_index] = None

    def restripe(self, n_envs: int) -> None:
        """Go on with ``n_envs`` streams: every stream is closed as truncated first (``end_stream``: its n-step
        windows stop at its newest row and bootstrap there, its waiting rows get the max priority), so no new
        stream links to an old one. The rows and the frame ring stay as they are (the ring keeps its size; a
        checkpoint records it, so the memory restores to it)."""
        if self.n_step > 1 and self.capacity <= self.n_step * n_envs:
            raise ValueError(f"capacity {self.capacity} is too small for {n_envs} streams of {self.n_step}-step windows")
        for stream in range(self.n_envs):
            self.end_stream(stream)
        self.n_envs = n_envs
        self._current = [None] * n_envs
        self._last_row = [-1] * n_envs
        self._waiting = [[] for _ in range(n_envs)]

    def _admit(self, row: int, env_index: int, episode_end: bool) -> None:
        """Prioritised: rows wait at priority 0 until their n-step window is complete, then get the max
        priority seen so far (Schaul et al. 2016, Algorithm 1, line 6: every transition is replayed once)."""
        waiting = self._waiting[env_index]
        waiting.append(row)
        if episode_end:  # every waiting window ends here
            ready, waiting[:] = list(waiting), []
        elif len(waiting) == self.n_step:  # the oldest waiting row now has its n rows
            ready = [waiting.pop(0)]
        else:
            ready = []
        # One update: the new row's priority (0 while it waits: an overwritten row loses its old one), then the
        # ready rows' max priority (numpy's fancy assignment keeps the last of a repeated index).
        rows = np.array([row, *ready], dtype=np.int64)
        priorities = np.array([0.0, *[self.tree.max_priority] * len(ready)])
        self.tree.update(rows, priorities)

    def update_priorities(self, rows: np.ndarray, td_errors: np.ndarray) -> None:
        """p_i = (|delta_i| + eps)^alpha for the rows of the last batch (Schaul et al. 2016, Algorithm 1, line 12)."""
        self.tree.update(rows, proportional_priorities(td_errors, self.alpha, self.priority_eps))

    def _window(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The n rows of each row's n-step window (B, n), and whether each window is usable (B,).

        Row j + 1 is the successor of row j in the same stream; a missing successor (-1) is fine once the
        window has ended on a termination or truncation before it.
        """
        window = np.empty((len(rows), self.n_step), dtype=_INDEX_DTYPE)
        window[:, 0] = rows
        present = np.ones(len(rows), dtype=bool)  # every row so far was written
        ended = np.zeros(len(rows), dtype=bool)  # an episode end seen among rows 0..j-1
        usable = np.ones(len(rows), dtype=bool)
        for j in range(1, self.n_step):
            previous = window[:, j - 1]
            ended |= self.terminated[previous] | self.truncated[previous]
            nxt = self.successor[previous]
            usable &= ended | (nxt >= 0) | ~present
            present &= nxt >= 0
            window[:, j] = np.where(nxt >= 0, nxt, previous)  # past the end: any live row, ignored
        return window, usable

    def _valid(self, rows: np.ndarray) -> np.ndarray:
        """Rows whose frames are all still in the frame ring."""
        oldest_kept = self.frames_written - self.frame_capacity
        return self.obs_frames[rows, 0] >= oldest_kept

    def _usable(self, rows: np.ndarray) -> np.ndarray:
        usable = self._valid(rows)
        if self.n_step > 1:
            usable &= self._window(rows)[1]
        return usable

    def sample(self, batch_size: int, beta: float = 1.0) -> ReplayBatch:
        """A minibatch of usable transitions: uniform, or proportional to priority with IS weights of exponent ``beta``."""
        if self.tree is None:
            return self._batch(self._uniform_rows(batch_size))
        size = len(self)
        if size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        rows, probabilities = self.tree.sample(batch_size, self.rng)
        invalid = ~self._valid(rows)
        while invalid.any():  # frames overwritten (very short episodes): never draw these rows again
            self.tree.update(rows[invalid], np.zeros(int(invalid.sum())))
            rows, probabilities = self.tree.sample(batch_size, self.rng)
            invalid = ~self._valid(rows)
        return self._batch(rows, importance_weights(probabilities, size, beta))

    def sample_steps(self, n: int, batch_size: int) -> ReplayBatch:
        """``n`` uniform minibatches at once, concatenated (n * batch_size rows): the rows that ``n`` calls of
        ``sample(batch_size)`` draw, in their order, and the generator left in the same state.

        Why it holds: one call ``rng.integers(0, size, n * B)`` gives the same numbers as n calls of B (numpy's
        bounded integers keep no buffer between calls; tests/test_buffer.py pins it). Where a row is unusable
        (a stream's newest n_step - 1 rows, or frames overwritten), ``sample`` redraws it before the next
        minibatch is drawn; then the generator is rewound and the n minibatches are drawn one by one, as n
        calls of ``sample`` would. With ``n_step = 1`` and vector observations that never happens.
        Prioritised minibatches depend on the priorities each gradient step writes: draw them with ``sample``.
        """
        if self.tree is not None:
            raise ValueError("prioritised minibatches depend on the previous step's priorities: use sample()")
        self._check_uniform_draw()
        state = self.rng.bit_generator.state
        rows = self.rng.integers(0, len(self), n * batch_size)
        if not self._usable(rows).all():
            self.rng.bit_generator.state = state
            rows = np.concatenate([self._uniform_rows(batch_size) for _ in range(n)])
        return self._batch(rows)

    def _check_uniform_draw(self) -> None:
        size = len(self)
        if size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        if self.n_step > 1 and size <= self.n_step * self.n_envs and not self._usable(np.arange(size)).any():
            raise ValueError("no transition has a complete n-step window yet")  # else the redraws never end

    def _uniform_rows(self, batch_size: int) -> np.ndarray:
        """``batch_size`` usable rows, uniformly: unusable ones are redrawn until none is left."""
        self._check_uniform_draw()
        rows = self.rng.integers(0, len(self), batch_size)
        invalid = ~self._usable(rows)
        while invalid.any():  # rare: after a run of very short episodes, or a stream's newest n - 1 rows
            rows[invalid] = self.rng.integers(0, len(self), int(invalid.sum()))
            invalid = ~self._usable(rows)
        return rows

    def _batch(self, rows: np.ndarray, weights: np.ndarray | None = None) -> ReplayBatch:
        """The minibatch of these transition rows: n-step returns and stacks rebuilt from the rings."""
        discounts = None
        rewards, terminated, truncated, last = self.rewards[rows], self.terminated[rows], self.truncated[rows], rows
        if self.n_step > 1:
            window, _ = self._window(rows)
            rewards, discounts, offset = n_step_returns(self.rewards[window], self.terminated[window],
                                                        self.truncated[window], self.gamma)
            last = window[np.arange(len(rows)), offset]  # s_{t+k} is this row's next_obs
            terminated, truncated = self.terminated[last], self.truncated[last]
        obs_numbers = self.obs_frames[rows]
        next_numbers = np.concatenate([self.obs_frames[last, 1:], self.next_frame[last, None]], axis=1)
        if self.stack == 1:
            obs_numbers, next_numbers = obs_numbers[:, 0], next_numbers[:, 0]
        return ReplayBatch(
            obs=self.frames.get(obs_numbers % self.frame_capacity),
            actions=self.actions[rows],
            rewards=rewards,
            next_obs=self.frames.get(next_numbers % self.frame_capacity),
            terminated=terminated,
            truncated=truncated,
            discounts=discounts,
            rows=rows if self.tree is not None else None,
            weights=weights,
        )

    # ------------------------------------------------------------------------------ checkpoints

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """What a checkpoint needs to rebuild this memory bit for bit: (JSON-ready numbers, arrays).

        Only the filled part of each ring is returned, as views (no copy): early in a run a
        checkpoint is small, and a full Atari memory is written once, ring by ring.
        """
        rows = len(self)
        arrays = {**self.frames.state(min(self.frames_written, self.frame_capacity)),
                  "obs_frames": self.obs_frames[:rows], "next_frame": self.next_frame[:rows],
                  "actions": self.actions[:rows], "rewards": self.rewards[:rows],
                  "terminated": self.terminated[:rows], "truncated": self.truncated[:rows]}
        numbers = {"capacity": self.capacity, "stack": self.stack, "frames_written": self.frames_written,
                   "frame_capacity": self.frame_capacity,
                   "pos": self.pos, "full": self.full, "rng": self.rng.bit_generator.state,
                   "current": [None if c is None else c.tolist() for c in self._current]}
        if self.successor is not None:
            arrays["successor"] = self.successor[:rows]
            numbers["last_row"] = list(self._last_row)
        if self.tree is not None:
            arrays["priorities"] = self.tree.get(np.arange(rows))
            numbers["max_priority"] = self.tree.max_priority
            numbers["waiting"] = [list(w) for w in self._waiting]
        return numbers, arrays

    def restore(self, numbers: dict, arrays: dict[str, np.ndarray]) -> None:
        """Load ``state()``'s output into this (freshly allocated, same-shaped) memory."""
        if numbers["capacity"] != self.capacity or numbers["stack"] != self.stack:
            raise ValueError(f"replay memory of capacity {numbers['capacity']} and stack {numbers['stack']} "
                             f"does not fit one of capacity {self.capacity} and stack {self.stack}")
        frame_names = ("frames", "frame_blocks", "frame_block_lengths")
        if set(arrays) & set(frame_names) != set(self.frames.state(0)):
            raise ValueError("the saved replay memory was made with another replay_compression")
        made_alike = ("successor" in arrays) == (self.successor is not None) and (
            ("priorities" in arrays) == (self.tree is not None))
        if not made_alike:
            raise ValueError("the saved replay memory was made with another n_step or prioritized_replay")
        if len(numbers["current"]) != self.n_envs:
            raise ValueError(f"the saved replay memory has {len(numbers['current'])} streams, this one {self.n_envs}")
        # The frame ring's size depends on the stream count it was made with; a memory restriped since keeps it,
        # and frame n lives at n % size: restore that size (checkpoints before it was saved: this memory's).
        frame_capacity = int(numbers.get("frame_capacity", self.frame_capacity))
        if frame_capacity != self.frame_capacity:
            self.frame_capacity = frame_capacity
            self.frames = type(self.frames)(frame_capacity, self.frame_shape, self.frames_dtype)
        self.frames.restore({k: v for k, v in arrays.items() if k in frame_names})
        if self.tree is not None:
            priorities = arrays["priorities"]
            self.tree.update(np.arange(len(priorities)), priorities)
            self.tree.max_priority = float(numbers["max_priority"])
            self._waiting = [list(w) for w in numbers["waiting"]]
        if self.successor is not None:
            self._last_row = [int(r) for r in numbers["last_row"]]
        for name, saved in arrays.items():
            if name in frame_names or name == "priorities":
                continue
            target = getattr(self, name)
            if saved.dtype != target.dtype or saved.shape[1:] != target.shape[1:] or len(saved) > len(target):
                raise ValueError(f"replay array {name} {saved.dtype}{saved.shape} does not fit {target.dtype}{target.shape}")
            target[: len(saved)] = saved
        self.frames_written = int(numbers["frames_written"])
        self.pos = int(numbers["pos"])
        self.full = bool(numbers["full"])
        self._current = [None if c is None else np.array(c, dtype=_INDEX_DTYPE) for c in numbers["current"]]
        self.rng.bit_generator.state = numbers["rng"]
