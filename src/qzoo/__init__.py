"""qzoo: value-based deep reinforcement learning (DQN and its tooling), fast on a laptop CPU."""

__version__ = "0.1.0"

__all__ = ["DQN", "__version__"]


def __getattr__(name):
    # Lazy, so `import qzoo` (and `qzoo --help`) stays fast: torch loads only when the agent is used.
    if name == "DQN":
        from qzoo.dqn import DQN

        return DQN
    raise AttributeError(name)
