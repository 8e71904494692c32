"""qzoo against Stable-Baselines3 on the same machine, same hyperparameters, alternating runs.

    python benchmarks/compare_sb3.py [--quick] [--json] [--rounds R] [--threads T] [--only TASK ...] [--load [N]] [--steps N]

Needs the bench extra (``pip install -e '.[bench]'``: stable-baselines3 and sb3-contrib). Every measurement runs
in a fresh subprocess (so peak memory is per run and nothing is shared); qzoo and SB3 alternate round by round.
Each row gives the median of the rounds with their min and max, and the paired per-round ratios (qzoo's run of
round r over SB3's run of round r: min, median, max). The host (CPU model and flags, cores and affinity, library
versions, thread settings as the workers saw them, load average) is printed with the figures. Ratios are what
carries across machines, not absolute numbers.

Tasks (``--only`` picks some):

- ``cartpole``: CartPole-v1 with RL-Zoo's DQN hyperparameters (MLP 256x256, batch 64, train_freq 256,
  gradient_steps 128, target_update_interval 10, ...), whole runs timed from the first env step to the last.
- ``atari``: SpaceInvadersNoFrameskip-v4 with RL-Zoo's Atari hyperparameters (Nature CNN, batch 32, train_freq 4,
  ...), timed after learning has started (a short learning_starts fills the memory first).
- ``cartpole_qr``, ``atari_qr``: QR-DQN (Dabney et al. 2018) against sb3-contrib's ``QRDQN``. CartPole: RL-Zoo's
  qrdqn.yml entry (the DQN values above, 10 quantiles); Atari: QRDQN's own defaults, which are the paper's (200
  quantiles, lr 5e-5, target update every 10,000 env steps, Adam eps 0.01 / batch size), with the replay memory
  of the ``atari`` row (100,000). Both sides run the same algorithm: the target is r + gamma (1 - done)
  theta_j(s', a*) with a* the argmax of the target network's mean quantile (QRDQN has no Double Q, so qzoo runs
  ``double_q: false``; no dueling, noise, prioritised replay or n-step), and the loss is the quantile Huber loss
  with kappa 1 summed over the online quantiles and averaged over the target ones and the batch (qzoo's
  ``losses.quantile_huber_loss`` and sb3-contrib's ``quantile_huber_loss``; every QR row first checks that the
  two give the same value on random quantiles, ``qr_loss_max_abs_diff``). QRDQN does not clip gradients by
  default and qzoo always does: both clip at norm 10 here (SB3 DQN's default), and both use Adam eps
  0.01 / batch size.
- SB3's DQN has no Double DQN, so qzoo runs ``double_q: false`` in the DQN rows too (its default is true).

Threads: ``--threads T`` gives both libraries T torch threads (and ``OMP_NUM_THREADS=T``); ``--threads 0`` leaves
each to its default (qzoo: ``torch_threads: 0``, ``qzoo.threads``: 1 thread for the MLPs, the free cores for
frame CNNs; SB3: torch's default, one thread per CPU). The default is 2 alone and 0 with ``--load``.

Under load (``--load [N]``, N = 1 by default): each round also measures both libraries beside N CPU-burning
processes (a pure-Python busy loop each, started by this script before the run and killed after it). It reports
both libraries' env steps/s under load, their ratio, and qzoo's loaded throughput as a share of its alone
throughput, raw and per free core: share = (loaded / alone) / ((cores - N) / cores), cores = the CPUs this
process may use. Issue 16's target is a share per free core of at least 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata

CARTPOLE = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                exploration_final_eps=0.04)
ATARI = dict(learning_rate=1e-4, batch_size=32, buffer_size=100_000, target_update_interval=1000, train_freq=4,
             gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01)
ATARI_ENV = "SpaceInvadersNoFrameskip-v4"
# QR-DQN: RL-Zoo's qrdqn.yml for CartPole (its DQN values and n_quantiles 10); QRDQN's defaults for Atari (Dabney
# et al. 2018: 200 quantiles, Adam lr 5e-5 and eps 0.01/32), with this script's 100k replay memory.
CARTPOLE_QR = dict(CARTPOLE, max_grad_norm=10.0)
ATARI_QR = dict(learning_rate=5e-5, batch_size=32, buffer_size=100_000, target_update_interval=10_000, train_freq=4,
                gradient_steps=1, exploration_fraction=0.005, exploration_final_eps=0.01, max_grad_norm=10.0)
QUANTILES = {"cartpole_qr": 10, "atari_qr": 200}
TASKS = ("cartpole", "atari", "cartpole_qr", "atari_qr")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")


# ------------------------------------------------------------------------------------------ workers


def qr_settings(task: str) -> dict:
    """qzoo's switches for sb3-contrib's QRDQN: QR head and loss, no Double Q, nothing else of Rainbow."""
    batch = (CARTPOLE_QR if task == "cartpole_qr" else ATARI_QR)["batch_size"]
    return dict(distributional="qr", n_atoms=QUANTILES[task], double_q=False, dueling=False, noisy=False,
                prioritized_replay=False, n_step=1, adam_eps=0.01 / batch)


def _qzoo(task: str, steps: int, warmup: int, extra: dict) -> dict:
    from qzoo.dqn import DQN

    common = dict(eval_freq=0, seed=0, device="cpu", torch_threads=torch_threads(), double_q=False)
    if task.startswith("cartpole"):
        hyper = CARTPOLE if task == "cartpole" else {**CARTPOLE_QR, **qr_settings(task)}
        agent = DQN("CartPole-v1", **{**common, **hyper, **extra}, net_arch=[256, 256], n_timesteps=steps)
        start = time.perf_counter()
        agent.learn(steps)
        return {"sps": steps / (time.perf_counter() - start), **thread_report()}
    hyper = ATARI if task == "atari" else {**ATARI_QR, **qr_settings(task)}
    agent = DQN(ATARI_ENV, **{**common, **hyper, **extra}, learning_starts=warmup, n_timesteps=10_000_000)
    agent.learn(warmup + 4)  # fill the memory past learning_starts
    start = time.perf_counter()
    agent.learn(steps)
    return {"sps": steps / (time.perf_counter() - start),
            "replay_bytes_per_transition": agent.replay_bytes() / hyper["buffer_size"], **thread_report()}


def _sb3(task: str, steps: int, warmup: int, extra: dict) -> dict:
    import torch

    if torch_threads() > 0:
        torch.set_num_threads(torch_threads())
    if task.endswith("_qr"):
        from sb3_contrib import QRDQN as Algorithm
    else:
        from stable_baselines3 import DQN as Algorithm
    if task.startswith("cartpole"):
        hyper, policy_kwargs = (CARTPOLE, {}) if task == "cartpole" else (CARTPOLE_QR, {"n_quantiles": 10})
        model = Algorithm("MlpPolicy", "CartPole-v1", **hyper, policy_kwargs=dict(net_arch=[256, 256], **policy_kwargs),
                          seed=0, device="cpu", verbose=0)
        start = time.perf_counter()
        model.learn(steps)
        return {"sps": steps / (time.perf_counter() - start), **thread_report()}
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(ATARI_ENV, n_envs=1, seed=0), n_stack=4)
    hyper, policy_kwargs = (ATARI, {}) if task == "atari" else (ATARI_QR, {"n_quantiles": QUANTILES[task]})
    model = Algorithm("CnnPolicy", env, **hyper, policy_kwargs=policy_kwargs or None, learning_starts=warmup, seed=0,
                      device="cpu", verbose=0)
    model.learn(warmup + 4)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    sps = steps / (time.perf_counter() - start)
    buffer = model.replay_buffer
    arrays = [buffer.observations, buffer.next_observations, buffer.actions, buffer.rewards, buffer.dones,
              buffer.timeouts]
    per_transition = sum(a.nbytes for a in arrays if a is not None) / buffer.buffer_size
    return {"sps": sps, "replay_bytes_per_transition": per_transition, **thread_report()}


def qr_loss_check() -> dict:
    """qzoo's and sb3-contrib's quantile Huber losses (kappa 1) on the same random quantiles: the largest difference
    over a few shapes, including errors on both sides of kappa."""
    import torch
    from sb3_contrib.common.utils import quantile_huber_loss as contrib_loss

    from qzoo.losses import quantile_huber_loss

    generator, worst = torch.Generator().manual_seed(0), 0.0
    for batch, n in ((1, 1), (7, 10), (32, 200)):
        quantiles = torch.randn(batch, n, generator=generator) * 3
        target = torch.randn(batch, n, generator=generator) * 3
        ours = quantile_huber_loss(quantiles, target, 1.0).loss
        theirs = contrib_loss(quantiles, target, sum_over_quantiles=True)
        worst = max(worst, abs(ours.item() - theirs.item()) / max(abs(theirs.item()), 1e-12))
    return {"qr_loss_max_rel_diff": worst}


def thread_report() -> dict:
    """What the worker ran with, after its library set itself up."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}


