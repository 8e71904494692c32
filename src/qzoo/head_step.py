"""Gradient steps of the Rainbow MLP head by hand: dueling streams, noisy layers, C51 atoms, importance weights.

Why: ``--algo rainbow`` on an MLP (CartPole's preset: two 256x256 streams, 51 atoms, batch 64) spends most of its
step outside the arithmetic: autograd's graph over some 60 operations, ``clip_grad_norm_`` and torch.optim.Adam's
wrapper over 24 parameter tensors (benchmarks/README.md, issue 16 section 3b). ``FlatHead`` computes the same step
with the parameters, gradients and Adam moments in flat buffers (``qzoo.mlp_step.FlatAdam``) and no graph:

    noisy layer  W = mu_w + sigma_w * E,  E = f(eps_out) f(eps_in)^T,  b = mu_b + sigma_b * f(eps_out)
                 (Fortunato et al. 2018, eq. 9-11; the noise is the layer's own, drawn by ``reset_noise``)
    stream       h_0 = x,  h_l = relu(h_{l-1} W_l^T + b_l),  out = h_{L-1} W_L^T + b_L
    dueling      Q = V + A - mean_a A               (Wang et al. 2016, eq. 9; per atom with C51)
    C51 loss     l_i = -sum_k m_ik log softmax(z_i)_k,  loss = mean_i w_i l_i,
                 dloss/dz_i = w_i / B (softmax(z_i) sum_k m_ik - m_ik)       (z_i: the taken action's logits)
    Q loss       l_i = Huber or square of delta_i = Q(s_i, a_i) - y_i, dloss/dQ(s_i, a_i) = w_i / B l'(delta_i)
    backward     dA = dQ - mean_a dQ, dV = sum_a dQ;  per layer dW = dz^T h, db = sum_i dz,
                 dmu = dW, dsigma = dW * E (weights) or db * f(eps_out) (biases); dh = dz W, dz = dh [h > 0]

then clipping and Adam as ``FlatAdam.clip_and_adam``. The online network's passes over s' (Double DQN's a*) and s
share one build of the noisy weights, as ``QNetwork.shared_noisy_weights`` does for autograd. ``load`` and
``store`` copy to and from the network's parameters and its torch.optim.Adam, so checkpoints are unchanged.
Steps agree with autograd and torch.optim.Adam to float32 rounding (tests/test_head_step.py).
``qzoo.fast_updates`` decides when the agent uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qzoo.mlp_step import FlatAdam
from qzoo.networks import NoisyLinear


@dataclass
class _Layer:
    """One linear layer of a stream: views into the flat buffers, and the noise of a ``NoisyLinear``."""

    weight: torch.Tensor  # mu_w, or the plain layer's weight (view of FlatAdam.params)
    bias: torch.Tensor
    grad_weight: torch.Tensor  # views of FlatAdam.grads
    grad_bias: torch.Tensor
    noisy: NoisyLinear | None = None  # its eps_in / eps_out buffers hold f(eps), redrawn by reset_noise
    sigma_weight: torch.Tensor | None = None
    sigma_bias: torch.Tensor | None = None
    grad_sigma_weight: torch.Tensor | None = None
    grad_sigma_bias: torch.Tensor | None = None
    noise: torch.Tensor | None = None  # E = f(eps_out) f(eps_in)^T of the current step
    built_weight: torch.Tensor | None = None  # W and b of the current step (noisy layers)
    built_bias: torch.Tensor | None = None

    def build(self) -> None:
        """A noisy layer's W and b for its current noise (autograd's arithmetic: a product, then a sum)."""
        if self.noisy is None:
            return
        eps_in, eps_out = self.noisy.eps_in, self.noisy.eps_out
        torch.mul(eps_out[:, None], eps_in[None, :], out=self.noise)
        torch.mul(self.sigma_weight, self.noise, out=self.built_weight).add_(self.weight)
        torch.mul(self.sigma_bias, eps_out, out=self.built_bias).add_(self.bias)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's (W, b): the built noisy sum, or the plain layer's own."""
        if self.noisy is None:
            return self.weight, self.bias
        return self.built_weight, self.built_bias


