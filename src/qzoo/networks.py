"""Q-networks: state in, one Q-value per action out (or, for distributional heads, K atoms per action).

``NatureCNN``, ``MLP`` and ``MinAtarCNN`` are the plain networks; ``QNetwork`` puts the same bodies under
a head with the Rainbow switches (dueling, noisy, C51, QR); ``build_q_network`` picks. Every one of them is a
``QFunction``: the agent asks each the same questions (``q_values``, ``head_outputs``, ``reset_noise``,
``plain_mlp_layers``) and never which class it holds. The plain networks keep their own module names
(``net.1.0.weight``, ``features.0.weight``, ...) so that model files and seeded weights stay as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from qzoo.errors import QzooError


class QFunction(nn.Module):
    """What every Q-network offers, here with the answers of a plain network: ``forward`` gives Q (B, A).

    * ``q_values(obs)``: Q(s, .) (B, A), whatever the head; the greedy action is its argmax.
    * ``head_outputs(obs)``: the head's raw outputs (B, A, K) that the loss reads: Q values (K = 1), C51 logits
      or QR quantiles.
    * ``reset_noise()``: new noise in every noisy layer; nothing to do without them.
    * ``mean_weights()``: a block in which noisy layers use their mean weights mu (greedy evaluation);
      ``shared_noisy_weights()``: a block in which each noisy layer builds its noisy weights once, for every
      forward pass inside (one gradient step's passes over s and s'). Both do nothing without noisy layers.
    * ``plain_mlp_layers()``: the linear layers when the network is Flatten -> (Linear, ReLU)* -> Linear on float
      inputs, the network ``qzoo.mlp_step.FlatMLP`` steps by hand (Q values, or QR's A * K quantiles, as its
      outputs); None otherwise.
    * ``head_streams()``: when the body is a flatten (no parameters), the head's linear layers (``nn.Linear`` or
      ``NoisyLinear``) stream by stream: the advantage (or only) stream, then the value stream with dueling; the
      network ``qzoo.head_step.FlatHead`` steps by hand. None otherwise.
    """

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)

    def head_outputs(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs).unsqueeze(2)

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        pass

    @contextlib.contextmanager
    def mean_weights(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def shared_noisy_weights(self) -> Iterator[None]:
        yield

    def plain_mlp_layers(self) -> list[nn.Linear] | None:
        return None

    def head_streams(self) -> list[list[nn.Module]] | None:
        return None


class NatureCNN(QFunction):
    """The network of Mnih et al. (2015, Methods): three convolutions, fully connected layers, |A| outputs.

    Input: (B, stack, 84, 84) uint8 frames, scaled to [0, 1] inside the network so the replay memory
    and the env keep bytes.
    """

    def __init__(self, in_channels: int, n_actions: int, hidden: Sequence[int] = (512,), frame: int = 84):
        super().__init__()
        self.features = nn.Sequential(*_nature_convolutions(in_channels))
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, in_channels, frame, frame)).shape[1]
        self.head = _mlp(n_features, hidden, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(scaled_input(obs, 255.0)))


class MLP(QFunction):
    """Fully connected Q-network for vector observations (flattened)."""

    def __init__(self, n_inputs: int, n_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), _mlp(n_inputs, hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())

    def plain_mlp_layers(self) -> list[nn.Linear]:
        return [m for m in self.net.modules() if isinstance(m, nn.Linear)]

    def head_streams(self) -> list[list[nn.Module]]:
        return [self.plain_mlp_layers()]


def _mlp(n_inputs: int, hidden: Sequence[int], n_outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(n_inputs, size), nn.ReLU()]
        n_inputs = size
    layers.append(nn.Linear(n_inputs, n_outputs))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------ MinAtar's network

MINATAR_GRID = (10, 10)


class MinAtarCNN(QFunction):
    """The DQN network of Young & Tian (2019, section 4): one 3x3 convolution with 16 channels (stride 1),
    a 128-unit hidden layer, |A| outputs; ReLU after each hidden layer.

    Input: (B, C, 10, 10) uint8 grids of 0 and 1 (``qzoo.minatar`` transposes MinAtar's (10, 10, C) bools);
    they are already in [0, 1], so nothing is rescaled.
    """

    def __init__(self, in_channels: int, n_actions: int, hidden: Sequence[int] = (128,), frame: int = 10):
        super().__init__()
        self.features = minatar_body(in_channels)
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, in_channels, frame, frame)).shape[1]
        self.head = _mlp(n_features, hidden, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs))


# ----------------------------------------------------------------------- bodies for QNetwork


def scaled_input(obs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Observations as floats divided by ``scale``: float32, or the autocast dtype when autocast is on.

    Under bfloat16 autocast the bytes go straight to bfloat16: one pass over half the memory instead of a
    float32 copy, a float32 division and the convolution's cast. The values are the same: 0..255 are exact in
    bfloat16 and its division computes in float32 and rounds once (tests/test_dqn.py pins it).
    """
    device = obs.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    x = obs.to(dtype)
    return x / scale if scale != 1.0 else x


class _ToFloat(nn.Module):
    """Cast observations to floats and divide by ``scale`` (255 for bytes of pixels, 1 otherwise): ``scaled_input``."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return scaled_input(obs, self.scale)


def nature_cnn_body(in_channels: int) -> nn.Sequential:
    """``NatureCNN``'s convolutions (Mnih 2015): (B, C, 84, 84) uint8 -> (B, 3136) features."""
    return nn.Sequential(_ToFloat(255.0), *_nature_convolutions(in_channels))


def _nature_convolutions(in_channels: int) -> list[nn.Module]:
    """Mnih et al. (2015, Methods): 32 8x8 filters stride 4, 64 4x4 stride 2, 64 3x3 stride 1, ReLUs."""
    return [
        nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, kernel_size=3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
    ]


def data_efficient_cnn_body(in_channels: int) -> nn.Sequential:
    """Data-efficient Rainbow's two convolutions (van Hasselt et al. 2019, Appendix; as read, see
    docs/rainbow.md): 32 and 64 filters of 5x5, stride 5. (B, C, 84, 84) uint8 -> (B, 64 * 3 * 3 = 576) features."""
    return nn.Sequential(
        _ToFloat(255.0),
        nn.Conv2d(in_channels, 32, kernel_size=5, stride=5),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=5, stride=5),
        nn.ReLU(),
        nn.Flatten(),
    )


