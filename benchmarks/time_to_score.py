"""Time to a score: wall-clock seconds and env steps until the first evaluation that reaches a threshold.

    python benchmarks/time_to_score.py [--envs cartpole spaceinvaders] [--recipes dqn rainbow der sb3]
        [--seeds 0 1 2] [--time-cap SECONDS] [--step-cap N] [--eval-freq N] [--threads T] [--json]

Thresholds, each judged on one evaluation of greedy play (epsilon 0) during training:

- ``cartpole``: CartPole-v1, mean return of 20 episodes >= 475 (Gymnasium's reward threshold; qzoo's CartPole
  preset evaluates 20 episodes, every 2,500 env steps).
- ``spaceinvaders``: SpaceInvadersNoFrameskip-v4, mean - std >= 200 over 10 full games (the Hugging Face Deep RL
  course's pass mark for its unit 3), every 50,000 env steps.

Recipes: qzoo's presets ``dqn``, ``rainbow`` and ``der`` (``qzoo train --algo A``, each with its own
hyperparameters for the env), and ``sb3``: Stable-Baselines3's DQN with RL-Zoo's hyperparameters (hyperparams/
dqn.yml: CartPole-v1; on SpaceInvaders the Hugging Face course's unit-3 dqn.yml, which is RL-Zoo's atari entry cut
to 1M env steps, the same budget as qzoo's dqn preset there). Every run is a fresh subprocess with the seed given.
qzoo's runs are read from their own run folder (``evaluations.csv``: env step, mean, std, elapsed seconds), written
by qzoo's evaluation; SB3's runs use its ``EvalCallback`` with the same protocol (episodes, deterministic = greedy,
full games: SB3's Atari envs carry a ``Monitor`` below the life-loss wrapper, whose whole-game scores
``evaluate_policy`` reports), writing the same rows. The evaluation protocol is the same for all recipes here, so
qzoo's presets' own evaluation settings (Atari: eval epsilon 0.05, every 250k steps) are overridden.

Caps: ``--time-cap`` stops a run after that many seconds (the run then counts as not reaching the score, with its
best evaluation reported); ``--step-cap N`` trains every recipe for N env steps (it becomes ``n_timesteps``, so
exploration schedules are stretched or squeezed to it, for SB3 as for qzoo); without it each recipe keeps its own
budget (CartPole 50k for all; SpaceInvaders: dqn, rainbow and SB3 1M, der 100k). The budget sets the
exploration schedule (epsilon falls over its first 10%), so SB3 and qzoo's dqn explore alike on SpaceInvaders.

Reported per run: ``env_steps`` and ``seconds`` at the first evaluation that reaches the score (seconds: the run's
own clock from the start of training to the end of that evaluation, evaluations included), ``wall_seconds``
(from launching the process, imports and setup included, to the moment the score was seen), the best evaluation.
Per recipe: how many seeds reached it and the medians over them; per env, the best qzoo recipe (most seeds
reaching the score, then the lowest median seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENVS = {
    "cartpole": dict(env_id="CartPole-v1", episodes=20, eval_freq=2_500, rule="mean", threshold=475.0),
    "spaceinvaders": dict(env_id="SpaceInvadersNoFrameskip-v4", episodes=10, eval_freq=50_000, rule="mean - std",
                          threshold=200.0),
}
QZOO_RECIPES = ("dqn", "rainbow", "der")
RECIPES = (*QZOO_RECIPES, "sb3")
# RL-Zoo's hyperparams/dqn.yml (the same values as qzoo's dqn presets, which cite them). SpaceInvaders: the course's
# unit-3 dqn.yml, RL-Zoo's atari entry with n_timesteps 1e6 (tests/data/hf_course_dqn.yml has its shape): the recipe
# students run, and the budget of qzoo's dqn preset for SpaceInvadersNoFrameskip-v4.
SB3_HYPERPARAMETERS = {
    "cartpole": dict(policy="MlpPolicy", n_timesteps=50_000, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                     learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                     exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])),
    "spaceinvaders": dict(policy="CnnPolicy", n_timesteps=1_000_000, buffer_size=100_000, learning_rate=1e-4,
                          batch_size=32, learning_starts=100_000, target_update_interval=1000, train_freq=4,
                          gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01,
                          optimize_memory_usage=False),
}
EVAL_SEED_OFFSET = 1_000_000  # evaluation envs seeded apart from training, as qzoo's agent.EVAL_SEED_OFFSET


def reached(row: dict, env: str) -> bool:
    spec = ENVS[env]
    score = row["mean"] - row["std"] if spec["rule"] == "mean - std" else row["mean"]
    return score >= spec["threshold"]


def score(row: dict, env: str) -> float:
    return row["mean"] - row["std"] if ENVS[env]["rule"] == "mean - std" else row["mean"]


# ------------------------------------------------------------------------------------------ SB3 worker


def sb3_worker(env: str, seed: int, step_cap: int | None, eval_freq: int, threads: int, out: str) -> None:
    """SB3's DQN with RL-Zoo's hyperparameters; after every evaluation a row goes to ``out`` (JSON lines), and
    training stops at the first evaluation that reaches the score."""
    import numpy as np
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    if threads > 0:
        torch.set_num_threads(threads)
    spec, hyper = ENVS[env], dict(SB3_HYPERPARAMETERS[env])
    policy, budget = hyper.pop("policy"), hyper.pop("n_timesteps")
    steps = step_cap or budget
    if env == "cartpole":
        train_env = make_vec_env(spec["env_id"], n_envs=1, seed=seed)
        eval_env = make_vec_env(spec["env_id"], n_envs=1, seed=seed + EVAL_SEED_OFFSET)
    else:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        train_env = VecFrameStack(make_atari_env(spec["env_id"], n_envs=1, seed=seed), n_stack=4)
        # Full games, real scores: no life loss as an episode end, no reward clipping (the Monitor below them
        # records whole games either way; this makes the evaluation's episodes whole games too).
        # Channels first, as SB3 wraps the training env itself (RL-Zoo does the same for its eval env).
        eval_env = VecTransposeImage(VecFrameStack(make_atari_env(
            spec["env_id"], n_envs=1, seed=seed + EVAL_SEED_OFFSET,
            wrapper_kwargs=dict(terminal_on_life_loss=False, clip_reward=False)), n_stack=4))

    class Rows(BaseCallback):
        """Called by EvalCallback after each evaluation: one row, and False (stop) once the score is reached."""

        def _on_step(self) -> bool:
            returns = self.parent.evaluations_results[-1]
            row = {"step": self.num_timesteps, "episodes": len(returns), "mean": float(np.mean(returns)),
                   "std": float(np.std(returns)), "time": time.perf_counter() - started}
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            return not reached(row, env)

    model = DQN(policy, train_env, **hyper, seed=seed, device="cpu", verbose=0)
    started = time.perf_counter()
    evaluation = EvalCallback(eval_env, n_eval_episodes=spec["episodes"], eval_freq=eval_freq, deterministic=True,
                              log_path=str(Path(out).with_suffix("")), callback_after_eval=Rows(), verbose=0)
    model.learn(steps, callback=evaluation)


# ------------------------------------------------------------------------------------------ driver


def qzoo_command(env: str, recipe: str, seed: int, run_dir: Path, step_cap: int | None, eval_freq: int,
                 threads: int) -> list[str]:
    spec = ENVS[env]
    overrides = [f"eval_freq={eval_freq}", f"n_eval_episodes={spec['episodes']}", "eval_epsilon=0.0",
                 "checkpoint_freq=0", f"torch_threads={threads}"]
    if spec["rule"] == "mean":  # qzoo stops by itself at the first evaluation whose mean reaches stop_reward
        overrides.append(f"stop_reward={spec['threshold']}")
    command = [sys.executable, "-c", "import sys; from qzoo.cli import main; sys.exit(main())", "train",
               "--env", spec["env_id"], "--algo", recipe, "--seed", str(seed), "--run-dir", str(run_dir),
               "--no-progress", "--set", *overrides]
    return command + (["-n", str(step_cap)] if step_cap else [])


def read_rows(recipe: str, where: Path) -> list[dict]:
    """Evaluation rows so far: qzoo's evaluations.csv, or the SB3 worker's JSON lines."""
    if recipe == "sb3":
        if not where.exists():
            return []
        return [json.loads(line) for line in where.read_text().splitlines() if line.endswith("}")]
    path = where / "evaluations.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{key: float(row[key]) for key in ("step", "mean", "std", "time")}
                for row in csv.DictReader(f) if row.get("time")]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (qzoo finishes its env step and exits), then SIGKILL if it is still there after 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_one(env: str, recipe: str, seed: int, time_cap: float, step_cap: int | None, eval_freq: int, threads: int,
            folder: Path) -> dict:
    where = folder / f"{env}-{recipe}-s{seed}"
    if recipe == "sb3":
        where = where.with_suffix(".jsonl")
        command = [sys.executable, __file__, "--worker", env, str(seed), str(step_cap or 0), str(eval_freq),
                   str(threads), str(where)]
    else:
        command = qzoo_command(env, recipe, seed, where, step_cap, eval_freq, threads)
    launched = time.perf_counter()
    log = open(folder / f"{where.name}.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    hit, capped = None, False
    while True:
        finished = process.poll() is not None
        rows = read_rows(recipe, where)
        hit = next((row for row in rows if reached(row, env)), None)
        if hit is not None or finished:
            break
        if time.perf_counter() - launched > time_cap:
            capped = True
            break
        time.sleep(0.5)
    wall = time.perf_counter() - launched
    stop(process)
    log.close()
    rows = read_rows(recipe, where)
    best = max(rows, key=lambda row: score(row, env), default=None)
    result = {"env": env, "recipe": recipe, "seed": seed, "reached": hit is not None, "evaluations": len(rows),
              "best_score": round(score(best, env), 1) if best else None,
              "best_at_step": int(best["step"]) if best else None}
    if hit is not None:
        result.update(env_steps=int(hit["step"]), seconds=round(hit["time"], 1), wall_seconds=round(wall, 1))
    else:
        result["stopped_by"] = "time cap" if capped else f"end of run (exit {process.returncode})"
        if not capped and process.returncode not in (0, None):
            result["log_tail"] = (folder / f"{where.name}.log").read_text()[-1500:]
    return result


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for env in dict.fromkeys(r["env"] for r in runs):
        per_recipe = {}
        for recipe in dict.fromkeys(r["recipe"] for r in runs if r["env"] == env):
            mine = [r for r in runs if r["env"] == env and r["recipe"] == recipe]
            hits = [r for r in mine if r["reached"]]
            per_recipe[recipe] = {"reached": f"{len(hits)}/{len(mine)}"}
            if hits:
                per_recipe[recipe].update(
                    median_seconds=round(statistics.median(r["seconds"] for r in hits), 1),
                    median_env_steps=int(statistics.median(r["env_steps"] for r in hits)),
                    median_wall_seconds=round(statistics.median(r["wall_seconds"] for r in hits), 1))
        ranked = sorted(((recipe, s) for recipe, s in per_recipe.items() if recipe in QZOO_RECIPES
                         and "median_seconds" in s),
                        key=lambda item: (-int(item[1]["reached"].split("/")[0]), item[1]["median_seconds"]))
        summary[env] = {"recipes": per_recipe, "best_qzoo_recipe": ranked[0][0] if ranked else None}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=tuple(ENVS), default=list(ENVS), help="default: both")
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), help="default: all four")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed (default: 0)")
    parser.add_argument("--time-cap", type=float, default=3600.0, help="seconds per run (default 3600)")
    parser.add_argument("--step-cap", type=int, help="env steps per run, for every recipe (default: each its own)")
    parser.add_argument("--eval-freq", type=int, help="env steps between evaluations (default: CartPole 2,500, "
                        "SpaceInvaders 50,000)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every run (default 0: each "
                        "library's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        env, seed, step_cap, eval_freq, threads, out = args.worker
        sb3_worker(env, int(seed), int(step_cap) or None, int(eval_freq), int(threads), out)
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="time-to-score-") as folder:
        for env in args.envs:
            for seed in args.seeds:
                for recipe in args.recipes:
                    eval_freq = args.eval_freq or ENVS[env]["eval_freq"]
                    runs.append(run_one(env, recipe, seed, args.time_cap, args.step_cap, eval_freq, args.threads,
                                        Path(folder)))
                    print(f"  {json.dumps(runs[-1])[:300]}", file=sys.stderr, flush=True)
    result = {"time_cap": args.time_cap, "step_cap": args.step_cap, "threads": args.threads, "seeds": args.seeds,
              "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "runs": runs, "summary": summarise(runs)}
    print(json.dumps(result) if args.json else table(result))
    return 0


def table(result: dict) -> str:
    lines = [f"time cap {result['time_cap']:.0f} s, step cap {result['step_cap'] or 'each recipe its own'}, "
             f"seeds {result['seeds']}, torch threads {result['threads'] or 'default'}, {result['cpus']} CPUs", "",
             "| env | recipe | reached | median seconds | median env steps | median wall seconds |",
             "|---|---|---|---|---|---|"]
    for env, summary in result["summary"].items():
        for recipe, s in summary["recipes"].items():
            lines.append(f"| {env} | {recipe} | {s['reached']} | {s.get('median_seconds', '-')} | "
                         f"{s.get('median_env_steps', '-')} | {s.get('median_wall_seconds', '-')} |")
    lines.append("")
    for env, summary in result["summary"].items():
        lines.append(f"{env}: best qzoo recipe: {summary['best_qzoo_recipe'] or 'none reached the score'}")
    for run in result["runs"]:
        if not run["reached"]:
            lines.append(f"{run['env']} {run['recipe']} seed {run['seed']}: not reached ({run['stopped_by']}); best "
                         f"score {run['best_score']} at env step {run['best_at_step']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
