"""qzoo against Stable-Baselines3 on the same machine, same hyperparameters, alternating runs.

    python benchmarks/compare_sb3.py [--quick] [--json] [--rounds R] [--threads T]

Needs the bench extra (``pip install -e '.[bench]'``). Every measurement runs in a fresh subprocess
(so peak memory is per run and nothing is shared); qzoo and SB3 alternate round by round, and the
median of the rounds is reported. Ratios are what carries across machines, not absolute numbers.

- CartPole-v1: RL-Zoo's DQN hyperparameters (MLP 256x256, batch 64, train_freq 256, gradient_steps
  128, target_update_interval 10, ...), whole runs timed from the first env step to the last.
- Atari: SpaceInvadersNoFrameskip-v4 with RL-Zoo's Atari hyperparameters (Nature CNN, batch 32,
  train_freq 4, ...), timed after learning has started (a short learning_starts fills the memory
  first).
- Both libraries run the same algorithm: SB3's DQN has no Double DQN, so qzoo runs with
  ``double_q: false`` here (its default is true).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CARTPOLE = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                exploration_final_eps=0.04)
ATARI = dict(learning_rate=1e-4, batch_size=32, buffer_size=100_000, target_update_interval=1000, train_freq=4,
             gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01)
ATARI_ENV = "SpaceInvadersNoFrameskip-v4"


# ------------------------------------------------------------------------------------------ workers


def _qzoo(task: str, steps: int, warmup: int, extra: dict) -> dict:
    from qzoo.dqn import DQN

    if task == "cartpole":
        agent = DQN("CartPole-v1", **CARTPOLE, net_arch=[256, 256], n_timesteps=steps, double_q=False, eval_freq=0,
                    seed=0, device="cpu", torch_threads=torch_threads(), **extra)
        start = time.perf_counter()
        agent.learn(steps)
        return {"sps": steps / (time.perf_counter() - start)}
    agent = DQN(ATARI_ENV, **ATARI, learning_starts=warmup, n_timesteps=10_000_000, double_q=False, eval_freq=0,
                seed=0, device="cpu", torch_threads=torch_threads(), **extra)
    agent.learn(warmup + 4)  # fill the memory past learning_starts
    start = time.perf_counter()
    agent.learn(steps)
    return {"sps": steps / (time.perf_counter() - start), "replay_bytes_per_transition": agent.replay_bytes() / ATARI["buffer_size"]}


def _sb3(task: str, steps: int, warmup: int, extra: dict) -> dict:
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(torch_threads())
    if task == "cartpole":
        model = DQN("MlpPolicy", "CartPole-v1", **CARTPOLE, policy_kwargs=dict(net_arch=[256, 256]), seed=0,
                    device="cpu", verbose=0)
        start = time.perf_counter()
        model.learn(steps)
        return {"sps": steps / (time.perf_counter() - start)}
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(ATARI_ENV, n_envs=1, seed=0), n_stack=4)
    model = DQN("CnnPolicy", env, **ATARI, learning_starts=warmup, seed=0, device="cpu", verbose=0)
    model.learn(warmup + 4)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    buffer = model.replay_buffer
    arrays = [buffer.observations, buffer.next_observations, buffer.actions, buffer.rewards, buffer.dones,
              buffer.timeouts]
    per_transition = sum(a.nbytes for a in arrays if a is not None) / buffer.buffer_size
    return {"sps": steps / (time.perf_counter() - start), "replay_bytes_per_transition": per_transition}


def torch_threads() -> int:
    return int(os.environ["BENCH_THREADS"])


def worker(lib: str, task: str, steps: int, warmup: int, extra: dict) -> None:
    result = (_qzoo if lib == "qzoo" else _sb3)(task, steps, warmup, extra)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------ driver


def measure(lib: str, task: str, steps: int, warmup: int, threads: int, extra: dict | None = None) -> dict:
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", lib, task, str(steps), str(warmup), json.dumps(extra or {})]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{lib} {task} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(task: str, steps: int, warmup: int, rounds: int, threads: int, qzoo_extra: dict | None = None) -> dict:
    runs: dict[str, list[dict]] = {"qzoo": [], "sb3": []}
    for r in range(rounds):
        order = ("qzoo", "sb3") if r % 2 == 0 else ("sb3", "qzoo")  # alternate who goes first
        for lib in order:
            runs[lib].append(measure(lib, task, steps, warmup, threads, qzoo_extra if lib == "qzoo" else None))
            print(f"  {task} {lib}: {runs[lib][-1]['sps']:.1f} steps/s", file=sys.stderr, flush=True)
    out = {f"{lib}_sps": round(statistics.median(r["sps"] for r in results), 1) for lib, results in runs.items()}
    out["ratio"] = round(out["qzoo_sps"] / out["sb3_sps"], 2)
    out["peak_rss_mb"] = {lib: round(max(r["peak_rss_mb"] for r in results), 1) for lib, results in runs.items()}
    if "replay_bytes_per_transition" in runs["qzoo"][0]:
        out["replay_bytes_per_transition"] = {lib: results[0]["replay_bytes_per_transition"]
                                              for lib, results in runs.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for development")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both libraries (default 2)")
    parser.add_argument("--only", choices=["cartpole", "atari"], help="run one of the two comparisons")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lib, task, steps, warmup, extra = args.worker
        worker(lib, task, int(steps), int(warmup), json.loads(extra))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    result: dict = {"threads": args.threads, "rounds": rounds}
    if args.only in (None, "cartpole"):
        result["cartpole"] = compare("cartpole", 10_000 if args.quick else 50_000, 0, rounds, args.threads)
    if args.only in (None, "atari"):
        atari = compare("atari", 500 if args.quick else 3_000, 1_000 if args.quick else 2_000, rounds, args.threads)
        per = atari.pop("replay_bytes_per_transition")
        result["atari"] = {**atari, "env_id": ATARI_ENV}
        result["replay_bytes_per_transition"] = {"atari": per["qzoo"], "sb3_atari": per["sb3"]}
    result["peak_rss_mb"] = {task: result[task].pop("peak_rss_mb") for task in ("cartpole", "atari") if task in result}
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
    return 0


def table(result: dict) -> str:
    lines = [f"torch threads: {result['threads']}, rounds: {result['rounds']} (median)", "",
             "| task | qzoo steps/s | SB3 steps/s | ratio |", "|---|---|---|---|"]
    for task in ("cartpole", "atari"):
        if task in result:
            r = result[task]
            lines.append(f"| {task} | {r['qzoo_sps']} | {r['sb3_sps']} | {r['ratio']}x |")
    if "replay_bytes_per_transition" in result:
        rb = result["replay_bytes_per_transition"]
        lines += ["", f"Atari replay memory per transition: qzoo {rb['atari']:.0f} B, SB3 {rb['sb3_atari']:.0f} B"]
    lines += ["", f"peak RSS (MB): {json.dumps(result['peak_rss_mb'])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
