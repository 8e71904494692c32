"""Ape-X on Ray (qzoo.distributed): what one machine can measure honestly, and the projection it bounds.

    python benchmarks/distributed.py [--json] [--steps N] [--rounds R]

On 2 cores nothing can show a distributed speed-up: the learner and the actors share the same cores. So this
measures the parts (each alone, each round in a fresh process), and the whole at 1 and 2 actors against the
single-process run of the same preset on the same machine:

- actor: env steps/s of one ``apex.Actor`` (its env, its Q-network acting epsilon-greedily, chunk building), no Ray;
- learner: gradient steps/s of the learner's agent on a filled replay memory (no actors), and the env steps/s
  that bounds at the preset's ratio (train_freq / gradient_steps env steps per gradient step);
- ingest: MB/s of chunks through Ray's object store (a remote actor's chunk fetched by the driver), and
  ``apex.ingest``'s MB/s into the replay memory;
- end to end: ``qzoo train`` env steps/s with actors = 1 and 2 (a throwaway local Ray on 127.0.0.1) against
  actors = 0, the overhead of the distributed path as their ratio.

CartPole-v1 with RL-Zoo's preset for the whole runs; SpaceInvadersNoFrameskip-v4 for the actor and ingest rows
(a chunk of 84x84 frames is what crosses the network on Atari). Medians over the rounds, with their spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHUNK = 200  # env steps per chunk (actor_chunk_steps' default)


def _cartpole_config(**extra):
    from qzoo import config as cfg
    from qzoo.envs import family

    config, _ = cfg.resolve("CartPole-v1", family("CartPole-v1"),
                            overrides={"eval_freq": 0, "checkpoint_freq": 0, "torch_threads": 1, "seed": 0, **extra})
    return config


def measure(part: str, steps: int) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np

    from qzoo import apex

    if part in ("actor_cartpole", "actor_atari"):
        env_id = "CartPole-v1" if part == "actor_cartpole" else "SpaceInvadersNoFrameskip-v4"
        from qzoo import config as cfg
        from qzoo.envs import family

        config, _ = cfg.resolve(env_id, family(env_id), overrides={"buffer_size": 1000, "seed": 0})
        actor = apex.Actor(env_id, config, 1, 2)
        actor.collect(CHUNK)  # warm up: env reset, first forward pass
        start = time.perf_counter()
        chunks = [actor.collect(CHUNK) for _ in range(max(steps // CHUNK, 1))]
        seconds = time.perf_counter() - start
        nbytes = sum(chunk.nbytes for chunk in chunks)
        return {"env_steps_per_s": CHUNK * len(chunks) / seconds, "bytes_per_env_step": nbytes / (CHUNK * len(chunks))}
    if part == "learner":
        from qzoo.dqn import DQN

        config = _cartpole_config(n_timesteps=10**7)
        agent = DQN("CartPole-v1", config)
        agent.learn(config.learning_starts + 1)  # fills the memory past learning_starts
        start = time.perf_counter()
        agent.train_steps(steps)
        updates = steps / (time.perf_counter() - start)
        phase = config.train_freq if config.gradient_steps == -1 else config.gradient_steps
        return {"updates_per_s": updates, "env_steps_per_s_bound": updates * config.train_freq / phase}
    if part == "ingest":
        import ray

        from qzoo import config as cfg
        from qzoo.buffer import ReplayBuffer
        from qzoo.distributed import connect
        from qzoo.envs import family

        env_id = "SpaceInvadersNoFrameskip-v4"
        config, _ = cfg.resolve(env_id, family(env_id), overrides={"buffer_size": 1000, "seed": 0})
        connect(ray, None, 1)
        try:
            remote = ray.remote(num_cpus=1)(apex.Actor).remote(env_id, config, 1, 2)
            warm = ray.get(remote.collect.remote(CHUNK))  # warm up (ingested below, untimed: the stream starts there)
            fetch_seconds, nbytes, chunks = 0.0, 0, []
            for _ in range(max(steps // CHUNK, 1)):
                ref = remote.collect.remote(CHUNK)
                ray.wait([ref], fetch_local=False)  # produced; time only the transfer into this process
                start = time.perf_counter()
                chunk = ray.get(ref)
                fetch_seconds += time.perf_counter() - start
                nbytes += chunk.nbytes
                chunks.append(chunk)
        finally:
            ray.shutdown()
        buffer = ReplayBuffer((len(chunks) + 1) * CHUNK + 10, (4, 84, 84), np.uint8, stack=4, seed=0)
        apex.ingest(buffer, warm, 0)
        start = time.perf_counter()
        for chunk in chunks:
            apex.ingest(buffer, chunk, 0)
        ingest_seconds = time.perf_counter() - start
        return {"object_store_mb_per_s": nbytes / fetch_seconds / 1e6, "ingest_mb_per_s": nbytes / ingest_seconds / 1e6,
                "chunk_mb": nbytes / len(chunks) / 1e6}
    if part.startswith("train_actors_"):
        from qzoo import training

        actors = int(part.rsplit("_", 1)[1])
        extra = {"actors": actors} if actors else {}
        plan = training.prepare("CartPole-v1", overrides={"n_timesteps": steps, "eval_freq": 0, "checkpoint_freq": 0,
                                                          "torch_threads": 1, "seed": 0, **extra})
        run = training.start(plan, f"/tmp/qzoo-bench-distributed-{os.getpid()}", progress=False)
        start = time.perf_counter()
        result = run.learn()
        return {"env_steps_per_s": result.report["steps"] / (time.perf_counter() - start)}
    raise SystemExit(f"unknown part {part}")


PARTS = {"actor_cartpole": 20_000, "actor_atari": 2_000, "learner": 2_000, "ingest": 2_000,
         "train_actors_0": 20_000, "train_actors_1": 20_000, "train_actors_2": 20_000}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every part's steps (0.1: a quick look)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--part", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(measure(args.part[0], int(args.part[1]))))
        return
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "RAY_USAGE_STATS_ENABLED": "0"}
    rounds: dict[str, list[dict]] = {part: [] for part in PARTS}
    for _ in range(args.rounds):  # parts alternate round by round: slow drift of the machine hits them alike
        for part, steps in PARTS.items():
            done = subprocess.run([sys.executable, __file__, "--part", part, str(max(int(steps * args.scale), CHUNK))],
                                  capture_output=True, text=True, env=env, check=True)
            rounds[part].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {part}: {rounds[part][-1]}", file=sys.stderr)

    def summary(part: str, key: str) -> dict:
        values = [r[key] for r in rounds[part]]
        return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}

    single = summary("train_actors_0", "env_steps_per_s")["median"]
    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "rounds": args.rounds,
        "actor_env_steps_per_s": {"cartpole": summary("actor_cartpole", "env_steps_per_s"),
                                  "space_invaders": summary("actor_atari", "env_steps_per_s")},
        "bytes_per_env_step": {"cartpole": summary("actor_cartpole", "bytes_per_env_step")["median"],
                               "space_invaders": summary("actor_atari", "bytes_per_env_step")["median"]},
        "learner": {"updates_per_s": summary("learner", "updates_per_s"),
                    "env_steps_per_s_bound": summary("learner", "env_steps_per_s_bound")},
        "ingest": {"object_store_mb_per_s": summary("ingest", "object_store_mb_per_s"),
                   "replay_ingest_mb_per_s": summary("ingest", "ingest_mb_per_s"),
                   "chunk_mb": summary("ingest", "chunk_mb")["median"]},
        "end_to_end_env_steps_per_s": {f"actors_{n}": summary(f"train_actors_{n}", "env_steps_per_s") for n in (0, 1, 2)},
    }
    result["distributed_over_single_process"] = {
        f"actors_{n}": round(result["end_to_end_env_steps_per_s"][f"actors_{n}"]["median"] / single, 3) for n in (1, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