class FlatHead(FlatAdam):
    """The head of a ``QNetwork`` on a flatten body: its streams' weights in flat buffers, and its gradient steps."""

    def __init__(self, streams: list[list[nn.Module]], parameters: list[torch.Tensor], n_actions: int, n_atoms: int,
                 loss: str, max_norm: float):
        """``streams``: the advantage stream's linear layers (``nn.Linear`` or ``NoisyLinear``), then the value
        stream's with dueling; ``parameters``: the network's parameters in its order, which must be the streams'.
        ``loss``: ``c51`` (``n_atoms`` logits per action) or ``huber`` / ``mse`` (one Q value per action)."""
        if loss not in ("c51", "huber", "mse") or (loss == "c51") != (n_atoms > 1):
            raise ValueError(f"loss {loss!r} with {n_atoms} atoms")
        own = [t for layers in streams for m in layers for t in m.parameters()]
        if len(own) != len(parameters) or any(a is not b for a, b in zip(own, parameters)):
            raise ValueError("the streams' parameters are not the network's, in its order")
        super().__init__(parameters, max_norm)
        self.n_actions, self.n_atoms, self.loss = n_actions, n_atoms, loss
        values, grads = iter(self.views(self.params)), iter(self.views(self.grads))
        self.streams = [[self._layer(m, values, grads) for m in layers] for layers in streams]
        self._inputs: list[list[torch.Tensor]] = []  # per stream, h_0 .. h_{L-1} of the last kept forward pass

    @staticmethod
    def _layer(module: nn.Module, values, grads) -> _Layer:
        if not isinstance(module, NoisyLinear):  # nn.Linear: weight, bias
            return _Layer(next(values), next(values), next(grads), next(grads))
        # NoisyLinear's parameter order: weight_mu, weight_sigma, bias_mu, bias_sigma
        w_mu, w_sigma, b_mu, b_sigma = (next(values) for _ in range(4))
        g_w_mu, g_w_sigma, g_b_mu, g_b_sigma = (next(grads) for _ in range(4))
        return _Layer(w_mu, b_mu, g_w_mu, g_b_mu, module, w_sigma, b_sigma, g_w_sigma, g_b_sigma,
                      torch.empty_like(w_mu), torch.empty_like(w_mu), torch.empty_like(b_mu))

    def build(self) -> None:
        """Build every noisy layer's W and b from its current noise: once per step, after ``reset_noise``."""
        for stream in self.streams:
            for layer in stream:
                layer.build()

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, keep: bool = True) -> torch.Tensor:
        """The head's outputs (B, A, K) for features x (B, D) with the weights of the last ``build``: Q values or
        C51 logits, as ``QNetwork.head_outputs``. ``keep``: remember the layer inputs for the backward pass."""
        streams = []
        if keep:
            self._inputs = []
        for stream in self.streams:
            inputs, h = [], x
            for i, layer in enumerate(stream):
                inputs.append(h)
                weight, bias = layer.weights()
                h = torch.addmm(bias, h, weight.t())
                if i < len(stream) - 1:
                    h.relu_()
            streams.append(h)
            if keep:
                self._inputs.append(inputs)
        out = streams[0].view(len(x), self.n_actions, self.n_atoms)
        if len(streams) == 2:  # dueling: Q = V + A - mean_a A, per atom
            out = streams[1].view(len(x), 1, self.n_atoms) + out - out.mean(dim=1, keepdim=True)
        return out

    @torch.no_grad()
    def step(self, out: torch.Tensor, actions: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step from ``out`` = ``outputs(x)`` (B, A, K) of the minibatch, the actions (B,) long, the
        target (C51: m (B, K); Q: y (B,)) and the importance weights (B,) or None. Returns the loss (0-d) and
        the priorities the autograd step writes: C51's per-sample losses, y - Q(s, a) for the Q losses."""
        batch = len(actions)
        rows = torch.arange(batch, device=actions.device)
        taken = out[rows, actions]  # (B, K)
        scale = torch.full((batch,), 1.0 / batch, device=out.device) if weights is None else weights.float() / batch
        if self.loss == "c51":
            log_probs = torch.log_softmax(taken, dim=1)
            per_sample = -(target * log_probs).sum(dim=1)
            grad_taken = torch.exp(log_probs).mul_(target.sum(dim=1, keepdim=True)).sub_(target)
            priorities = per_sample
        else:
            delta = taken.squeeze(1) - target
            per_sample = F.smooth_l1_loss(delta, torch.zeros_like(delta), reduction="none") if self.loss == "huber" \
                else delta.square()
            grad_taken = (delta.clamp(-1.0, 1.0) if self.loss == "huber" else delta * 2.0).unsqueeze(1)
            priorities = -delta
        loss = per_sample.mean() if weights is None else (weights.float() * per_sample).mean()
        grad_out = torch.zeros_like(out)
        grad_out[rows, actions] = grad_taken.mul_(scale[:, None])
        self._backward(grad_out)
        self.clip_and_adam()
        return loss, priorities

    def _backward(self, grad_out: torch.Tensor) -> None:
        """Backpropagate dloss/d(outputs) (B, A, K) through the streams of the last kept ``outputs``."""
        batch = len(grad_out)
        if len(self.streams) == 2:  # Q = V + A - mean_a A: dA = dQ - mean_a dQ, dV = sum_a dQ
            grads = [grad_out - grad_out.mean(dim=1, keepdim=True), grad_out.sum(dim=1)]
        else:
            grads = [grad_out]
        for stream, inputs, dz in zip(self.streams, self._inputs, grads):
            dz = dz.reshape(batch, -1)
            for i in range(len(stream) - 1, -1, -1):
                layer, h = stream[i], inputs[i]
                torch.mm(dz.t(), h, out=layer.grad_weight)
                torch.sum(dz, dim=0, out=layer.grad_bias)
                if layer.noisy is not None:  # W = mu + sigma * E: dsigma = dW * E, and f(eps_out) for the bias
                    torch.mul(layer.grad_weight, layer.noise, out=layer.grad_sigma_weight)
                    torch.mul(layer.grad_bias, layer.noisy.eps_out, out=layer.grad_sigma_bias)
                if i > 0:  # through this layer into the ReLU that made its input
                    dz = torch.ops.aten.threshold_backward(torch.mm(dz, layer.weights()[0]), h, 0.0)
