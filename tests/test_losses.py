"""The maths against numbers worked out by hand."""

import pytest
import torch

from qzoo.losses import q_loss, soft_update, td_target
from qzoo.schedules import linear_schedule

REWARD = torch.tensor([1.0, 0.0, -1.0])
TERMINATED = torch.tensor([False, True, False])
NEXT_Q_TARGET = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])


def test_dqn_target_takes_the_target_networks_max():
    # y = r + 0.5 * (1 - done) * max_a Q_target(s', a): 1 + 0.5*2, 0 (terminal), -1 + 0.5*5
    y = td_target(REWARD, TERMINATED, NEXT_Q_TARGET, gamma=0.5)
    assert y.tolist() == [2.0, 0.0, 1.5]


def test_double_dqn_target_values_the_online_networks_choice():
    next_q_online = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 9.0]])  # a* = 0, 1, 1
    # Q_target(s', a*) = 1, 4, 0 -> y = 1 + 0.5*1, 0 (terminal), -1 + 0.5*0
    y = td_target(REWARD, TERMINATED, NEXT_Q_TARGET, gamma=0.5, next_q_online=next_q_online)
    assert y.tolist() == [1.5, 0.0, -1.0]


def test_target_carries_no_gradient():
    next_q = NEXT_Q_TARGET.clone().requires_grad_(True)
    y = td_target(REWARD, TERMINATED, next_q, gamma=0.9, next_q_online=next_q)
    assert not y.requires_grad


@pytest.mark.parametrize("kind, expected", [("huber", (0.125 + 1.5) / 2), ("mse", (0.25 + 4.0) / 2)])
def test_losses_by_hand(kind, expected):
    # errors 0.5 and 2: Huber 0.5 * 0.5^2 = 0.125 and 2 - 0.5 = 1.5; MSE 0.25 and 4
    loss = q_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.0]), kind)
    assert loss.item() == pytest.approx(expected)


def test_huber_gradient_is_clipped_to_one():
    q = torch.tensor([10.0, 0.2], requires_grad=True)
    q_loss(q, torch.zeros(2), "huber").backward()
    assert q.grad.tolist() == pytest.approx([1.0 / 2, 0.2 / 2])


def test_linear_schedule():
    assert linear_schedule(1.0, 0.1, 0.5, 0.0) == 1.0
    assert linear_schedule(1.0, 0.1, 0.5, 0.25) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 0.5, 0.5) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 0.5, 0.9) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 0.0, 0.0) == pytest.approx(0.1)


def test_soft_update_copies_or_averages():
    online, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.fill_(2.0)
        target.weight.fill_(0.0)
    soft_update(target, online, tau=0.25)
    assert target.weight.tolist() == [[0.5, 0.5]]
    soft_update(target, online, tau=1.0)
    assert target.weight.tolist() == [[2.0, 2.0]]
