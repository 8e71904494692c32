"""Statistics for comparing runs: bootstrap confidence intervals and the interquartile mean.

Pure numpy functions. The aggregate across environments follows Agarwal et al. (2021), "Deep
Reinforcement Learning at the Edge of the Statistical Precipice" (the rliable library): normalise
each env's scores, pool every run of every env, take the interquartile mean (IQM), and get its
confidence interval from a *stratified* bootstrap that resamples runs within each env.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# Random and human scores of Atari games, as the Atari-57 literature and rliable use them
# (Mnih et al. 2015 and later papers; the table of DQN Zoo / rliable's atari_data).
# Human-normalised = (score - random) / (human - random).
ATARI_RANDOM_HUMAN = {
    "BeamRider": (363.9, 16926.5),
    "Breakout": (1.7, 30.5),
    "Enduro": (0.0, 860.5),
    "Pong": (-20.7, 14.6),
    "Qbert": (163.9, 13455.0),
    "Seaquest": (68.4, 42054.7),
    "SpaceInvaders": (148.0, 1668.7),
}

# Other envs: a uniformly random policy's mean return (measured by qzoo over 200 episodes, seeds
# 0-199) and the env's reward threshold from its Gymnasium registration: 0 = random, 1 = "solved".
REFERENCE_SCORES = {
    "CartPole-v1": (22.7, 475.0),
    "Acrobot-v1": (-497.4, -100.0),
    "MountainCar-v0": (-200.0, -110.0),
    "LunarLander-v3": (-185.5, 200.0),
    "FrozenLake-v1": (0.005, 0.70),
    "Taxi-v3": (-776.4, 8.0),
}


def atari_game(env_id: str) -> str | None:
    """'SpaceInvadersNoFrameskip-v4' or 'ALE/SpaceInvaders-v5' -> 'SpaceInvaders'."""
    name = env_id.split("/")[-1].split("-v")[0].replace("NoFrameskip", "").replace("Deterministic", "")
    return name if name in ATARI_RANDOM_HUMAN else None


def normalise(env_id: str, scores: np.ndarray) -> tuple[np.ndarray, str]:
    """Scores on a common scale, and the scale's name (human-normalised for Atari)."""
    game = atari_game(env_id)
    if game is not None:
        low, high = ATARI_RANDOM_HUMAN[game]
        return (np.asarray(scores, dtype=float) - low) / (high - low), "human-normalised"
    if env_id in REFERENCE_SCORES:
        low, high = REFERENCE_SCORES[env_id]
        return (np.asarray(scores, dtype=float) - low) / (high - low), "random=0, threshold=1"
    return np.asarray(scores, dtype=float), "raw"


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean of ``values``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(x.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def bootstrap_band(
    curves: np.ndarray, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve and its pointwise bootstrap band over runs. ``curves``: (runs, points)."""
    curves = np.asarray(curves, dtype=float)
    mean = curves.mean(axis=0)
    if curves.shape[0] == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, curves.shape[0], (n_boot, curves.shape[0]))
    boot = curves[picks].mean(axis=1)  # (n_boot, points)
    tail = (1 - confidence) / 2 * 100
    return mean, np.percentile(boot, tail, axis=0), np.percentile(boot, 100 - tail, axis=0)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% of the values (the 25% trimmed mean)."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = x.size
    if n == 0:
        return float("nan")
    # Weights of each sorted value in [n/4, 3n/4), fractional at the edges, as scipy's trim_mean
    # would do for n divisible by 4 and smoothly otherwise.
    positions = np.arange(n)
    low, high = n * 0.25, n * 0.75
    weights = np.clip(np.minimum(positions + 1, high) - np.maximum(positions, low), 0, 1)
    return float((x * weights).sum() / weights.sum())


def stratified_bootstrap_iqm(
    scores_by_env: Mapping[str, Sequence[float]], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(IQM, low, high) of normalised scores pooled over envs; runs are resampled within each env."""
    groups = [np.asarray(v, dtype=float) for v in scores_by_env.values() if len(v)]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    point = iqm(np.concatenate(groups))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        boot[b] = iqm(np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups]))
    tail = (1 - confidence) / 2 * 100
    return point, float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (window <= 1: unchanged)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(values.size):
        start = max(0, i + 1 - window)
        out[i] = (cumsum[i + 1] - cumsum[start]) / (i + 1 - start)
    return out
