"""The periodic work of a training run, shared by every agent's ``learn`` loop.

After each env step: a row of training metrics every ``log_interval`` steps, an evaluation every
``eval_freq`` steps (training stops once one reaches ``stop_reward``), a checkpoint every
``checkpoint_freq`` steps or when SIGINT / SIGTERM asked the run to stop.
"""

from __future__ import annotations

import time

import numpy as np

from qzoo.errors import QzooError
from qzoo.evaluation import EvaluationStopped


def crossings(t: int, steps: int, interval: int) -> int:
    """How many multiples of ``interval`` env steps the last ``steps`` env steps (ending at ``t``) passed.

    With one env it is 1 exactly when ``t % interval == 0``; with ``n_envs`` copies a vector step
    advances ``n_envs`` env steps and may pass a multiple without landing on it.
    """
    return t // interval - (t - steps) // interval


class PeriodicWork:
    """The periodic work of one ``learn`` call and the loop's timing state (when it started, from which step).

    ``losses`` is the agent's list of losses since the last metrics row; each row empties it.
    """

    def __init__(self, agent, recorder, losses: list[float]):
        self.agent, self.recorder, self.losses = agent, recorder, losses
        if agent.horizon < agent.num_timesteps:  # learn(total_timesteps=-5): a user's mistake, not a no-op
            raise QzooError(f"learn: total_timesteps must be >= 0 (the horizon {agent.horizon} lies before the "
                            f"{agent.num_timesteps} env steps already taken)")
        self.started, self.steps_at_start = time.perf_counter(), agent.num_timesteps

    def after_env_step(self, epsilon: float, steps: int = 1) -> bool:
        """Do the periodic work due after the last ``steps`` env steps; True when training must stop."""
        agent, recorder, c = self.agent, self.recorder, self.agent.config
        t = agent.num_timesteps
        if recorder and crossings(t, steps, c.log_interval):
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            metrics = {"epsilon": epsilon, "steps_per_second": (t - self.steps_at_start) / elapsed}
            if self.losses:
                metrics["loss"] = float(np.mean(self.losses))
                self.losses.clear()
            recorder.on_train(agent, metrics)
        if c.eval_freq and crossings(t, steps, c.eval_freq):
            # SIGINT / SIGTERM stop a periodic evaluation within one env step (only this one: an evaluate() call
            # after learn, e.g. by the API, is never stopped by a flag of a finished run).
            agent.evaluations.should_stop = (lambda: bool(recorder.stop_requested)) if recorder else None
            try:
                stats = agent.evaluate(c.n_eval_episodes)
            except EvaluationStopped:  # a signal mid-evaluation: drop it; this step is checkpointed below
                stats = None
            finally:
                agent.evaluations.should_stop = None
            if stats is not None:
                improved = agent.evaluations.note(stats)
                if recorder:
                    recorder.on_evaluation(agent, stats, improved)
                if c.stop_reward is not None and stats.mean >= c.stop_reward:
                    return True
        # A SIGINT / SIGTERM only raises a flag: the step is finished, checkpointed, then the loop ends.
        if recorder and (c.checkpoint_freq and crossings(t, steps, c.checkpoint_freq) or recorder.stop_requested):
            recorder.on_checkpoint(agent)
        return bool(recorder and recorder.stop_requested)
