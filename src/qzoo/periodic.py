"""The periodic work of a training run, shared by every agent's ``learn`` loop.

After each env step: a row of training metrics every ``log_interval`` steps, an evaluation every
``eval_freq`` steps (training stops once one reaches ``stop_reward``), a checkpoint every
``checkpoint_freq`` steps or when SIGINT / SIGTERM asked the run to stop.
"""

from __future__ import annotations

import time

import numpy as np


def crossings(t: int, steps: int, interval: int) -> int:
    """How many multiples of ``interval`` env steps the last ``steps`` env steps (ending at ``t``) passed.

    With one env it is 1 exactly when ``t % interval == 0``; with ``n_envs`` copies a vector step
    advances ``n_envs`` env steps and may pass a multiple without landing on it.
    """
    return t // interval - (t - steps) // interval


def after_env_step(agent, recorder, epsilon: float, losses: list[float], started: float, steps_at_start: int,
                   steps: int = 1) -> bool:
    """Do the periodic work due after the last ``steps`` env steps; True when training must stop.

    ``losses`` holds the losses since the last metrics row; it is emptied into that row.
    """
    c = agent.config
    t = agent.num_timesteps
    if recorder and crossings(t, steps, c.log_interval):
        elapsed = max(time.perf_counter() - started, 1e-9)
        metrics = {"epsilon": epsilon, "steps_per_second": (t - steps_at_start) / elapsed}
        if losses:
            metrics["loss"] = float(np.mean(losses))
            losses.clear()
        recorder.on_train(agent, metrics)
    if c.eval_freq and crossings(t, steps, c.eval_freq):
        stats = agent.evaluate(c.n_eval_episodes)
        agent.best_mean_return = max(agent.best_mean_return, stats.mean)
        if recorder:
            recorder.on_evaluation(agent, stats)
        if c.stop_reward is not None and stats.mean >= c.stop_reward:
            return True
    # A SIGINT / SIGTERM only raises a flag: the step is finished, checkpointed, then the loop ends.
    if recorder and (c.checkpoint_freq and crossings(t, steps, c.checkpoint_freq) or recorder.stop_requested):
        recorder.on_checkpoint(agent)
    return bool(recorder and recorder.stop_requested)


def evaluate_agent(agent, n_episodes: int, seed: int | None = None, epsilon: float | None = None):
    """Full episodes on the agent's evaluation env (built once); by default seeds apart from training's."""
    from qzoo.evaluation import evaluate

    if agent._eval_env is None:
        agent._eval_env = agent.make_env(training=False)
    seed = agent.config.seed + 1_000_000 if seed is None else seed
    eps = agent.config.eval_epsilon if epsilon is None else epsilon
    return evaluate(agent.greedy_action, agent._eval_env, n_episodes, seed, eps)