def torch_threads() -> int:
    return int(os.environ["BENCH_THREADS"])


def worker(lib: str, task: str, steps: int, warmup: int, extra: dict) -> None:
    if lib == "check":
        result = qr_loss_check()
    else:
        result = (_qzoo if lib == "qzoo" else _sb3)(task, steps, warmup, extra)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------ the host


def usable_cpus() -> int:
    """CPUs this process may run on (taskset, cgroup cpusets). Computed here, not with qzoo.threads: importing qzoo
    would set OMP_WAIT_POLICY in this driver, and every SB3 worker would inherit it."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def host_info() -> dict:
    return {
        "cpu": cpu_info(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("torch", "stable_baselines3", "sb3_contrib", "numpy",
                                                      "gymnasium", "ale_py")},
        "thread_variables": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
        "load_average_at_start": load_average(),
    }


# ------------------------------------------------------------------------------------------ driver


class Burners:
    """``n`` pure-Python busy loops in their own processes, started before a measured run and killed after it."""

    def __init__(self, n: int):
        self.n, self.processes = n, []

    def __enter__(self) -> "Burners":
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"]) for _ in range(self.n)]
        time.sleep(0.2 if self.n else 0)  # let them reach their loop before the run starts
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def measure(lib: str, task: str, steps: int, warmup: int, threads: int, extra: dict | None = None,
            burners: int = 0) -> dict:
    env = {**os.environ, "BENCH_THREADS": str(threads)}
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--worker", lib, task, str(steps), str(warmup), json.dumps(extra or {})]
    with Burners(burners):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{lib} {task} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "rounds": [round(v, digits) for v in values]}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Both sides' spread, the paired per-round ratios, and the threads the workers reported."""
    qzoo, sb3 = ([r["sps"] for r in runs[lib]] for lib in ("qzoo", "sb3"))
    out = {"qzoo_sps": spread(qzoo), "sb3_sps": spread(sb3),
           "ratio": spread([q / s for q, s in zip(qzoo, sb3)], 2),
           "ratio_of_medians": round(statistics.median(qzoo) / statistics.median(sb3), 2),
           "peak_rss_mb": {lib: round(max(r["peak_rss_mb"] for r in results), 1) for lib, results in runs.items()},
           "threads_seen": {lib: sorted({(r["torch_threads"], r["omp_wait_policy"]) for r in results})
                            for lib, results in runs.items()}}
    if "replay_bytes_per_transition" in runs["qzoo"][0]:
        out["replay_bytes_per_transition"] = {lib: results[0]["replay_bytes_per_transition"]
                                              for lib, results in runs.items()}
    return out


