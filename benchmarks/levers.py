"""The Atari gradient step, one lever at a time (Nature CNN, batch 32, Double DQN targets), and acting.

    python benchmarks/levers.py [--threads T] [--steps N]

Each row adds one lever to the row above and reports milliseconds per gradient step (median of 5
repeats of N steps); then the cost of choosing one action (a forward pass on one frame stack).
Run it alone on the machine: another busy process changes every number.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from qzoo.losses import td_target
from qzoo.networks import NatureCNN


class Float32BytesCNN(NatureCNN):
    """qzoo's NatureCNN before ``scaled_input``: bytes -> float32, divided, then cast again by autocast."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs.float() / 255.0))


def bfloat16_copy(net: torch.nn.Module) -> torch.nn.Module:
    """The target network's weights in bfloat16, as ``DQN._target_forward`` keeps them."""
    copy_ = copy.deepcopy(net)
    for param in copy_.parameters():
        param.data = param.data.to(torch.bfloat16)
    return copy_


def make_step(net, target, optimizer, batch, fused_forward: bool, bf16: bool, target_copy: bool = False):
    obs, next_obs, actions, rewards, terminated = batch
    target = bfloat16_copy(target) if target_copy else target

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                next_q_target = target(next_obs).float()
            if fused_forward:
                both = net(torch.cat([obs, next_obs])).float()
                q, next_q_online = both[: len(obs)], both[len(obs):].detach()
            else:
                with torch.no_grad():
                    next_q_online = net(next_obs).float()
                q = net(obs).float()
        y = td_target(rewards, terminated, next_q_target, 0.99, next_q_online)
        loss = F.smooth_l1_loss(q.gather(1, actions[:, None]).squeeze(1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = 32
    batch = (torch.randint(0, 255, (b, 4, 84, 84), dtype=torch.uint8), torch.randint(0, 255, (b, 4, 84, 84), dtype=torch.uint8),
             torch.randint(0, 6, (b,)), torch.randn(b), torch.zeros(b, dtype=torch.bool))
    rows = [
        ("plain: 3 forward passes, Adam (for-each), float32", dict(fused_forward=False, bf16=False), {"foreach": True}),
        ("+ one online forward for Q(s) and Q(s')", dict(fused_forward=True, bf16=False), {"foreach": True}),
        ("+ fused Adam", dict(fused_forward=True, bf16=False), {"fused": True}),
        ("+ bfloat16 autocast", dict(fused_forward=True, bf16=True), {"fused": True}),
        ("float32, fused Adam, separate forward passes (qzoo's plain path)", dict(fused_forward=False, bf16=False), {"fused": True}),
        ("bfloat16, fused Adam, separate forward passes (the fast path until 2026-11-24)",
         dict(fused_forward=False, bf16=True), {"fused": True}),
        ("+ pixel bytes cast straight to bfloat16", dict(fused_forward=False, bf16=True), {"fused": True}),
        ("+ the target network kept in bfloat16 (qzoo's fast path)",
         dict(fused_forward=False, bf16=True, target_copy=True), {"fused": True}),
    ]
    byte_route_rows = 6  # the rows above "+ pixel bytes cast straight to bfloat16" use the float32 route
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    print("| lever | ms per gradient step | vs plain |\n|---|---|---|")
    base = None
    for i, (name, kwargs, adam) in enumerate(rows):
        torch.manual_seed(0)
        net = (Float32BytesCNN if i < byte_route_rows else NatureCNN)(4, 6)
        target = copy.deepcopy(net).requires_grad_(False)
        step = make_step(net, target, torch.optim.Adam(net.parameters(), lr=1e-4, **adam), batch, **kwargs)
        for _ in range(3):
            step()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times.append((time.perf_counter() - start) / args.steps * 1000)
        ms = statistics.median(times)
        base = base or ms
        print(f"| {name} | {ms:.1f} | {base / ms:.2f}x |")

    print("\n| choosing one action (batch 1) | ms |\n|---|---|")
    net, one = NatureCNN(4, 6), batch[0][:1]
    for name, bf16 in (("float32 (qzoo acts so)", False), ("bfloat16 autocast", True)):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for _ in range(20):
                net(one)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(100):
                    net(one).argmax()
                times.append((time.perf_counter() - start) / 100 * 1000)
        print(f"| {name} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
