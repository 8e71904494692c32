"""Replay memory: exact stacks, episode boundaries, wrap-around, flags, and its size."""

import copy
from collections import deque

import numpy as np
import pytest

from qzoo.buffer import ReplayBuffer, replay_bytes
from qzoo.errors import QzooError

FRAME = (3, 3)


class StackedEpisodes:
    """Drives a buffer the way the training loop does, from frames whose pixels are unique numbers.

    Each transition's action is its id, so a sample can be checked against the stacks that an
    env with FrameStack (first frame repeated at reset) really showed.
    """

    def __init__(self, buffer: ReplayBuffer, stack: int = 4):
        self.buffer, self.stack = buffer, stack
        self.expected: dict[int, tuple[np.ndarray, np.ndarray, bool, bool]] = {}
        self.next_frame_value = 1
        self.ids = 0

    def _frame(self) -> np.ndarray:
        value = self.next_frame_value
        self.next_frame_value += 1
        return np.full(FRAME, value, dtype=np.int32)

    def episode(self, length: int, end: str = "terminated") -> None:
        frames = deque([self._frame()] * self.stack, maxlen=self.stack)
        obs = np.stack(frames)
        for t in range(length):
            frames.append(self._frame())
            next_obs = np.stack(frames)
            terminated = end == "terminated" and t == length - 1
            truncated = end == "truncated" and t == length - 1
            self.buffer.add(obs, self.ids, float(self.ids), next_obs, terminated, truncated)
            self.expected[self.ids] = (obs, next_obs, terminated, truncated)
            self.ids += 1
            obs = next_obs

    def check(self, n: int = 500) -> set[int]:
        batch = self.buffer.sample(n)
        for i, action in enumerate(batch.actions):
            obs, next_obs, terminated, truncated = self.expected[int(action)]
            np.testing.assert_array_equal(batch.obs[i], obs)
            np.testing.assert_array_equal(batch.next_obs[i], next_obs)
            assert batch.rewards[i] == float(action)
            assert batch.terminated[i] == terminated and batch.truncated[i] == truncated
        return {int(a) for a in batch.actions}


def stacked_buffer(capacity: int) -> ReplayBuffer:
    return ReplayBuffer(capacity, (4, *FRAME), np.int32, stack=4, seed=0)


def test_stacks_at_episode_starts_repeat_the_first_frame_and_never_mix_episodes():
    driver = StackedEpisodes(stacked_buffer(1000))
    for length in (1, 2, 3, 7, 5):
        driver.episode(length)
    driver.check()
    # The first transition of episode 2 shows only that episode's first frame, four times.
    obs, _, _, _ = driver.expected[1]
    assert (obs == obs[0]).all()


def test_wrap_around_keeps_only_the_newest_transitions():
    driver = StackedEpisodes(stacked_buffer(50))
    for _ in range(13):
        driver.episode(10)
    assert len(driver.buffer) == 50
    seen = driver.check(2000)
    assert seen <= set(range(80, 130))
    assert len(seen) == 50


def test_truncation_and_termination_stay_separate():
    driver = StackedEpisodes(stacked_buffer(100))
    driver.episode(4, end="truncated")
    driver.episode(4, end="terminated")
    batch = driver.buffer.sample(400)
    by_id = {int(a): (bool(te), bool(tr)) for a, te, tr in zip(batch.actions, batch.terminated, batch.truncated)}
    assert by_id[3] == (False, True)
    assert by_id[7] == (True, False)
    assert by_id[0] == (False, False)
    driver.check()


def test_very_short_episodes_never_sample_overwritten_frames():
    # One-step episodes write more frames than transitions; the frame ring wraps first.
    driver = StackedEpisodes(stacked_buffer(200))
    for _ in range(600):
        driver.episode(1)
    driver.check(3000)


