"""The thread-policy matrix: torch threads and OpenMP wait policies, alone and beside one busy process.

    python benchmarks/thread_policy.py        # about 6 minutes on 2 cores; run it alone

Three workloads (RL-Zoo's CartPole DQN on the flat-buffer path, env steps/s; the Rainbow CartPole and DER
SpaceInvaders gradient steps of ``rainbow_levers.py``, ms per step) under four settings: 2 threads with libgomp's
default wait (an empty OMP_WAIT_POLICY), 2 threads passive, 2 threads with a short spin (GOMP_SPINCOUNT=10000),
1 thread; each alone, then beside one ``while True: pass`` process started and killed around the run. Every cell
is a fresh process. The figures chose ``torch_threads: 0`` (qzoo/threads.py; benchmarks/README.md, section 3).
Writes the cells to stdout and, as JSON, to thread_policy.json in the working directory.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

B = sys.executable
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {  # name -> (env additions, threads)
    "spin-2": ({"OMP_WAIT_POLICY": ""}, 2),  # libgomp's default wait (spin GOMP_SPINCOUNT, then sleep)
    "passive-2": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "spin10k-2": ({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"}, 2),
    "any-1": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1),
}
RAINBOW = {"dueling": True, "noisy": True, "distributional": "c51", "prioritized_replay": True,
           "prioritized_replay_alpha": 0.5, "prioritized_replay_beta0": 0.4, "n_step": 3}
WORKLOADS = {
    "cartpole-flat": ["benchmarks/compare_sb3.py", "--worker", "qzoo", "cartpole", "20000", "0", "{}"],
    "cartpole-rainbow-step": ["benchmarks/rainbow_levers.py", "--worker", "cartpole", json.dumps(RAINBOW), "30", "3", "T"],
    "der-step": ["benchmarks/rainbow_levers.py", "--worker", "der", json.dumps({**RAINBOW, "n_step": 20}), "15", "3", "T"],
}


def run(workload, config, load):
    """One cell: the workload's figure under ``config``, alone or beside a busy process."""
    env_add, threads = CONFIGS[config]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_add, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [B] + [str(threads) if a == "T" else a for a in WORKLOADS[workload]]
    burner = subprocess.Popen([B, "-c", "while True: pass"]) if load else None
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    finally:
        if burner: burner.kill(); burner.wait()
    r = json.loads(out.strip().splitlines()[-1])
    return r.get("sps") or r.get("ms")


def main() -> int:
    """Every cell of the matrix, in order, printed as it finishes; then thread_policy.json."""
    results = {}
    for workload in WORKLOADS:
        for load in (False, True):
            for config in CONFIGS:
                v = run(workload, config, load)
                results[f"{workload} {'load' if load else 'alone'} {config}"] = v
                unit = "sps" if "flat" in workload else "ms/step"
                print(f"{time.strftime('%T')} {workload:>22} {'load ' if load else 'alone'} {config:>10}: {v:.2f} {unit}",
                      flush=True)
    Path("thread_policy.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