def minatar_body(in_channels: int) -> nn.Sequential:
    """``MinAtarCNN``'s convolution (Young & Tian 2019): (B, C, 10, 10) -> (B, 16 * 8 * 8 = 1024) features."""
    return nn.Sequential(_ToFloat(), nn.Conv2d(in_channels, 16, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())


def mlp_body() -> nn.Sequential:
    """Vector observations, flattened: (B, *obs_shape) -> (B, prod(obs_shape))."""
    return nn.Sequential(_ToFloat(), nn.Flatten())


# ------------------------------------------------------------------------------- Rainbow heads


class NoisyLinear(nn.Module):
    """A linear layer with factorised Gaussian noise on its weights (Fortunato et al. 2018, section 3.2).

        y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b                      (eq. 9)
        eps_w[j, i] = f(eps_out[j]) f(eps_in[i]),  eps_b[j] = f(eps_out[j]),  f(x) = sgn(x) sqrt(|x|)   (eq. 10-11)

    with eps_in ~ N(0, 1) of size p = in_features and eps_out ~ N(0, 1) of size q = out_features: p + q
    draws per layer instead of p * q. Initialisation (section 3.2): mu ~ U[-1/sqrt(p), 1/sqrt(p)],
    sigma = sigma0 / sqrt(p) with sigma0 = 0.5.

    The noise stays fixed until ``reset_noise()`` draws a new one, from torch's global generator (or
    ``generator``), so ``torch.manual_seed`` makes it reproducible. In ``eval()`` mode the layer uses mu only
    (a greedy policy of the mean network, for evaluation); in ``train()`` mode, the default, it adds the noise.
    Shapes: (B, p) -> (B, q).

    Cost (benchmarks/README.md, section 3b). The noisy weight matrix mu_w + sigma_w * eps_w takes three
    passes over q * p numbers, more than the product itself for a few rows. So a pass without gradients over at
    most ``FACTORISED_ROWS`` rows (acting on one observation) never builds it: it computes the same sum in the
    factorised form  x mu_w^T + ((x * f(eps_in)) sigma_w^T) * f(eps_out) + mu_b + sigma_b * eps_b  (equal up to
    float rounding). Inside ``shared_noisy_weights`` the matrix is built once for all of the block's passes.
    """

    FACTORISED_ROWS = 8

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.sigma0 = sigma0
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))
        self.shared: tuple[torch.Tensor, torch.Tensor] | None = None  # (weight, bias) in shared_noisy_weights
        self.reset_parameters()
        self.reset_noise()

    def reset_parameters(self) -> None:
        bound = 1.0 / self.in_features**0.5
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(self.sigma0 * bound)
            self.bias_sigma.fill_(self.sigma0 * bound)

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Draw eps_in, then eps_out, from N(0, 1) (the numbers torch.randn draws), and keep f of them."""
        with torch.no_grad():
            for eps in (self.eps_in, self.eps_out):
                eps.normal_(generator=generator)
                torch.mul(eps.sign(), eps.abs().sqrt_(), out=eps)  # f(x) = sgn(x) sqrt(|x|) (section 3.2), in place

    def noisy_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_w + sigma_w * eps_w, mu_b + sigma_b * eps_b) for the current noise (eq. 9-11)."""
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        return weight, self.bias_mu + self.bias_sigma * self.eps_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.linear(x, self.weight_mu, self.bias_mu)
        if self.shared is not None:
            return nn.functional.linear(x, *self.shared)
        if x.shape[0] <= self.FACTORISED_ROWS and not torch.is_grad_enabled():
            mean = nn.functional.linear(x, self.weight_mu, torch.addcmul(self.bias_mu, self.bias_sigma, self.eps_out))
            return torch.addcmul(mean, nn.functional.linear(x * self.eps_in, self.weight_sigma), self.eps_out)
        return nn.functional.linear(x, *self.noisy_weights())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sigma0={self.sigma0}"