def test_vector_observations_round_trip():
    buffer = ReplayBuffer(20, (2,), np.float32, stack=1, seed=0)
    obs = np.zeros(2, dtype=np.float32)
    for i in range(45):
        next_obs = obs + 1
        done = i % 6 == 5
        buffer.add(obs, i, 1.0, next_obs, done, False)
        obs = np.zeros(2, dtype=np.float32) if done else next_obs
    batch = buffer.sample(200)
    assert batch.obs.shape == (200, 2)
    np.testing.assert_array_equal(batch.next_obs, batch.obs + 1)
    assert set(batch.actions.tolist()) <= set(range(25, 45))


def test_atari_transition_costs_at_most_7_2_kb():
    per_transition = replay_bytes(1_000_000, (84, 84), np.uint8, stack=4) / 1_000_000
    assert 7056 <= per_transition <= 7200
    # Storing obs and next_obs stacks whole would cost 2 * 4 * 84 * 84 = 56,448 bytes.
    assert per_transition < 2 * 4 * 84 * 84 / 7.8


def test_a_buffer_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(QzooError, match="GiB but only"):
        ReplayBuffer(10**9, (4, 84, 84), np.uint8, stack=4)


def test_compressed_frames_give_exactly_the_same_samples_and_survive_a_checkpoint():
    plain, packed = stacked_buffer(300), ReplayBuffer(300, (4, *FRAME), np.int32, stack=4, seed=0, compress=True)
    drivers = [StackedEpisodes(plain), StackedEpisodes(packed)]
    for length in (1, 5, 3, 40, 7, 100, 2, 60, 90, 30):
        for driver in drivers:
            driver.episode(length)
    for a, b in zip(plain.sample(256), packed.sample(256)):  # same seed, same rows, same frames
        np.testing.assert_array_equal(a, b)
    drivers[1].check(2000)
    numbers, arrays = packed.state()
    restored = ReplayBuffer(300, (4, *FRAME), np.int32, stack=4, seed=0, compress=True)
    restored.restore(numbers, arrays)
    for a, b in zip(packed.sample(64), restored.sample(64)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="replay_compression"):
        stacked_buffer(300).restore(numbers, arrays)


def test_compressed_space_invaders_transitions_take_at_most_2_kb():
    from qzoo.dqn import DQN

    agent = DQN("SpaceInvadersNoFrameskip-v4", buffer_size=3000, replay_compression="lz4", learning_starts=10**9,
                eval_freq=0, exploration_fraction=0.0, exploration_final_eps=1.0)  # random play, no training
    agent.learn(3000)
    assert len(agent.buffer) == 3000
    per_transition = agent.buffer.nbytes_used() / 3000
    assert per_transition <= 2000, per_transition
    batch = agent.buffer.sample(32)
    assert batch.obs.shape == (32, 4, 84, 84) and batch.obs.dtype == np.uint8 and batch.obs.max() > 0


# ------------------------------------------------------------------ bursts: n minibatches drawn at once


def test_one_draw_of_n_times_b_integers_is_n_draws_of_b():
    """What ReplayBuffer.sample_steps builds on: numpy's bounded integers keep no buffer between calls."""
    one, many = np.random.default_rng(7), np.random.default_rng(7)
    for size, batch_size in [(1000, 7), (5000, 32), (3, 13)]:
        np.testing.assert_array_equal(one.integers(0, size, 9 * batch_size),
                                      np.concatenate([many.integers(0, size, batch_size) for _ in range(9)]))
        assert one.bit_generator.state == many.bit_generator.state


def streams_with_short_episodes(n_step: int, seed: int = 3) -> ReplayBuffer:
    """Two interleaved streams of episodes of 1 to 6 steps (terminated or truncated), both still running at the
    end: each stream's newest n_step - 1 rows have no complete window yet."""
    buffer = ReplayBuffer(64, (1,), np.float32, n_envs=2, n_step=n_step, gamma=0.5, seed=seed)
    rng = np.random.default_rng(seed)
    left = [0, 0]  # steps left in each stream's episode
    for t in range(40):
        for env in (0, 1):
            left[env] = left[env] or int(rng.integers(1, 7))
            left[env] -= 1
            end = left[env] == 0 and t < 39
            buffer.add(np.array([t], np.float32), t, 1.0, np.array([t + 1], np.float32), end and env == 0,
                       end and env == 1, env_index=env)
    return buffer


