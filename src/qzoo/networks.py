"""Q-networks: state in, one Q-value per action out."""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from qzoo.errors import QzooError


class NatureCNN(nn.Module):
    """The network of Mnih et al. (2015, Methods): three convolutions, fully connected layers, |A| outputs.

    Input: (B, stack, 84, 84) uint8 frames, scaled to [0, 1] inside the network so the replay memory
    and the env keep bytes.
    """

    def __init__(self, in_channels: int, n_actions: int, hidden: Sequence[int] = (512,), frame: int = 84):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, in_channels, frame, frame)).shape[1]
        self.head = _mlp(n_features, hidden, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs.float() / 255.0))


class MLP(nn.Module):
    """Fully connected Q-network for vector observations (flattened)."""

    def __init__(self, n_inputs: int, n_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), _mlp(n_inputs, hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


def _mlp(n_inputs: int, hidden: Sequence[int], n_outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(n_inputs, size), nn.ReLU()]
        n_inputs = size
    layers.append(nn.Linear(n_inputs, n_outputs))
    return nn.Sequential(*layers)


def choose_network(obs_shape: tuple[int, ...], obs_dtype, requested: str = "auto") -> str:
    """``cnn`` for stacked uint8 frames (C, H, W), ``mlp`` for everything else."""
    if requested != "auto":
        return requested
    return "cnn" if len(obs_shape) == 3 and np.dtype(obs_dtype) == np.uint8 else "mlp"


def build_q_network(
    obs_shape: tuple[int, ...], obs_dtype, n_actions: int, kind: str = "auto", net_arch: Sequence[int] | None = None
) -> nn.Module:
    """The Q-network for an observation space; sizes from ``net_arch`` (hidden layers)."""
    kind = choose_network(obs_shape, obs_dtype, kind)
    if kind == "cnn":
        if len(obs_shape) != 3 or obs_shape[1] != obs_shape[2]:
            raise QzooError(f"the CNN needs square stacked frames (C, H, H), got {obs_shape}")
        return NatureCNN(obs_shape[0], n_actions, tuple(net_arch) if net_arch is not None else (512,), obs_shape[1])
    return MLP(int(np.prod(obs_shape)), n_actions, tuple(net_arch) if net_arch is not None else (64, 64))


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A fingerprint of saved weights: equal parameters and names give equal strings."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """The fingerprint of a network's current parameters and buffers."""
    return state_dict_sha256(module.state_dict())