def _head_mlp(n_inputs: int, hidden: Sequence[int], n_outputs: int, noisy: bool, sigma0: float = 0.5) -> nn.Sequential:
    """Hidden layers and an output layer, ReLU between; every layer noisy when ``noisy`` (Hessel et al. 2018
    replace all of the head's linear layers)."""
    def linear(n_in: int, n_out: int) -> nn.Module:
        return NoisyLinear(n_in, n_out, sigma0) if noisy else nn.Linear(n_in, n_out)

    layers: list[nn.Module] = []
    for size in hidden:
        layers += [linear(n_inputs, size), nn.ReLU()]
        n_inputs = size
    layers.append(linear(n_inputs, n_outputs))
    return nn.Sequential(*layers)


class QNetwork(QFunction):
    """A body (convolutions, or a flatten) and a head with the Rainbow switches.

    * ``dueling`` (Wang et al. 2016, eq. 9): a value stream V(s) and an advantage stream A(s, a), each with
      its own ``hidden`` layers after the shared body, combined as Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').
      With atoms, the combination is per atom (Hessel et al. 2018, section 3).
    * ``noisy``: every linear layer of the head is a ``NoisyLinear``; ``reset_noise()`` redraws them all.
    * ``distribution``: ``none`` gives Q (B, A); ``c51`` gives probabilities (B, A, K) over the fixed support
      ``support`` = linspace(v_min, v_max, K) (Bellemare et al. 2017), a softmax over atoms of the head's
      logits; ``qr`` gives K quantile values (B, A, K) at levels (2i + 1) / 2K (Dabney et al. 2018).

    ``q_values(obs)`` is always (B, A): Q itself, sum_k p_k z_k for C51, the mean of the quantiles for QR.
    The C51 loss takes a log-softmax of ``head_outputs`` (the logits) rather than a log of ``forward``'s
    probabilities: numerically stable, the same value (``DQN._distributional_loss``).
    """

    def __init__(
        self,
        body: nn.Module,
        n_features: int,
        n_actions: int,
        hidden: Sequence[int],
        *,
        dueling: bool = False,
        noisy: bool = False,
        distribution: str = "none",
        n_atoms: int = 1,
        v_min: float = -10.0,
        v_max: float = 10.0,
        sigma0: float = 0.5,
    ):
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise QzooError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
        if distribution == "c51" and (n_atoms < 2 or v_min >= v_max):
            raise QzooError("c51 needs n_atoms >= 2 and v_min < v_max")
        self.n_actions = n_actions
        self.n_atoms = n_atoms
        self.distribution = distribution
        self.dueling = dueling
        self.noisy = noisy
        self.body = body
        self.advantage = _head_mlp(n_features, hidden, n_actions * n_atoms, noisy, sigma0)
        self.value = _head_mlp(n_features, hidden, n_atoms, noisy, sigma0) if dueling else None
        if distribution == "c51":
            self.register_buffer("support", torch.linspace(v_min, v_max, n_atoms))
        self._noisy: list[NoisyLinear] | None = None

    def head_outputs(self, obs: torch.Tensor) -> torch.Tensor:
        """The head's raw outputs (B, A, K): Q values, C51 logits or quantiles, before any softmax."""
        features = self.body(obs)
        out = self.advantage(features).view(-1, self.n_actions, self.n_atoms)
        if self.value is not None:
            value = self.value(features).view(-1, 1, self.n_atoms)
            out = value + out - out.mean(dim=1, keepdim=True)
        return out

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.head_outputs(obs)
        if self.distribution == "none":
            return out.squeeze(2)
        if self.distribution == "c51":
            return torch.softmax(out, dim=2)
        return out

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q(s, a) (B, A) whatever the head: the greedy action is its argmax."""
        out = self.forward(obs)
        if self.distribution == "c51":
            return (out * self.support).sum(dim=2)
        if self.distribution == "qr":
            return out.mean(dim=2)
        return out

    def plain_mlp_layers(self) -> list[nn.Linear] | None:
        """The head's linear layers when the body is a flatten (no parameters) and the head a plain MLP: no
        dueling streams, no noise, and no softmax over atoms (C51); QR's quantiles are the last layer's outputs."""
        if self.dueling or self.noisy or self.distribution == "c51" or any(True for _ in self.body.parameters()):
            return None
        return [m for m in self.advantage.modules() if isinstance(m, nn.Linear)]

    def head_streams(self) -> list[list[nn.Module]] | None:
        """The streams' linear layers (advantage, then value with dueling) when the body has no parameters."""
        if any(True for _ in self.body.parameters()):
            return None
        return [[m for m in stream if isinstance(m, (nn.Linear, NoisyLinear))]
                for stream in (self.advantage, self.value) if stream is not None]

    def _noisy_layers(self) -> list[NoisyLinear]:
        # Found once: walking the modules costs more than redrawing their noise.
        if self._noisy is None:
            self._noisy = [module for module in self.modules() if isinstance(module, NoisyLinear)]
        return self._noisy

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """New noise in every ``NoisyLinear`` (Fortunato et al. 2018: once per step and per update)."""
        for layer in self._noisy_layers():
            layer.reset_noise(generator)

    @contextlib.contextmanager
    def mean_weights(self) -> Iterator[None]:
        """The noisy layers in ``eval()`` mode (mu only) inside the block, the rest of the network as it was:
        ``nn.Module.eval()`` walks every module, a cost per greedy action."""
        layers = self._noisy_layers()
        modes = [layer.training for layer in layers]
        for layer in layers:
            layer.training = False
        try:
            yield
        finally:
            for layer, mode in zip(layers, modes):
                layer.training = mode

    @contextlib.contextmanager
    def shared_noisy_weights(self) -> Iterator[None]:
        """Each noisy layer's weights built once for the block, with their graph when gradients are on: one
        gradient step's passes over s and s' share the noise and the parameters, so they can share the matrix."""
        layers = [layer for layer in self._noisy_layers() if layer.training]
        for layer in layers:
            layer.shared = layer.noisy_weights()
        try:
            yield
        finally:
            for layer in layers:
                layer.shared = None


