"""What each Rainbow switch costs per gradient step, against the FLOPs it adds; and qzoo before and after a change.

    python benchmarks/rainbow_levers.py [--task cartpole|der|both] [--threads T] [--steps N] [--rounds R]
                                        [--before SRC] [--json]

Two networks, each the one its preset trains:

- ``cartpole``: RL-Zoo's CartPole-v1 DQN (MLP 256x256, batch 64) with presets/rainbow.yml's switches;
- ``der``: data-efficient Rainbow's SpaceInvaders network (presets/der.yml: ``de_cnn``, 256 hidden units,
  batch 32, n = 20, bfloat16 autocast where the CPU has it).

Rows: plain DQN (Double DQN, uniform 1-step replay), each switch alone on top of it, then all of them (the
preset). For each row: milliseconds per gradient step through ``DQN.train_steps`` on a filled replay memory
(median of R rounds of N steps, and the spread), the matrix-product FLOPs of one step (counted by
``torch.utils.flop_counter``, forward and backward), what the step achieves in GFLOP/s, and the cost of
choosing one action (one forward pass, noise redrawn when noisy). A step whose time is mostly FLOPs is near
its floor on this CPU; one far below the plain row's GFLOP/s pays for operations, not arithmetic.

``--before SRC`` runs every row a second time with another checkout's ``src`` first on the path (for example
``git worktree add /tmp/qzoo-before <commit>`` then ``--before /tmp/qzoo-before/src``), alternating rounds,
and reports the ratio. Every measurement runs in its own subprocess. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SWITCHES = {  # presets/rainbow.yml's switches, one at a time
    "dueling": {"dueling": True},
    "noisy": {"noisy": True},
    "c51": {"distributional": "c51"},
    "per": {"prioritized_replay": True, "prioritized_replay_alpha": 0.5, "prioritized_replay_beta0": 0.4},
    "n_step": {"n_step": 3},
}
TASKS = {
    "cartpole": dict(env="CartPole-v1", config=dict(net_arch=[256, 256], batch_size=64, learning_rate=2.3e-3,
                                                    target_update_interval=10, v_min=0.0, v_max=100.0)),
    "der": dict(env="SpaceInvadersNoFrameskip-v4", config=dict(network="de_cnn", net_arch=[256], batch_size=32,
                                                               learning_rate=1e-4, noisy_sigma0=0.1,
                                                               target_update_interval=2000)),
}


def rows(task: str) -> list[tuple[str, dict]]:
    n_step = 20 if task == "der" else 3
    switches = {**SWITCHES, "n_step": {"n_step": n_step}}
    everything = {k: v for switch in switches.values() for k, v in switch.items()}
    plain = [("plain DQN (Double DQN)", {})]
    if task == "cartpole":  # the plain MLP takes the flat-buffer steps (qzoo.fast_updates); autograd's for reference
        plain.append(("plain DQN, autograd steps", {"manual_mlp_step": False}))
    preset = [("all switches (the preset)", everything)]
    if task == "cartpole":  # the Rainbow MLP head takes the flat steps too (qzoo.head_step)
        preset.append(("all switches, autograd steps", {**everything, "manual_mlp_step": False}))
    return (plain + [(f"+ {name} alone" + (f" (n = {n_step})" if name == "n_step" else ""), switch)
                     for name, switch in switches.items()] + preset)


# ------------------------------------------------------------------------------------------ worker


def worker(task: str, switches: dict, steps: int, rounds: int, threads: int) -> dict:
    """Time one configuration in this process: gradient steps, FLOPs of one step, and acting."""
    import time

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from qzoo.dqn import DQN

    spec = TASKS[task]
    agent = DQN(spec["env"], **spec["config"], **switches, double_q=True, buffer_size=20_000, learning_starts=2_000,
                train_freq=1_000_000, gradient_steps=1, eval_freq=0, seed=0, device="cpu", torch_threads=threads,
                n_timesteps=10_000_000)
    agent.learn(2_000)  # a filled memory; train_freq keeps learn() from stepping, the rounds below do
    agent.train_steps(5)  # warm-up: allocator, oneDNN primitives
    with FlopCounterMode(display=False) as counter:
        agent.train_steps(1)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        agent.train_steps(steps)
        times.append((time.perf_counter() - start) / steps * 1e3)
    obs = agent._obs
    start = time.perf_counter()
    for _ in range(200):
        agent._act(obs, 0.0)
    act_ms = (time.perf_counter() - start) / 200 * 1e3
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times),
            "mflop": counter.get_total_flops() / 1e6, "act_ms": act_ms}


def run_worker(src: str | None, task: str, switches: dict, args) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, __file__, "--worker", task, json.dumps(switches), str(args.steps),
                          str(args.rounds), str(args.threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        task, switches, steps, rounds, threads = sys.argv[2:7]
        print(json.dumps(worker(task, json.loads(switches), int(steps), int(rounds), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["cartpole", "der", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="gradient steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="another checkout's src folder, timed against this one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tasks = ["cartpole", "der"] if args.task == "both" else [args.task]
    results = []
    for task in tasks:
        for name, switches in rows(task):
            row = {"task": task, "row": name, "switches": switches, "now": run_worker(None, task, switches, args)}
            if args.before:
                row["before"] = run_worker(args.before, task, switches, args)
                row["speedup"] = row["before"]["ms"] / row["now"]["ms"]
            results.append(row)
            if not args.json:
                print(format_row(row), flush=True)
    if args.json:
        print(json.dumps({"threads": args.threads, "steps": args.steps, "rounds": args.rounds, "rows": results},
                         indent=1))


def format_row(row: dict) -> str:
    now = row["now"]
    line = (f"{row['task']:>8} | {row['row']:<30} | {now['ms']:7.2f} ms/step ({now['ms_min']:.2f}-{now['ms_max']:.2f})"
            f" | {now['mflop']:7.1f} MFLOP | {now['mflop'] / now['ms']:5.1f} GFLOP/s | act {now['act_ms']:.3f} ms")
    if "before" in row:
        line += f" | before {row['before']['ms']:.2f} ms, act {row['before']['act_ms']:.3f} ms: {row['speedup']:.2f}x"
    return line


if __name__ == "__main__":
    main()
