"""Gradient steps of a plain MLP Q-network by hand: autograd's and Adam's arithmetic in few, large operations.

Why: RL-Zoo's CartPole-v1 preset takes 24,448 gradient steps of a 4-256-256-2 MLP on minibatches of 64 in a
50k-step run, 128 at a time. The matrix products of one step take about 0.17 ms here; autograd, the Python
wrapper of ``torch.optim.Adam`` and ``clip_grad_norm_`` add about 0.9 ms of per-operation overhead
(benchmarks/mlp_floor.py). ``FlatMLP`` keeps the weights, their gradients and Adam's two moments each in one
flat buffer (the layers are views into it), so that clipping is one norm and Adam one fused kernel, and it
computes each step with no graph:

    forward   h_0 = x,  h_l = relu(h_{l-1} W_l^T + b_l) for hidden layers,  Q = h_{L-1} W_L^T + b_L
    loss      mean_i l(delta_i),  delta_i = Q(s_i, a_i) - y_i,  l = Huber (smooth L1, beta 1) or squares
    backward  dQ[i, a_i] = l'(delta_i) / B;  dW_l = dz_l^T h_{l-1},  db_l = sum_i dz_l,
              dh_{l-1} = dz_l W_l,  dz_{l-1} = dh_{l-1} * [h_{l-1} > 0]
    clipping  g <- g * min(1, max_norm / (||g||_2 + 1e-6))               (as torch.nn.utils.clip_grad_norm_)
    Adam      m <- beta1 m + (1 - beta1) g,  v <- beta2 v + (1 - beta2) g^2,
              theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)   (Kingma & Ba 2015,
              in torch.optim.Adam's form: its fused kernel, as torch.optim.Adam(fused=True))

QR-DQN's head (Dabney et al. 2018) is the same MLP with A * N outputs, the N quantiles theta_k(s, a) of each
action; its loss is the quantile Huber loss with kappa 1 (``qzoo.losses.quantile_huber_loss``), whose gradient
is ``qzoo.losses.quantile_huber_parts``'s: only the taken action's N outputs get one, as only Q(s, a) does above.

``FlatMLP.load`` copies the weights and Adam's state in from the ``nn.Linear`` layers and the
``torch.optim.Adam`` that own them, ``store`` copies them back in the optimizer's own layout (``step``,
``exp_avg``, ``exp_avg_sq`` per parameter): either path continues what the other began and checkpoints are
unchanged. Steps agree with autograd and torch.optim.Adam to float32 rounding (tests/test_mlp_step.py).
Of qzoo it imports only the pure ``qzoo.losses.quantile_huber_parts``; ``qzoo.fast_updates`` decides when to use it.

Two of the operations are torch's private ones, protected only by the exact torch pin: ``torch._fused_adam_``
(torch.optim.Adam(fused=True)'s kernel, without its Python wrapper) and ``aten::threshold_backward`` (ReLU's
backward in one operation). ``private_op_problems`` checks that they exist with the signatures written against
(torch 2.13.0); where they do not, the agent takes autograd's steps instead (``qzoo.fast_updates``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from qzoo.losses import quantile_huber_parts


# The private ops FlatMLP.step calls, with the schemas it was written against (torch 2.13.0).
PRIVATE_OPS = {
    "_fused_adam_": "aten::_fused_adam_(Tensor(a!)[] self, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
    "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor[] state_steps, *, float lr, float beta1, "
    "float beta2, float weight_decay, float eps, bool amsgrad, bool maximize, Tensor? grad_scale=None, "
    "Tensor? found_inf=None) -> ()",
    "threshold_backward": "aten::threshold_backward(Tensor grad_output, Tensor self, Scalar threshold) -> Tensor",
}


def private_op_problems() -> list[str]:
    """What is wrong with the private ops ``FlatMLP`` calls in this torch: [] when each is there with its schema."""
    problems = []
    if not callable(getattr(torch, "_fused_adam_", None)):
        problems.append("torch._fused_adam_ is missing")
    for name, expected in PRIVATE_OPS.items():
        try:
            schema = str(getattr(torch.ops.aten, name).default._schema)
        except (AttributeError, RuntimeError) as error:
            problems.append(f"aten::{name} is missing ({type(error).__name__})")
            continue
        if schema != expected:
            problems.append(f"aten::{name} changed signature: {schema} (FlatMLP calls {expected})")
    return problems


def _tensors(linears: Sequence[torch.nn.Linear]) -> list[torch.Tensor]:
    """weight, bias, weight, bias, ...: the layers' parameters in ``parameters()`` order."""
    return [t for m in linears for t in (m.weight, m.bias)]


