"""Replay memory: exact stacks, episode boundaries, wrap-around, flags, and its size."""

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
