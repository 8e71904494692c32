"""Synthetic episodes for the replay tests: frames whose pixels are unique numbers, so a stored row can be traced
back to the exact step that made it (shared by test_properties.py and test_apex.py)."""

from collections import deque
from collections.abc import Iterator

import numpy as np


def frame_steps(episodes: list[tuple[int, bool]], stack: int, first_value: int = 1) -> Iterator[tuple]:
    """(obs, next_obs, terminated, truncated, value) for every step of ``episodes``, as the training loop sees them.

    ``episodes`` is a list of (length, truncated at the end). Each frame is a 2x2 array filled with one number,
    counting up from ``first_value``; with ``stack`` > 1 an observation is a FrameStack whose first stack repeats
    the episode's first frame. ``value`` is the number of the step's new frame, unique across the whole call.
    """
    value = first_value
    for length, truncate in episodes:
        frames = deque([np.full((2, 2), value, dtype=np.int32)] * stack, maxlen=stack)
        value += 1
        obs = np.stack(frames) if stack > 1 else frames[-1]
        for t in range(length):
            frames.append(np.full((2, 2), value, dtype=np.int32))
            next_obs = np.stack(frames) if stack > 1 else frames[-1]
            last = t == length - 1
            yield obs, next_obs, last and not truncate, last and truncate, value
            value += 1
            obs = next_obs