class FlatAdam:
    """Parameters, their gradients and Adam's two moments as flat float32 buffers, with clipping and Adam's step.

    ``tensors`` are the network's parameters in the optimizer's order; ``views`` gives each of them as a view into
    a flat buffer (the weights, the gradients or a moment), so a step writes the gradients into ``grads``' views,
    then ``clip_and_adam`` clips their norm and takes Adam's step over all of them at once.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], max_norm: float):
        self.max_norm = max_norm
        self.shapes = [t.shape for t in tensors]
        size, device = sum(t.numel() for t in tensors), tensors[0].device
        self.params, self.grads, self.exp_avg, self.exp_avg_sq = (torch.zeros(size, device=device) for _ in range(4))
        self.t = 0  # Adam's step count
        self.lr, self.betas, self.eps = 1e-3, (0.9, 0.999), 1e-8
        self._grad_scale = torch.ones((), device=device)  # the clipping factor's inverse
        self._step_count = torch.zeros((), device=device)  # t as the fused kernel reads it

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """One of the flat buffers as one view per parameter, in the parameters' order and shapes."""
        sizes = [math.prod(shape) for shape in self.shapes]
        return [part.view(shape) for part, shape in zip(flat.split(sizes), self.shapes)]

    @torch.no_grad()
    def load_tensors(self, tensors: Sequence[torch.Tensor], optimizer: torch.optim.Adam) -> None:
        """Copy in the parameters' values and the Adam state ``optimizer`` (one parameter group) keeps for them."""
        torch.cat([t.reshape(-1) for t in tensors], out=self.params)
        group = optimizer.param_groups[0]
        self.lr, self.betas, self.eps = group["lr"], group["betas"], group["eps"]
        states = [optimizer.state.get(t) for t in tensors]
        if not all(states):  # no step taken yet
            self.exp_avg.zero_(), self.exp_avg_sq.zero_()
            self.t = 0
        else:
            torch.cat([s["exp_avg"].reshape(-1) for s in states], out=self.exp_avg)
            torch.cat([s["exp_avg_sq"].reshape(-1) for s in states], out=self.exp_avg_sq)
            self.t = int(states[0]["step"])
        self._guard_moments()

    @torch.no_grad()
    def store_tensors(self, tensors: Sequence[torch.Tensor], optimizer: torch.optim.Adam) -> None:
        """Copy the values back into the parameters and Adam's state into ``optimizer``, in its own layout."""
        for tensor, flat, m, v in zip(tensors, self.views(self.params), self.views(self.exp_avg),
                                      self.views(self.exp_avg_sq)):
            tensor.copy_(flat)
            state = optimizer.state[tensor]
            if not state:
                state.update(step=torch.zeros((), device=tensor.device), exp_avg=torch.empty_like(tensor),
                             exp_avg_sq=torch.empty_like(tensor))
            state["step"].fill_(float(self.t))
            state["exp_avg"].copy_(m)
            state["exp_avg_sq"].copy_(v)

    def clip_and_adam(self) -> None:
        """Clip the norm of ``grads`` and take Adam's step on ``params``."""
        # clip_grad_norm_: g <- g * min(1, max_norm / (||g|| + 1e-6)); the fused kernel divides g by grad_scale.
        norm = torch.linalg.vector_norm(self.grads)
        torch.div(norm.add_(1e-6), self.max_norm, out=self._grad_scale).clamp_(min=1.0)
        self.t += 1
        if self.t % 100 == 0:
            self._guard_moments()
        beta1, beta2 = self.betas
        self._step_count.fill_(float(self.t))
        # torch.optim.Adam(fused=True)'s own kernel, called directly: its step() wrapper costs more than the kernel.
        torch._fused_adam_([self.params], [self.grads], [self.exp_avg], [self.exp_avg_sq], [], [self._step_count],
                           lr=self.lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps, amsgrad=False,
                           maximize=False, grad_scale=self._grad_scale, found_inf=None)

    def _guard_moments(self) -> None:
        """Keep Adam's moments off this CPU's slow paths (measured here, benchmarks/README.md): its vectorised sqrt
        is 10x slower on zeros, and arithmetic 20-35x slower on denormal numbers (below 1.2e-38) in torch's worker
        threads, which the flush-to-zero flag of ``torch.set_flush_denormal`` does not reach. A ReLU unit that never
        fires has v = 0 (a quarter of CartPole's weights); one that stops firing has zero gradients, and its m
        decays by beta1 a step into denormals within a few hundred steps. So every 100 steps (and on ``load``)
        m below 1e-30 in magnitude becomes 0 and v is raised to at least 1e-30 (it cannot decay below 0.9e-30 in
        100 steps). Either changes an update by less than 1e-7 of itself (sqrt(v) < 1e-15 against eps = 1e-8):
        float32's resolution. Without it, Adam took longer than the matrix products of the step."""
        self.exp_avg.masked_fill_(self.exp_avg.abs() < 1e-30, 0.0)
        self.exp_avg_sq.clamp_(min=1e-30)


