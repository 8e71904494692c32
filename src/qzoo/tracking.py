"""``qzoo train --track``: the run's config, metrics, evaluations and final model also go to Weights & Biases.

TensorBoard in the run folder stays the default and is unchanged; ``TrackedRecorder`` wraps the run folder's
``RunRecorder``: every report goes to it first, then the same numbers to W&B (keyed by env step). W&B is an
optional extra (``pip install 'qzoo[wandb]'``) imported only here; ``WANDB_MODE=offline`` writes the W&B run
under ``RUN/wandb/`` without any network (``wandb sync`` uploads it later).
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


class TrackedRecorder:
    """A ``RunRecorder`` that also reports to a W&B run; everything else (signals, meta, the folder) is the
    wrapped recorder's."""

    def __init__(self, recorder, agent, run_dir: Path, spec: TrackSpec, command: list[str] | None):
        wandb = require_wandb()
        self._recorder, self._run_dir = recorder, run_dir
        config = {"env_id": agent.env_id, "algo": agent.algo, "variant": agent.variant, **agent.config.to_dict()}
        try:
            self._wandb = wandb.init(project=spec.project, entity=spec.entity, name=run_dir.name, dir=str(run_dir),
                                     config=config, notes=" ".join(["qzoo", *(command or [])]), reinit=True)
        except Exception as exc:  # a bad login, no network outside offline mode
            raise QzooError(f"--track: W&B could not start a run ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); WANDB_MODE=offline works without "
                            f"network") from None

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
