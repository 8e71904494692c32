"""Proportional prioritised replay (Schaul et al. 2016): a sum tree and the maths around it.

Transition i is sampled with probability P(i) = p_i / sum_k p_k, where the priority p_i = (|delta_i| + eps)^alpha
(``proportional_priorities``). The bias of sampling non-uniformly is corrected by the importance-sampling weights
w_i = (N * P(i))^-beta / max_j w_j (``importance_weights``), with beta annealed linearly from beta0 to 1 over
training (``beta_schedule``).

The tree stores numbers only: it knows nothing of frames, so it sits beside the compact frame store of
``buffer.py`` and indexes its transition rows. A row that must not be sampled (an unusable row, one whose
n-step window is not complete yet) simply gets priority 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SumTreeSample(NamedTuple):
    """Shapes (B,), (B,): the sampled leaf indices and their sampling probabilities P(i) = p_i / total."""

    indices: np.ndarray
    probabilities: np.ndarray


class SumTree:
    """A binary tree whose leaves hold priorities and whose inner nodes hold the sum of their two children.

    Layout. One preallocated float64 array ``tree[2 * L]`` with L = ``capacity`` rounded up to a power of two:
    the root is ``tree[1]`` (``tree[0]`` is unused), node k has children 2k and 2k + 1, and leaf i lives at
    ``tree[L + i]``. Leaves past ``capacity`` stay 0 and are never sampled. float64 keeps the root's sum exact
    enough for a million leaves whose priorities differ by orders of magnitude.

    Cost. Memory: 16 * L bytes (16 MiB for a million transitions). ``update`` of B leaves: each of the
    log2(L) levels is one vectorised pass over at most B parents, O(B log N); parents are recomputed from
    their children, never incremented, so rounding errors do not accumulate over millions of updates.
    ``sample`` of B leaves: a vectorised descent from the root, O(B log N).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.leaves = 1 << max(0, (capacity - 1).bit_length())  # L: the smallest power of two >= capacity
        self.depth = self.leaves.bit_length() - 1  # levels below the root
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)
        # Schaul et al. 2016, Algorithm 1, line 6: a new transition gets the largest priority seen so far,
        # so that it is replayed at least once. Starts at 1, as in their and Dopamine's code.
        self.max_priority = 1.0

    @property
    def total(self) -> float:
        """sum_i p_i, the root of the tree."""
        return float(self.tree[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """The priorities p_i of leaves ``indices`` (B,) -> (B,)."""
        return self.tree[self.leaves + np.asarray(indices, dtype=np.int64)]

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set p_i for each leaf in ``indices`` (B,) to ``priorities`` (B,), then recompute the sums above them.

        A leaf named twice takes the last of its priorities (numpy's fancy assignment).
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if indices.shape != priorities.shape:
            raise ValueError(f"{indices.shape[0]} indices but {priorities.shape[0]} priorities")
        if indices.size == 0:
            return
        if indices.min() < 0 or indices.max() >= self.capacity:
            raise IndexError(f"leaf index out of [0, {self.capacity})")
        if not np.all(np.isfinite(priorities)) or priorities.min() < 0:
            raise ValueError("priorities must be finite and >= 0")
        nodes = self.leaves + indices
        self.tree[nodes] = priorities
        self.max_priority = max(self.max_priority, float(priorities.max()))
        for _ in range(self.depth):
            # A parent named twice gets the same sum twice (its children are final): no np.unique (a sort) needed.
            nodes >>= 1
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]

    def find(self, values: np.ndarray) -> np.ndarray:
        """The leaf i whose prefix-sum interval [sum_{k<i} p_k, sum_{k<=i} p_k) holds each value (B,) -> (B,).

        Values in [0, total). At each node: go left if the value is below the left child's sum, else subtract
        that sum and go right. Two guards keep float rounding from ever reaching a zero-priority leaf: a value
        equal to a (zero) left sum goes right, and an empty right subtree is never entered.
        """
        values = np.asarray(values, dtype=np.float64).copy()
        nodes = np.ones(values.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = self.tree[2 * nodes]
            right = self.tree[2 * nodes + 1]
            go_right = (values >= left) & (right > 0)
            values -= np.where(go_right, left, 0.0)
            nodes = 2 * nodes + go_right
        return nodes - self.leaves

    def sample(self, batch_size: int, rng: np.random.Generator) -> SumTreeSample:
        """Stratified proportional sampling (Schaul et al. 2016, Appendix B.2.1).

        The range [0, total) is cut into ``batch_size`` equal segments and one value is drawn uniformly in
        each: u_j = (j + U(0, 1)) * total / B. Each leaf is then drawn with probability p_i / total over the
        batch as a whole, with less variance than B independent draws.
        """
        total = self.total
        if total <= 0:
            raise ValueError("cannot sample from a sum tree whose priorities are all 0")
        segment = total / batch_size
        values = (np.arange(batch_size) + rng.random(batch_size)) * segment
        values = np.minimum(values, np.nextafter(total, 0.0))  # (j + U) * segment may round up to total
        indices = self.find(values)
        return SumTreeSample(indices, self.get(indices) / total)


def proportional_priorities(td_errors: np.ndarray, alpha: float, epsilon: float = 1e-6) -> np.ndarray:
    """p_i = (|delta_i| + epsilon)^alpha (Schaul et al. 2016, section 3.3, 'proportional' variant).

    epsilon > 0 keeps a transition with zero TD error sampleable; alpha = 0 is uniform replay.
    Shapes: td_errors (B,) -> (B,) float64.
    """
    return (np.abs(np.asarray(td_errors, dtype=np.float64)) + epsilon) ** alpha


def importance_weights(probabilities: np.ndarray, size: int, beta: float) -> np.ndarray:
    """w_i = (N * P(i))^-beta / max_j w_j (Schaul et al. 2016, Algorithm 1, line 10).

    N = ``size``, the number of transitions in the memory; the max runs over the minibatch, so the largest
    weight is 1 and the weights only ever scale updates down. Shapes: probabilities (B,) -> (B,) float32.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if size < 1 or probabilities.min() <= 0:
        raise ValueError("importance weights need size >= 1 and probabilities > 0")
    weights = (size * probabilities) ** -beta
    return (weights / weights.max()).astype(np.float32)


def beta_schedule(beta0: float, progress: float) -> float:
    """beta = beta0 + (1 - beta0) * progress: linear from beta0 at the start to 1 at the end of training.

    ``progress`` is the share of training done, clipped to [0, 1]. Schaul et al. 2016 (section 3.4) anneal
    beta to 1 by the end of learning; Hessel et al. 2018 (Table 1) start from beta0 = 0.4.
    """
    progress = min(max(progress, 0.0), 1.0)
    return beta0 + (1.0 - beta0) * progress
