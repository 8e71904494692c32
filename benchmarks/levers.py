"""The Atari gradient step, one lever at a time (Nature CNN, batch 32, Double DQN targets), and acting.

    python benchmarks/levers.py [--threads T] [--steps N] [--dropped]

Each row adds one lever to the row above and reports milliseconds per gradient step (median of 5
repeats of N steps); then the cost of choosing one action (a forward pass on one frame stack).
``--dropped`` also times two levers that were measured and not kept: overlapping env steps with the
gradient step in a thread, and the first convolution as a space-to-depth convolution.
Run it alone on the machine: another busy process changes every number.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import threading
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


def median_ms(step, n: int, repeats: int = 5, warmup: int = 3) -> float:
    """Milliseconds per call of ``step``: the median of ``repeats`` timings of ``n`` calls, after ``warmup``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            step()
        times.append((time.perf_counter() - start) / n * 1000)
    return statistics.median(times)


def overlap_rows(threads: int) -> list[tuple[str, float]]:
    """4 SpaceInvaders env steps with their actions and one gradient step: one after the other, or the env
    steps in this thread (acting with a copy of the network) while another thread takes the gradient step."""
    from qzoo.dqn import DQN

    agent = DQN("SpaceInvadersNoFrameskip-v4", buffer_size=5000, learning_starts=500, eval_freq=0, seed=0,
                device="cpu", torch_threads=threads, double_q=False, n_timesteps=10_000_000)
    agent.learn(600)
    actor = copy.deepcopy(agent.q_net)
    state = {"obs": agent._obs}

    def env_steps(net):
        for _ in range(4):
            with torch.inference_mode():
                action = int(net(torch.as_tensor(state["obs"][None])).argmax())
            state["obs"], _, terminated, truncated, _ = agent.env.step(action)
            if terminated or truncated:
                state["obs"], _ = agent.env.reset()

    def serial():
        agent.train_step()
        env_steps(agent.q_net)

    def overlapped():
        trainer = threading.Thread(target=agent.train_step)
        trainer.start()
        env_steps(actor)
        trainer.join()
        with torch.no_grad():
            for mine, online in zip(actor.parameters(), agent.q_net.parameters()):
                mine.copy_(online)

    return [("4 env steps, then 1 gradient step", median_ms(serial, 20)),
            ("4 env steps in a thread beside 1 gradient step", median_ms(overlapped, 20))]


def space_to_depth_rows() -> list[tuple[str, float]]:
    """Conv 8x8 stride 4 over 4 channels, or the same arithmetic as conv 2x2 over pixel_unshuffle's 64 channels."""
    conv = torch.nn.Conv2d(4, 32, 8, stride=4)
    frames = torch.randint(0, 255, (32, 4, 84, 84), dtype=torch.uint8)

    def plain():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(frames.to(torch.bfloat16) / 255.0).float().sum().backward()

    def space_to_depth():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            weight = conv.weight.reshape(32, 4, 2, 4, 2, 4).permute(0, 1, 3, 5, 2, 4).reshape(32, 64, 2, 2)
            x = F.pixel_unshuffle(frames.to(torch.bfloat16) / 255.0, 4)
            F.conv2d(x, weight, conv.bias).float().sum().backward()

    return [("first convolution, forward and backward", median_ms(plain, 20)),
            ("the same as space-to-depth 2x2 over 64 channels", median_ms(space_to_depth, 20))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dropped", action="store_true", help="also time the levers measured and not kept")
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
        ("+ the target network kept in bfloat16",
         dict(fused_forward=False, bf16=True, target_copy=True), {"fused": True}),
        ("+ channels-last weights and minibatches (qzoo's fast path)",
         dict(fused_forward=False, bf16=True, target_copy=True), {"fused": True}),
    ]
    channels_last_rows = 8  # from this row on, NHWC weights and minibatches
    byte_route_rows = 6  # the rows above "+ pixel bytes cast straight to bfloat16" use the float32 route
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    print("| lever | ms per gradient step | vs plain |\n|---|---|---|")
    base = None
    for i, (name, kwargs, adam) in enumerate(rows):
        torch.manual_seed(0)
        net = (Float32BytesCNN if i < byte_route_rows else NatureCNN)(4, 6)
        layout = torch.channels_last if i >= channels_last_rows else torch.contiguous_format
        net = net.to(memory_format=layout)
        target = copy.deepcopy(net).requires_grad_(False)
        minibatch = tuple(t.contiguous(memory_format=layout) if t.dim() == 4 else t for t in batch)
        step = make_step(net, target, torch.optim.Adam(net.parameters(), lr=1e-4, **adam), minibatch, **kwargs)
        ms = median_ms(step, args.steps)
        base = base or ms
        print(f"| {name} | {ms:.1f} | {base / ms:.2f}x |")

    print("\n| choosing one action (batch 1) | ms |\n|---|---|")
    net, one = NatureCNN(4, 6), batch[0][:1]
    for name, bf16 in (("float32 (qzoo acts so)", False), ("bfloat16 autocast", True)):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ms = median_ms(lambda: net(one).argmax(), 100, warmup=20)
        print(f"| {name} | {ms:.2f} |")
    if args.dropped:
        print("\n| dropped lever | ms |\n|---|---|")
        for name, ms in overlap_rows(args.threads) + space_to_depth_rows():
            print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