@pytest.mark.parametrize("n_step", [1, 3])
def test_a_burst_draws_the_rows_of_n_minibatches_drawn_one_by_one(n_step):
    """Regression (issue 12): a burst drew its n * B rows in one call and redrew the unusable ones after all of
    them, so with n_step > 1 its minibatches were not those of n calls of sample(B)."""
    buffer = streams_with_short_episodes(n_step)
    twin = copy.deepcopy(buffer)
    single_draw = copy.deepcopy(buffer.rng).integers(0, len(buffer), 8 * 16)
    assert buffer._usable(single_draw).all() == (n_step == 1)  # with n_step 3 some rows must be redrawn
    burst = buffer.sample_steps(8, 16)
    steps = [twin.sample(16) for _ in range(8)]
    for name in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "discounts"):
        expected = [getattr(batch, name) for batch in steps]
        if expected[0] is None:
            assert getattr(burst, name) is None
        else:
            np.testing.assert_array_equal(getattr(burst, name), np.concatenate(expected), err_msg=name)
    assert buffer.rng.bit_generator.state == twin.rng.bit_generator.state


def test_prioritised_memories_draw_each_minibatch_after_the_last_priorities():
    buffer = ReplayBuffer(16, (1,), np.float32, prioritized=True, seed=0)
    buffer.add(np.zeros(1, np.float32), 0, 1.0, np.ones(1, np.float32), True, False)
    with pytest.raises(ValueError, match="priorities"):
        buffer.sample_steps(2, 4)


@pytest.mark.parametrize("compress", [False, True])
def test_restriping_closes_every_stream_and_a_checkpoint_restores_the_frame_ring_it_kept(compress):
    """An Ape-X run resumed with another actor count (``ReplayBuffer.restripe``): 2 streams become 5. Each old stream
    ends as a truncation at its newest row, its waiting rows get the max priority, no new stream links to an old
    one; the frame ring keeps its size (made for 2 streams), and a memory made for 5 restores to it exactly."""
    def memory(n_envs: int) -> ReplayBuffer:
        return ReplayBuffer(60, (4, *FRAME), np.uint8, stack=4, n_envs=n_envs, seed=3, compress=compress, n_step=3,
                            prioritized=True)

    def add(buffer: ReplayBuffer, stream: int, value: int, start: bool) -> None:
        obs = np.full((4, *FRAME), value - 1, dtype=np.uint8) if start else None
        buffer.add(obs, value % 4, 1.0, np.full((1, *FRAME), value, dtype=np.uint8), False, False, env_index=stream)

    buffer = memory(2)
    for value in range(1, 150):  # the frame ring wraps; both streams inside one long episode each
        add(buffer, value % 2, value, value <= 2)
    newest = [buffer._last_row[0], buffer._last_row[1]]
    waiting = sorted(buffer._waiting[0] + buffer._waiting[1])
    saved_ring = buffer.frame_capacity
    buffer.restripe(5)
    assert buffer.n_envs == 5 and all(buffer.stream_at_start(s) for s in range(5))
    assert buffer.truncated[newest].all() and buffer.truncated.sum() == 2
    assert (buffer.tree.get(np.array(waiting)) == buffer.tree.max_priority).all()
    assert buffer.frame_capacity == saved_ring != memory(5).frame_capacity
    for value in range(150, 170):  # new streams 3 and 4 start their own episodes
        add(buffer, 3 + value % 2, value, value < 152)
    assert buffer.successor[newest].tolist() == [-1, -1]  # nothing links across the restripe

    restored = memory(5)
    restored.restore(*buffer.state())
    assert restored.frame_capacity == saved_ring
    for x, y in zip(buffer.sample(32), restored.sample(32)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="2 streams, this one 5"):
        memory(5).restore(*memory(2).state())
    with pytest.raises(ValueError, match="too small"):
        memory(2).restripe(20)
