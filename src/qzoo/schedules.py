"""Exploration schedules: numbers in, a number out."""

from __future__ import annotations

import math


def linear_schedule(start: float, end: float, fraction: float, progress: float) -> float:
    """Linear from ``start`` to ``end`` over the first ``fraction`` of training, then flat.

    ``progress`` is the share of training done, in [0, 1]. Used for epsilon (Mnih et al. 2015:
    1 -> 0.1 over the first million frames).
    """
    if fraction <= 0 or progress >= fraction:
        return end
    return start + (end - start) * progress / fraction


def exponential_schedule(start: float, end: float, decay_rate: float, episode: int) -> float:
    """end + (start - end) * exp(-decay_rate * episode): the per-episode decay the Hugging Face
    course teaches for tabular Q-learning (unit 2)."""
    return end + (start - end) * math.exp(-decay_rate * episode)
