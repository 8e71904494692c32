"""The algorithms qzoo trains, by name, and loading any saved agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qzoo.errors import QzooError

ALGOS = ("dqn", "rainbow", "der", "qlearning")


def agent_class(algo: str):
    """The class that trains ``algo``. ``rainbow`` and ``der`` (data-efficient Rainbow) are the DQN agent with the
    switches of presets/rainbow.yml and presets/der.yml: one agent, presets apart."""
    if algo in ("dqn", "rainbow", "der"):
        from qzoo.dqn import DQN

        return DQN
    if algo == "qlearning":
        from qzoo.qlearning import QLearning

        return QLearning
    raise QzooError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")


def load_agent(path: str | Path, env_id: str | None = None) -> Any:
    """A saved agent of any algorithm, told apart by its file: .npz is a Q-table, a zip a Stable-Baselines3 DQN
    (``qzoo.sb3``; ``env_id`` where the zip does not name its env), anything else DQN. ``env_id`` given for a qzoo
    file must be the one it was trained on."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            agent = agent_class("qlearning").load(path)
        elif path.suffix == ".zip" or is_sb3_zip(path):
            from qzoo import sb3

            return sb3.load(path, env_id)
        else:
            # device auto: a model trained on a GPU evaluates on a machine without one.
            agent = agent_class("dqn").load(path, device="auto")
    except UNFIT_MODEL_ERRORS as exc:
        raise unfit_model(path, exc) from None
    if env_id and env_id != agent.env_id:
        raise QzooError(f"{path} holds a {agent.env_id} agent, not {env_id}")
    return agent


def is_sb3_zip(path: Path) -> bool:
    """A zip, told by its first bytes (SB3's format; qzoo's .pt files are zips too, so only without .pt)."""
    import zipfile

    return path.suffix != ".pt" and path.is_file() and zipfile.is_zipfile(path)


# What loading a model file whose contents do not fit its own config raises (weights of another net_arch: a
# RuntimeError from load_state_dict; counters that are not numbers, a missing entry): one line, not a traceback.
UNFIT_MODEL_ERRORS = (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError)


def unfit_model(path: str | Path, exc: BaseException) -> QzooError:
    # load_state_dict says "Error(s) in loading state_dict for MLP:", then what differs: keep both.
    reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
    return QzooError(f"{path} does not fit the config it holds (net_arch, env_id or counters): "
                     f"{type(exc).__name__}{': ' + reason[:200] if reason else ''}")