def choose_network(obs_shape: tuple[int, ...], obs_dtype, requested: str = "auto") -> str:
    """``minatar`` for MinAtar's (C, 10, 10) uint8 grids, ``cnn`` for stacked uint8 frames (C, H, W),
    ``mlp`` for everything else. (10x10 is too small for the Nature CNN, which needs at least 36x36.)"""
    if requested != "auto":
        return requested
    if len(obs_shape) == 3 and np.dtype(obs_dtype) == np.uint8:
        return "minatar" if tuple(obs_shape[1:]) == MINATAR_GRID else "cnn"
    return "mlp"


DEFAULT_HIDDEN = {"cnn": (512,), "mlp": (64, 64), "minatar": (128,), "de_cnn": (256,)}
FRAME_NETWORKS = ("cnn", "de_cnn")  # networks of stacked Atari frames
DISTRIBUTIONS = ("none", "c51", "qr")


def build_q_network(
    obs_shape: tuple[int, ...],
    obs_dtype,
    n_actions: int,
    kind: str = "auto",
    net_arch: Sequence[int] | None = None,
    *,
    dueling: bool = False,
    noisy: bool = False,
    distribution: str = "none",
    n_atoms: int = 1,
    v_min: float = -10.0,
    v_max: float = 10.0,
    sigma0: float = 0.5,
) -> QFunction:
    """The Q-network for an observation space; sizes from ``net_arch`` (hidden layers).

    With the Rainbow switches at their defaults (no dueling, no noise, ``distribution="none"``) this builds the
    same modules as always (``NatureCNN``, ``MLP``, ``MinAtarCNN``), so the same seed gives the same weights.
    Any switch on gives a ``QNetwork``: the same body, the head changed (see ``QNetwork``).
    """
    kind = choose_network(obs_shape, obs_dtype, kind)
    hidden = tuple(net_arch) if net_arch is not None else DEFAULT_HIDDEN.get(kind, (64, 64))
    if kind in ("cnn", "de_cnn", "minatar") and (len(obs_shape) != 3 or obs_shape[1] != obs_shape[2]):
        raise QzooError(f"the {kind} network needs square frames (C, H, H), got {obs_shape}")
    if distribution not in DISTRIBUTIONS:
        raise QzooError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if distribution == "none" and n_atoms != 1:
        raise QzooError(f"n_atoms = {n_atoms} needs distribution c51 or qr")
    if not (dueling or noisy or distribution != "none" or kind == "de_cnn"):
        if kind == "cnn":
            return NatureCNN(obs_shape[0], n_actions, hidden, obs_shape[1])
        if kind == "minatar":
            return MinAtarCNN(obs_shape[0], n_actions, hidden, obs_shape[1])
        return MLP(int(np.prod(obs_shape)), n_actions, hidden)
    if kind == "cnn":
        body: nn.Module = nature_cnn_body(obs_shape[0])
    elif kind == "de_cnn":
        body = data_efficient_cnn_body(obs_shape[0])
    elif kind == "minatar":
        body = minatar_body(obs_shape[0])
    else:
        body = mlp_body()
    with torch.no_grad():
        n_features = body(torch.zeros(1, *obs_shape, dtype=torch.uint8 if kind != "mlp" else torch.float32)).shape[1]
    return QNetwork(body, n_features, n_actions, hidden, dueling=dueling, noisy=noisy,
                    distribution=distribution, n_atoms=n_atoms, v_min=v_min, v_max=v_max, sigma0=sigma0)


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
