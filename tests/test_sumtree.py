"""The sum tree and prioritised replay's maths against numbers worked out by hand, and sampling checked statistically."""

import numpy as np
import pytest

from qzoo.sumtree import SumTree, beta_schedule, importance_weights, proportional_priorities


def tree_of(priorities):
    tree = SumTree(len(priorities))
    tree.update(np.arange(len(priorities)), np.array(priorities, dtype=float))
    return tree


def test_hand_worked_tree_layout():
    # Leaves 1 2 3 4; their parents 1+2 = 3 and 3+4 = 7; the root 10. tree[0] is unused.
    tree = tree_of([1.0, 2.0, 3.0, 4.0])
    assert tree.tree.tolist() == [0.0, 10.0, 3.0, 7.0, 1.0, 2.0, 3.0, 4.0]
    assert tree.total == 10.0
    assert tree.max_priority == 4.0


def test_update_recomputes_the_sums_above_a_leaf():
    tree = tree_of([1.0, 2.0, 3.0, 4.0])
    tree.update(np.array([1, 2]), np.array([0.5, 0.0]))  # leaves 1 0.5 0 4 -> parents 1.5, 4 -> root 5.5
    assert tree.tree.tolist() == [0.0, 5.5, 1.5, 4.0, 1.0, 0.5, 0.0, 4.0]
    assert tree.max_priority == 4.0  # the largest priority ever seen, not the current max


def test_capacity_not_a_power_of_two_pads_with_empty_leaves():
    tree = tree_of([1.0, 2.0, 3.0])
    assert tree.leaves == 4 and tree.depth == 2
    assert tree.tree.tolist() == [0.0, 6.0, 3.0, 3.0, 1.0, 2.0, 3.0, 0.0]
    with pytest.raises(IndexError):
        tree.update(np.array([3]), np.array([1.0]))


def test_find_walks_the_prefix_sums():
    # Prefix-sum intervals of 1 2 3 4: [0, 1) -> 0, [1, 3) -> 1, [3, 6) -> 2, [6, 10) -> 3.
    tree = tree_of([1.0, 2.0, 3.0, 4.0])
    values = np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.99])
    assert tree.find(values).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_find_never_lands_on_a_zero_priority_leaf():
    tree = tree_of([0.0, 1.0, 0.0, 2.0, 0.0])
    # 0 sits at the edge of the empty leaf 0; a value at (or rounded past) the total must not reach leaf 4.
    values = np.array([0.0, 0.5, 1.0, np.nextafter(3.0, 0.0), 3.0, 1e9])
    assert tree.find(values).tolist() == [1, 1, 3, 3, 3, 3]


def test_sample_is_stratified_one_draw_per_segment():
    # Four segments of 10 / 4 = 2.5: [0, 2.5) holds leaves 0 and 1, [2.5, 5) leaves 1 and 2,
    # [5, 7.5) leaves 2 and 3, [7.5, 10) leaf 3 only.
    tree = tree_of([1.0, 2.0, 3.0, 4.0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        indices, probabilities = tree.sample(4, rng)
        assert indices[0] in (0, 1) and indices[1] in (1, 2) and indices[2] in (2, 3) and indices[3] == 3
        assert probabilities.tolist() == pytest.approx((np.array([1.0, 2.0, 3.0, 4.0])[indices] / 10).tolist())


def test_sampling_proportions_match_priorities_chi_square():
    # 100,000 draws from priorities 1 2 3 4 0 (a padded, non-power-of-two tree). Pearson's chi-square with
    # 3 degrees of freedom is below 16.27 with probability 0.999 when P(i) = p_i / 10; uniform sampling
    # would give about 10,000. The seed is fixed, so the test is deterministic.
    priorities = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    tree = tree_of(priorities)
    rng = np.random.default_rng(123)
    counts = np.zeros(5)
    for _ in range(3125):
        indices, _ = tree.sample(32, rng)
        counts += np.bincount(indices, minlength=5)
    assert counts.sum() == 100_000
    assert counts[4] == 0
    expected = 100_000 * priorities[:4] / priorities.sum()
    chi_square = float(((counts[:4] - expected) ** 2 / expected).sum())
    assert chi_square < 16.27


def test_sums_stay_exact_after_many_random_updates():
    rng = np.random.default_rng(7)
    tree = SumTree(1000)
    priorities = np.zeros(1000)
    for _ in range(200):
        indices = rng.integers(0, 1000, 32)
        values = rng.random(32) ** 3
        tree.update(indices, values)
        priorities[indices] = values  # numpy's last-write-wins, as in the tree
    assert np.array_equal(tree.get(np.arange(1000)), priorities)
    assert tree.total == pytest.approx(priorities.sum(), rel=1e-12)
    # Every inner node is the sum of its children, parents named twice in one update included (no np.unique).
    inner = np.arange(1, tree.leaves)
    assert np.array_equal(tree.tree[inner], tree.tree[2 * inner] + tree.tree[2 * inner + 1])


def test_update_rejects_negative_or_nan_priorities():
    tree = SumTree(4)
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError):
        tree.sample(2, np.random.default_rng(0))  # all priorities 0


def test_proportional_priorities_by_hand():
    # (|delta| + eps)^alpha with eps 0: |-4|^0.5 = 2, 0^0.5 = 0, 9^0.5 = 3; alpha 0 gives 1 everywhere.
    assert proportional_priorities(np.array([-4.0, 0.0, 9.0]), alpha=0.5, epsilon=0.0).tolist() == [2.0, 0.0, 3.0]
    assert proportional_priorities(np.array([-4.0, 0.0]), alpha=0.0).tolist() == [1.0, 1.0]


def test_importance_weights_by_hand():
    # N = 10, P = 0.1 0.2 0.4: N * P = 1 2 4; beta 0.5 -> 1, 1/sqrt(2), 1/2, max 1; beta 1 -> 1, 1/2, 1/4.
    probabilities = np.array([0.1, 0.2, 0.4])
    assert importance_weights(probabilities, 10, 0.5).tolist() == pytest.approx([1.0, 2**-0.5, 0.5])
    assert importance_weights(probabilities, 10, 1.0).tolist() == pytest.approx([1.0, 0.5, 0.25])
    # N = 5, P = 0.4 0.1: N * P = 2, 0.5 -> w = 1/2, 2 -> divided by the max 2: 1/4, 1.
    assert importance_weights(np.array([0.4, 0.1]), 5, 1.0).tolist() == pytest.approx([0.25, 1.0])
    # beta 0: no correction.
    assert importance_weights(probabilities, 10, 0.0).tolist() == [1.0, 1.0, 1.0]


def test_beta_schedule_is_linear_to_one():
    assert beta_schedule(0.4, 0.0) == pytest.approx(0.4)
    assert beta_schedule(0.4, 0.5) == pytest.approx(0.7)
    assert beta_schedule(0.4, 1.0) == pytest.approx(1.0)
    assert beta_schedule(0.4, 1.5) == pytest.approx(1.0)


def test_a_one_leaf_tree_is_its_own_root():
    tree = tree_of([2.0])
    assert tree.depth == 0 and tree.total == 2.0
    indices, probabilities = tree.sample(3, np.random.default_rng(0))
    assert indices.tolist() == [0, 0, 0] and probabilities.tolist() == [1.0, 1.0, 1.0]
