"""Checked by mypy in tests/test_agent.py (not collected by pytest): both agents are ``qzoo.agent.Agent``s."""

from qzoo.agent import Agent
from qzoo.dqn import DQN
from qzoo.qlearning import QLearning


def every_agent(dqn: DQN, table: QLearning) -> list[Agent]:
    return [dqn, table]