def compare(task: str, steps: int, warmup: int, rounds: int, threads: int, burners: int = 0,
            qzoo_extra: dict | None = None) -> dict:
    """``rounds`` alternating rounds alone; with ``burners``, each round also runs both beside that many busy loops."""
    conditions = ("alone", "load") if burners else ("alone",)
    runs = {c: {"qzoo": [], "sb3": []} for c in conditions}
    for r in range(rounds):
        order = ("qzoo", "sb3") if r % 2 == 0 else ("sb3", "qzoo")  # alternate who goes first
        for condition in conditions:
            for lib in order:
                result = measure(lib, task, steps, warmup, threads, qzoo_extra if lib == "qzoo" else None,
                                 burners if condition == "load" else 0)
                runs[condition][lib].append(result)
                print(f"  {task} {condition} {lib}: {result['sps']:.1f} steps/s", file=sys.stderr, flush=True)
    out = summarise(runs["alone"])
    if burners:
        loaded = summarise(runs["load"])
        out["load"] = {**loaded, **load_shares(out["qzoo_sps"]["median"], loaded["qzoo_sps"]["median"], usable_cpus(),
                                               burners)}
    return out


def load_shares(alone: float, loaded: float, cores: int, burners: int) -> dict:
    """qzoo's loaded throughput as a share of its alone throughput, raw and per free core: with ``burners`` of
    ``cores`` taken, a fair share of the alone figure is (cores - burners) / cores of it."""
    share, free = loaded / alone, cores - burners
    return {"burners": burners, "cores": cores, "qzoo_load_share": round(share, 3),
            "qzoo_share_per_free_core": round(share * cores / free, 3) if free > 0 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for development")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument("--threads", type=int,
                        help="torch threads for both libraries; 0: each library's default (default 2, 0 with --load)")
    parser.add_argument("--only", nargs="+", choices=TASKS, help="run some of the comparisons (default: all)")
    parser.add_argument("--load", type=int, nargs="?", const=1, default=0, metavar="N",
                        help="also measure each run beside N busy processes (default N: 1)")
    parser.add_argument("--steps", type=int, help="timed env steps per run, every task (default: CartPole 50,000, "
                        "Atari 3,000; quick 10,000 and 500)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lib, task, steps, warmup, extra = args.worker
        worker(lib, task, int(steps), int(warmup), json.loads(extra))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    threads = args.threads if args.threads is not None else (0 if args.load else 2)
    tasks = args.only or TASKS
    result: dict = {"host": host_info(), "threads": threads, "rounds": rounds, "load": args.load}
    if any(task.endswith("_qr") for task in tasks):
        result["qr_loss_check"] = measure("check", "qr", 0, 0, threads)
    for task in tasks:
        if task.startswith("cartpole"):
            steps = args.steps or (10_000 if args.quick else 50_000)
            result[task] = {**compare(task, steps, 0, rounds, threads, args.load), "steps": steps}
        else:
            steps = args.steps or (500 if args.quick else 3_000)
            result[task] = {**compare(task, steps, 1_000 if args.quick else 2_000, rounds, threads, args.load),
                            "steps": steps, "env_id": ATARI_ENV}
    result["host"]["load_average_at_end"] = load_average()
    print(json.dumps(result) if args.json else table(result))
    return 0


def cell(s: dict) -> str:
    return f"{s['median']} ({s['min']}-{s['max']})"


def table(result: dict) -> str:
    host = result["host"]
    threads = result["threads"] or "each library's default"
    lines = [f"host: {host['cpu']['model']}, flags {' '.join(host['cpu']['flags']) or 'none of note'}; "
             f"{host['usable_cpus']} usable CPUs of {host['cpu_count']}; load average at start "
             f"{host['load_average_at_start']}, at end {host['load_average_at_end']}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in host["versions"].items()),
             f"torch threads: {threads}; thread variables set: {host['thread_variables'] or 'none'}",
             f"rounds: {result['rounds']}: median (min-max); ratio: per round, qzoo / SB3", "",
             "| task | qzoo env steps/s | SB3 env steps/s | ratio |", "|---|---|---|---|"]
    for task in TASKS:
        if task in result:
            r = result[task]
            lines.append(f"| {task} | {cell(r['qzoo_sps'])} | {cell(r['sb3_sps'])} | {cell(r['ratio'])}x |")
    loaded = [task for task in TASKS if task in result and "load" in result[task]]
    if loaded:
        n = result["load"]
        lines += ["", f"Beside {n} busy process{'es' if n > 1 else ''}:", "",
                  "| task | qzoo env steps/s | SB3 env steps/s | ratio | qzoo loaded / alone | per free core |",
                  "|---|---|---|---|---|---|"]
        for task in loaded:
            r = result[task]["load"]
            lines.append(f"| {task} | {cell(r['qzoo_sps'])} | {cell(r['sb3_sps'])} | {cell(r['ratio'])}x | "
                         f"{r['qzoo_load_share']} | {r['qzoo_share_per_free_core']} |")
    lines.append("")
    for task in TASKS:
        if task in result:
            seen = result[task]["threads_seen"]
            lines.append(f"{task}: workers' (torch threads, OMP_WAIT_POLICY): qzoo {seen['qzoo']}, SB3 {seen['sb3']}; "
                         f"peak RSS (MB) {json.dumps(result[task]['peak_rss_mb'])}")
            if "replay_bytes_per_transition" in result[task]:
                rb = result[task]["replay_bytes_per_transition"]
                lines.append(f"{task}: replay memory per transition: qzoo {rb['qzoo']:.0f} B, SB3 {rb['sb3']:.0f} B")
    if "qr_loss_check" in result:
        lines.append(f"quantile Huber loss, qzoo against sb3-contrib: largest relative difference "
                     f"{result['qr_loss_check']['qr_loss_max_rel_diff']:.1e}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