class FlatMLP(FlatAdam):
    """A plain MLP's weights, gradients and Adam moments as flat float32 buffers, and its gradient steps."""

    def __init__(self, linears: Sequence[torch.nn.Linear], loss: str, max_norm: float, n_quantiles: int = 0):
        """``loss``: ``huber`` or ``mse`` for a Q head (|A| outputs); ``quantile`` for a QR head of
        ``n_quantiles`` quantiles per action (|A| * N outputs, action-major as ``QNetwork.head_outputs``)."""
        if loss not in ("huber", "mse", "quantile"):
            raise ValueError(f"unknown loss {loss!r}")
        if (loss == "quantile") != (n_quantiles > 0) or linears[-1].out_features % max(n_quantiles, 1):
            raise ValueError(f"loss {loss!r} with {n_quantiles} quantiles and {linears[-1].out_features} outputs")
        super().__init__(_tensors(linears), max_norm)
        self.loss, self.n_quantiles = loss, n_quantiles
        self.layers, self.grad_layers = self._layers(self.params), self._layers(self.grads)
        self._inputs: list[torch.Tensor] = []  # h_0 .. h_{L-1} of the last forward pass

    def _layers(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        views = self.views(flat)
        return list(zip(views[0::2], views[1::2]))

    # ------------------------------------------------------------------------------ in and out

    def load(self, linears: Sequence[torch.nn.Linear], optimizer: torch.optim.Adam) -> None:
        """Copy in the layers' weights and the Adam state ``optimizer`` (one parameter group) keeps for them."""
        self.load_tensors(_tensors(linears), optimizer)

    def store(self, linears: Sequence[torch.nn.Linear], optimizer: torch.optim.Adam) -> None:
        """Copy the weights back into the layers and Adam's state into ``optimizer``, in its own layout."""
        self.store_tensors(_tensors(linears), optimizer)

    # ------------------------------------------------------------------------------ steps

    @torch.no_grad()
    def q(self, x: torch.Tensor) -> torch.Tensor:
        """Q (B, A) with the current flat weights; keeps the layer inputs for ``step``'s backward pass."""
        self._inputs = [x]
        for weight, bias in self.layers[:-1]:
            self._inputs.append(torch.addmm(bias, self._inputs[-1], weight.t()).relu_())
        weight, bias = self.layers[-1]
        return torch.addmm(bias, self._inputs[-1], weight.t())

    @torch.no_grad()
    def step(self, x: torch.Tensor, index: torch.Tensor, onehot: torch.Tensor, y: torch.Tensor,
             delta: torch.Tensor) -> None:
        """One gradient step on the minibatch x (B, D) with actions ``index`` (B, 1) long and ``onehot`` (B, A),
        TD targets y (B,); writes delta = Q(s, a) - y into ``delta`` (B,)."""
        q = self.q(x)
        torch.sub(q.gather(1, index).squeeze_(1), y, out=delta)
        slope = delta.clamp(-1.0, 1.0) if self.loss == "huber" else delta * 2.0  # l'(delta)
        self._backward_and_adam(onehot * slope.mul_(1.0 / len(delta)).unsqueeze_(1))  # dLoss/dQ (B, A)

    @torch.no_grad()
    def quantile_step(self, x: torch.Tensor, actions: torch.Tensor, target_quantiles: torch.Tensor,
                      loss: torch.Tensor) -> None:
        """One QR-DQN gradient step on the minibatch x (B, D) with actions (B,) long and target quantiles
        T theta_j (B, N'); writes the step's loss (the batch mean of ``quantile_huber_loss``, kappa 1) into
        ``loss`` (0-d). The taken actions' quantiles get dloss/dtheta = ``quantile_huber_parts``'s gradient / B."""
        batch = len(x)
        out = self.q(x).view(batch, -1, self.n_quantiles)  # (B, A, N)
        rows = torch.arange(batch, device=x.device)
        per_sample, grad_theta = quantile_huber_parts(out[rows, actions], target_quantiles, 1.0)
        torch.mean(per_sample, dim=0, out=loss)
        dz = torch.zeros_like(out)
        dz[rows, actions] = grad_theta.mul_(1.0 / batch)  # the batch mean
        self._backward_and_adam(dz.view(batch, -1))

    def _backward_and_adam(self, dz: torch.Tensor) -> None:
        """Backpropagate dLoss/d(outputs) ``dz`` (B, outputs) through the layers of the last ``q``, clip the
        gradient's norm and take Adam's step."""
        for layer in range(len(self.layers) - 1, -1, -1):
            (weight, _), (grad_weight, grad_bias), h = self.layers[layer], self.grad_layers[layer], self._inputs[layer]
            torch.mm(dz.t(), h, out=grad_weight)
            torch.sum(dz, dim=0, out=grad_bias)
            if layer > 0:  # through this layer into the ReLU that made its input
                dz = torch.ops.aten.threshold_backward(torch.mm(dz, weight), h, 0.0)  # one op: dh * [h > 0]
        self.clip_and_adam()

    def train(self, x: torch.Tensor, actions: torch.Tensor, target: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """K gradient steps, step k on the minibatch x[k] (K, B, D) with actions[k] (K, B) and the TD targets
        ``target(k)`` (B,), asked for just before step k (Double DQN's a* needs that step's weights).
        Returns delta = Q(s, a) - y of every step (K, B)."""
        n_actions = self.shapes[-1][0]
        onehot = F.one_hot(actions, n_actions).to(x.dtype)
        index = actions.unsqueeze(2)
        deltas = torch.empty(actions.shape, device=x.device)
        for k in range(len(actions)):
            self.step(x[k], index[k], onehot[k], target(k), deltas[k])
        return deltas

    def train_quantiles(self, x: torch.Tensor, actions: torch.Tensor,
                        target: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """K QR-DQN gradient steps, step k on x[k] (K, B, D) with actions[k] (K, B) and the target quantiles
        ``target(k)`` (B, N'), asked for just before step k. Returns each step's loss (K,)."""
        losses = torch.empty(len(actions), device=x.device)
        for k in range(len(actions)):
            self.quantile_step(x[k], actions[k], target(k), losses[k])
        return losses


def loss_values(deltas: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean loss of each step (K,) from its TD errors (K, B): what ``qzoo.losses.q_loss`` reported."""
    per_sample = F.smooth_l1_loss if kind == "huber" else F.mse_loss
    return per_sample(deltas, torch.zeros_like(deltas), reduction="none").mean(dim=1)
