"""``--track``: a run's config, metrics, evaluations and final model also go to Weights & Biases.

``qzoo train --track``: TensorBoard in the run folder stays the default and is unchanged; ``TrackedRecorder`` wraps
the run folder's ``RunRecorder``: every report goes to it first, then the same numbers to W&B (keyed by env step).
``qzoo tune --track``: ``TrackedTrial``, one W&B run per Optuna trial, grouped by study. W&B is an optional extra
(``pip install 'qzoo[wandb]'``) imported only here; ``WANDB_MODE=offline`` writes the W&B runs under
``RUN/wandb/`` (or ``TUNING_FOLDER/wandb/``) without any network (``wandb sync`` uploads them later).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qzoo.errors import QzooError


@dataclass(frozen=True)
class TrackSpec:
    """Where a tracked run goes: the W&B project and, optionally, the entity (user or team)."""

    project: str = "qzoo"
    entity: str | None = None


def require_wandb():
    """The wandb module, or one line saying how to install it (checked before the run folder is made)."""
    try:
        import wandb
    except ImportError:
        raise QzooError("--track needs Weights & Biases: pip install 'qzoo[wandb]' (or wandb)") from None
    return wandb


def _start_run(wandb, spec: TrackSpec, **settings: Any):
    """``wandb.init`` in ``spec``'s project, or one line saying why not (a bad login, no network outside offline
    mode)."""
    try:
        return wandb.init(project=spec.project, entity=spec.entity, reinit=True, **settings)
    except Exception as exc:
        raise QzooError(f"--track: W&B could not start a run ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); WANDB_MODE=offline works without "
                        f"network") from None


class TrackedRecorder:
    """A ``RunRecorder`` that also reports to a W&B run; everything else (signals, meta, the folder) is the
    wrapped recorder's."""

    def __init__(self, recorder, agent, run_dir: Path, spec: TrackSpec, command: list[str] | None):
        wandb = require_wandb()
        self._recorder, self._run_dir = recorder, run_dir
        config = {"env_id": agent.env_id, "algo": agent.algo, "variant": agent.variant, **agent.config.to_dict()}
        self._wandb = _start_run(wandb, spec, name=run_dir.name, dir=str(run_dir), config=config,
                                 notes=" ".join(["qzoo", *(command or [])]))

    def __getattr__(self, name: str) -> Any:  # meta, stop_requested, stopping_on_signals, dir, ...
        return getattr(self._recorder, name)

    def on_episode(self, agent, episode_return: float, length: int) -> None:
        self._recorder.on_episode(agent, episode_return, length)
        self._wandb.log({"rollout/episode_return": episode_return, "rollout/episode_length": length},
                        step=agent.num_timesteps)

    def on_train(self, agent, metrics: dict[str, float]) -> None:
        self._recorder.on_train(agent, metrics)
        self._wandb.log({f"train/{name}": value for name, value in metrics.items()}, step=agent.num_timesteps)

    def on_evaluation(self, agent, stats, improved: bool) -> None:
        self._recorder.on_evaluation(agent, stats, improved)
        self._wandb.log({"eval/mean_return": stats.mean, "eval/std_return": stats.std, "eval/result": stats.result},
                        step=agent.num_timesteps)

    def on_checkpoint(self, agent) -> None:
        self._recorder.on_checkpoint(agent)

    def finish(self, agent, status: str) -> None:
        """The run folder's end, then the final model as a W&B artifact and the W&B run's end."""
        self._recorder.finish(agent, status)
        import wandb

        model = next((p for p in sorted(self._run_dir.glob("model.*")) if p.is_file()), None)
        if model is not None:
            artifact = wandb.Artifact(f"{self._run_dir.name}-model".replace("/", "-"), type="model")
            artifact.add_file(str(model))
            self._wandb.log_artifact(artifact)
        self._wandb.summary["status"] = status
        self._wandb.finish(exit_code=0 if status == "finished" else 1)

    def fail(self, agent, error: str) -> None:
        self._recorder.fail(agent, error)
        self._wandb.summary["error"] = error
        self._wandb.finish(exit_code=1)


class TrackedTrial:
    """``qzoo tune --track``: one W&B run per Optuna trial, in a group named after the study.

    A run per trial is what W&B's own sweeps make: the trial's hyperparameters are the run's config and its
    objective the run's summary, so W&B's runs table, parallel-coordinates and parameter-importance panels compare
    trials as they compare any runs, and grouping by study keeps a study's trials together (its workers on many
    machines included). The history holds the periodic evaluations of the trial's first seed, the ones the pruner
    sees, keyed by env step; later seeds restart at step 0, which W&B's one rising step per run cannot show.
    """

    def __init__(self, spec: TrackSpec, directory: Path, study: str, trial: int, config: dict[str, Any],
                 command: list[str] | None):
        wandb = require_wandb()
        self._wandb = _start_run(wandb, spec, name=f"{study}-trial-{trial}", group=study, job_type="trial",
                                 dir=str(directory), config={"study": study, "trial": trial, **config},
                                 notes=" ".join(["qzoo", *(command or [])]))

    def on_evaluation(self, step: int, stats) -> None:
        self._wandb.log({"eval/mean_return": stats.mean, "eval/std_return": stats.std, "eval/result": stats.result},
                        step=step)

    def finish(self, state: str, value: float | None, results: dict[str, float], reason: str | None = None) -> None:
        """The trial's end: its Optuna state (complete, pruned, fail), its objective ``value`` when it has one,
        each seed's final result, and why it was pruned or failed."""
        summary = self._wandb.summary
        summary["state"] = state
        if value is not None:
            summary["value"] = value
        for key, result in results.items():
            summary[key] = result
        if reason:
            summary["reason"] = reason
        self._wandb.finish(exit_code=1 if state == "fail" else 0)
