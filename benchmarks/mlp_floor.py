"""How fast can RL-Zoo's CartPole-v1 DQN train on this CPU? The gradient step against its arithmetic floor.

    python benchmarks/mlp_floor.py [--threads T] [--compile]

RL-Zoo's CartPole-v1 preset (MLP 256x256, batch 64, train_freq 256, gradient_steps 128, learning from
env step 1,000) takes (50,000 - 1,000) // 256 * 128 = 24,448 gradient steps in a 50k-step run. This prints,
in milliseconds per gradient step (median of 5 repeats):

- qzoo's gradient steps on a filled replay memory (sampling, Double DQN off as in compare_sb3.py, Huber loss,
  gradient clipping, Adam), as a run takes them: ``DQN.train_steps(128)`` (the flat-buffer burst of
  ``qzoo.mlp_step``) per step, and autograd's ``train_step`` (``manual_mlp_step: false``) for comparison;
- the floor: the eleven matrix products of one step alone (online and target forward passes, backward
  pass), preallocated, no autograd, no optimizer: what no eager PyTorch code can beat;
- with ``--compile``: the same loss and Adam step under ``torch.compile`` (its compile time printed apart).

and the seconds each would spend on 24,448 steps. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import time

import levers  # benchmarks/levers.py, beside this script
import torch
import torch.nn.functional as F

GRADIENT_STEPS = (50_000 - 1_000) // 256 * 128
B, HIDDEN = 64, 256


BURST = 128  # RL-Zoo's gradient_steps


def median_ms(step) -> float:
    return levers.median_ms(step, n=200, warmup=20)


def qzoo_agent(manual: bool):
    from qzoo.dqn import DQN

    agent = DQN("CartPole-v1", learning_rate=2.3e-3, batch_size=B, buffer_size=100_000, learning_starts=1_000,
                net_arch=[HIDDEN, HIDDEN], double_q=False, eval_freq=0, seed=0, device="cpu",
                torch_threads=torch.get_num_threads(), manual_mlp_step=manual)
    agent.learn(5_000)  # fills the memory and trains a while: dead ReLU units and small moments, as in a run
    return agent


def qzoo_burst_ms() -> float:
    agent = qzoo_agent(manual=True)
    return levers.median_ms(lambda: agent.train_steps(BURST), n=4, warmup=2) / BURST


def floor_step():
    """The matrix products of one gradient step, into preallocated outputs."""
    x, w1, w2, w3 = torch.randn(B, 4), torch.randn(HIDDEN, 4), torch.randn(HIDDEN, HIDDEN), torch.randn(2, HIDDEN)
    b, b3 = torch.randn(HIDDEN), torch.randn(2)
    h1, h2, g2, g3 = torch.randn(B, HIDDEN), torch.randn(B, HIDDEN), torch.randn(B, HIDDEN), torch.randn(B, 2)
    o1, o2, o3 = torch.empty(B, HIDDEN), torch.empty(B, HIDDEN), torch.empty(B, 2)
    dw1, dw2, dw3 = torch.empty(HIDDEN, 4), torch.empty(HIDDEN, HIDDEN), torch.empty(2, HIDDEN)

    def step():
        for _ in range(2):  # Q(s) and Q_target(s')
            torch.addmm(b, x, w1.t(), out=o1)
            torch.addmm(b, h1, w2.t(), out=o2)
            torch.addmm(b3, h2, w3.t(), out=o3)
        torch.mm(g3.t(), h2, out=dw3)  # backward: weight gradients and the gradients of the hidden layers
        torch.mm(g3, w3, out=o2)
        torch.mm(g2.t(), h1, out=dw2)
        torch.mm(g2, w2, out=o1)
        torch.mm(g2.t(), x, out=dw1)

    return step


def compiled_step():
    from qzoo.networks import MLP

    net = MLP(4, 2, (HIDDEN, HIDDEN))
    target = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=2.3e-3, foreach=True)
    obs, next_obs = torch.randn(B, 4), torch.randn(B, 4)
    actions, rewards, terminated = torch.randint(0, 2, (B,)), torch.randn(B), torch.zeros(B)

    @torch.compile
    def loss_fn():
        with torch.no_grad():
            y = rewards + 0.99 * (1 - terminated) * target(next_obs).max(1).values
        return F.smooth_l1_loss(net(obs).gather(1, actions[:, None]).squeeze(1), y)

    @torch.compile
    def update():
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()

    def step():
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        update()

    start = time.perf_counter()
    step()
    step()
    return step, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [(f"qzoo DQN.train_steps({BURST}) (flat buffers, one target pass), per step", qzoo_burst_ms()),
            ("qzoo DQN.train_step through autograd (manual_mlp_step: false)",
             median_ms(qzoo_agent(manual=False).train_step)),
            ("floor: the 11 matrix products alone", median_ms(floor_step()))]
    if args.compile:
        step, compile_s = compiled_step()
        rows.append((f"torch.compile'd loss and Adam (compiled in {compile_s:.0f} s)", median_ms(step)))
    print(f"torch {torch.__version__}, {args.threads} threads; {GRADIENT_STEPS:,} gradient steps per 50k-step run\n")
    print("| gradient step | ms | seconds per run |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} | {ms * GRADIENT_STEPS / 1000:.1f} |")


if __name__ == "__main__":
    main()
