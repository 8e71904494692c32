"""One way into a training run: resolve what was asked for, build the agent, open its run folder, learn, close.

``qzoo train`` parses its arguments into ``prepare(...)`` and prints what ``Run.learn`` reports; the Python API
and launchers (a sweep script, a distributed launcher) call the same three steps and get the same run folder:

    >>> plan = prepare("CartPole-v1", overrides={"seed": 3})   # defaults <- presets <- -c FILE <- overrides
    >>> run = start(plan, "runs/cartpole-s3")                  # builds the agent, checks memory, opens the folder
    >>> result = run.learn()                                   # trains; finished, interrupted or failed
    >>> run = resume("runs/cartpole-s3")                       # a stopped or killed run, from its newest checkpoint
    >>> run = resume("runs/apex", overrides={"actors": 8})     # a distributed one, with another actor count

Every check that can fail passes before anything in a run folder is written or changed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from qzoo import config as cfg
from qzoo.agent import Agent
from qzoo.errors import EXIT_INTERRUPTED, QzooError


def distributed(config: Any) -> bool:
    """Whether a run trains with Ape-X actors on Ray (``config.actors > 0``) instead of the agent's own loop."""
    return isinstance(config, cfg.DQNConfig) and config.actors > 0


def check_engine(config: Any) -> None:
    """A distributed run needs Ray: one clear line before anything is built or written when it is missing."""
    if distributed(config):
        from qzoo.distributed import require_ray

        require_ray()


@dataclass
class Plan:
    """A resolved run, before anything is built: the env, the algorithm, the config, notes for the user, and
    the agent it starts from (``--from``), if any."""

    env_id: str
    algo: str
    config: Any
    notes: list[str] = field(default_factory=list)
    source: Agent | None = None

    def build_agent(self) -> Agent:
        """The agent of this plan, with the source's weights when there is one."""
        from qzoo.algos import agent_class

        agent = agent_class(self.algo)(self.env_id, self.config)
        if self.source is not None:
            agent.initialise_from(self.source)
        return agent


def load_agent(target: str | Path, best: bool = False, env_id: str | None = None) -> tuple[Agent, Path]:
    """The agent saved in a run folder, a pushed folder or a model file (a Stable-Baselines3 zip too: ``env_id``
    where it does not name its env), and the model file it came from."""
    from qzoo.algos import load_agent as load
    from qzoo.runs import find_model

    path = find_model(target, best)
    return load(path, env_id), path


def prepare(
    env_id: str | None,
    algo: str = "dqn",
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
    algo_given: bool = False,
    until_solved: bool = False,
    deterministic: bool = False,
    network_timeout: float | None = None,
) -> Plan:
    """Resolve a run: defaults -> presets (or the ``source`` agent's own hyperparameters) -> ``config_file`` ->
    ``overrides`` -> ``env_kwargs``.

    ``source``: a run folder, pushed folder, model file or Hub repo id to start from (``qzoo train --from``);
    its env and algorithm are the run's, and ``algo`` may only differ from it where ``algo_given`` is False.
    ``until_solved``: stop once an evaluation reaches the env's reward threshold. ``deterministic``: bit-exact
    CPU kernels on one thread (a Q-table run is exact already). ``network_timeout``: seconds a Hub download of
    ``source`` may take (``hub.network_timeout``).
    """
    from qzoo.envs import env_spec, family

    source_agent = None
    if source:
        from qzoo.hub import fetch

        source_agent, _ = load_agent(str(fetch(source, network_timeout)), env_id=env_id)
        if env_id and env_id != source_agent.env_id:
            raise QzooError(f"--from holds a {source_agent.env_id} agent, not {env_id}")
        if algo != source_agent.algo and algo_given:
            raise QzooError(f"--from holds a {source_agent.algo} agent, not {algo}")
        env_id, algo = source_agent.env_id, source_agent.algo
    elif not env_id:
        raise QzooError("the following arguments are required: --env (or --resume RUN_DIR, or --from)")
    overrides = dict(overrides or {})
    if deterministic and algo != "qlearning":
        overrides = {"device": "cpu", "torch_threads": 1, **overrides, "deterministic": True}
    if until_solved:
        threshold = env_spec(env_id).reward_threshold
        if threshold is None:
            raise QzooError(f"{env_id} has no reward threshold; use --set stop_reward=VALUE")
        overrides["stop_reward"] = float(threshold)
    if source_agent is not None:
        # The source's hyperparameters stand where a preset would; -c and --set still come after.
        config, notes = cfg.resolve(env_id, None, config_file, overrides, env_kwargs, algo, presets=False,
                                    base=source_agent.config.to_dict())
        config, fine_tuning = _fine_tuning(config, source_agent, env_id, config_file, overrides, env_kwargs, algo)
        notes.insert(0, f"from: {source} ({source_agent.num_timesteps} env steps){fine_tuning}")
    else:
        config, notes = cfg.resolve(env_id, family(env_id), config_file, overrides, env_kwargs, algo)
    check_engine(config)
    return Plan(env_id, algo, config, notes, source_agent)


def _fine_tuning(config: Any, source: Agent, env_id: str, config_file: str | None, overrides: Mapping[str, Any],
                 env_kwargs: Mapping[str, Any] | None, algo: str) -> tuple[Any, str]:
    """A ``--from`` run goes on from where its source stood, not from scratch (RL-Zoo's most-commented resume
    complaint): epsilon starts at the source's final epsilon, and learning starts after one minibatch of
    transitions (``batch_size``, at least ``n_step - 1``) instead of the preset's ``learning_starts`` again;
    ``exploration_initial_eps`` or ``learning_starts`` set by the user (``-c`` or ``--set``) win. Returns the
    config and the note's tail that says which applied."""
    keys = [k for k in ("exploration_initial_eps", "learning_starts") if k in config.to_dict()]
    # A key the user set comes out the same whatever the source held: resolve with two different source values.
    probes = [cfg.resolve(env_id, None, config_file, overrides, env_kwargs, algo, presets=False,
                          base={**config.to_dict(), **{k: v for k in keys}})[0] for v in (0, 1)]
    user_set = {k for k in keys if getattr(probes[0], k) == getattr(probes[1], k)}
    changes, said = {}, []
    if "exploration_initial_eps" in keys:
        if "exploration_initial_eps" in user_set:
            said.append(f"exploring from epsilon {config.exploration_initial_eps:g} (your exploration_initial_eps)")
        else:
            changes["exploration_initial_eps"] = round(float(source.exploration_rate()), 6)
            said.append(f"exploring from epsilon {changes['exploration_initial_eps']:g}, the source's final "
                        f"(set exploration_initial_eps to change)")
    if "learning_starts" in keys:
        if "learning_starts" in user_set:
            said.append(f"learning_starts {config.learning_starts} (yours)")
        else:
            changes["learning_starts"] = max(config.batch_size, config.n_step - 1)
            said.append(f"learning_starts {changes['learning_starts']}: one minibatch, not the source's "
                        f"{config.learning_starts} again (set learning_starts to wait longer)")
    config = cfg.replace(config, "--from", **changes) if changes else config
    return config, "; " + "; ".join(said) if said else ""


def start(plan: Plan, run_dir: str | Path | None = None, *, runs_root: str | Path = "runs",
          argv: list[str] | None = None, progress: bool | None = None, track: Any = None) -> "Run":
    """Build the plan's agent, check its replay memory fits, and open a new run folder for it.

    ``run_dir`` defaults to ``runs_root/<algo>-<env>-s<seed>-<time>``; ``argv`` is the command recorded in
    run.json; ``progress``: a progress bar (None: only on a terminal); ``track``: a ``tracking.TrackSpec`` to
    send the run to Weights & Biases too.
    """
    from qzoo.buffer import check_fits
    from qzoo.runs import RunRecorder, default_run_dir

    agent = plan.build_agent()
    check_fits(agent.memory_bytes())  # before the run folder exists and before anything is allocated
    if track is not None:  # W&B installed? before the run folder exists
        from qzoo.tracking import require_wandb

        require_wandb()
    run_dir = Path(run_dir) if run_dir else default_run_dir(runs_root, plan.algo, plan.env_id, plan.config.seed)
    recorder = RunRecorder(run_dir, agent, argv, plan.notes, progress=progress)
    if track is not None:  # ``tracking.TrackSpec``: the same reports also go to Weights & Biases
        from qzoo.tracking import TrackedRecorder

        try:
            recorder = TrackedRecorder(recorder, agent, run_dir, track, argv)
        except BaseException:
            recorder.fail(agent, "--track: W&B could not start")
            raise
    return Run(agent, recorder, run_dir)


# What ``resume`` may change: the actor count of a distributed run (``distributed.change_actors``). Everything
# else is the run's own config: a resumed run goes on as if it had never stopped.
RESUME_SETTINGS = ("actors",)


def resume(run_dir: str | Path, *, argv: list[str] | None = None, progress: bool | None = None,
           trust_checkpoint: bool = False, overrides: Mapping[str, Any] | None = None) -> "Run":
    """Reopen a stopped or killed run at its newest checkpoint, to go on as if it had never stopped.

    The folder is locked first (one writer). The checkpoint must be signed with this user's key
    (``checkpoint.user_key``) unless ``trust_checkpoint``: its env.pkl is a pickle. ``overrides``: only
    ``RESUME_SETTINGS`` (a distributed run's ``actors``); config.yml and run.json record the change."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(RESUME_SETTINGS))
    if unknown:
        raise QzooError(f"--resume continues a run with its own config; --set takes only {', '.join(RESUME_SETTINGS)} "
                        f"there, not {', '.join(unknown)}")
    from qzoo import checkpoint
    from qzoo.algos import agent_class
    from qzoo.runs import RunRecorder, lock_run_dir, read_meta, saved_env_copies

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QzooError(f"run folder not found: {run_dir}")
    # The writer's lock first: a run still training (or another resume) must not be read half-way, nor cut.
    lock = lock_run_dir(run_dir, shlex.join(["qzoo", *argv]) if argv is not None else None)
    try:
        if saved_env_copies(run_dir) > 1:
            raise QzooError(f"{run_dir} ran n_envs > 1 copies of its env, whose state is not saved: it cannot "
                            f"resume exactly; start a new run from its weights with --from {run_dir}")
        saved = checkpoint.read_latest(run_dir, trust=trust_checkpoint)
        meta = read_meta(run_dir)
        if meta.get("status") == "finished":
            raise QzooError(f"{run_dir} finished its {meta.get('steps')} env steps; nothing to resume")
        agent = checkpoint.restore(agent_class(saved.state["algo"]), saved)
        notes = []
        if "actors" in overrides and overrides["actors"] != getattr(agent.config, "actors", None):
            if not distributed(agent.config):
                raise QzooError(f"{run_dir} trained in one process: --resume --set actors=N changes the actor count "
                                f"of a distributed run only")
            from qzoo.distributed import change_actors

            notes.append(change_actors(agent, overrides["actors"]))
        check_engine(agent.config)
        recorder = RunRecorder(run_dir, agent, argv, notes, progress=progress, resume=saved, lock=lock)
    except BaseException:
        lock.release()
        raise
    return Run(agent, recorder, run_dir, agent.horizon - agent.num_timesteps)


@dataclass
class Run:
    """An agent and its open run folder. ``learn`` trains it to its horizon and closes the folder."""

    agent: Agent
    recorder: Any  # qzoo.runs.RunRecorder
    run_dir: Path
    remaining: int | None = None  # env steps left (resume); None: the config's n_timesteps
    address: str | None = None  # the Ray cluster of a distributed run (actors > 0); None: a throwaway local one

    def learn(self) -> "RunResult":
        """Train, then close the run folder: finished, interrupted by a signal, or failed.

        On an error (a NaN loss, a full disk) no model is saved: the last good checkpoint stays the newest and
        run.json says ``failed`` with the message; the error is raised again.
        """
        try:
            status, code = self._train_and_close()
        finally:
            self.agent.close()  # env copies in subprocesses end with the run, whatever happened
        agent = self.agent
        return RunResult(self.run_dir, status, code, {
            "run_dir": str(self.run_dir), "env_id": agent.env_id, "steps": agent.num_timesteps,
            "episodes": agent.num_episodes, "status": status, "best": self.recorder.meta.get("best"),
            "weights_sha256": agent.weights_sha256()})

    def _train_and_close(self) -> tuple[str, int]:
        agent, recorder = self.agent, self.recorder
        status, code = "finished", 0
        with recorder.stopping_on_signals():
            try:
                if distributed(agent.config):  # Ape-X actors on Ray, this process the learner
                    from qzoo.distributed import learn

                    learn(agent, self.remaining, recorder=recorder, address=self.address)
                else:
                    agent.learn(self.remaining, recorder=recorder)
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, without a checkpoint
                status, code = "interrupted", EXIT_INTERRUPTED
            except BaseException as exc:
                if _is_write_error(exc):  # best.pt, TensorBoard events, a CSV row on a full disk: one line
                    from qzoo.checkpoint import write_error

                    message = f"cannot write in {self.run_dir}: {write_error(exc)}"
                    recorder.fail(agent, message)
                    raise QzooError(f"{message}; the last checkpoint is intact") from None
                recorder.fail(agent, str(exc))
                raise
        if recorder.stop_requested:
            status, code = "interrupted", 128 + recorder.stop_requested  # 130 for SIGINT, 143 for SIGTERM
        try:
            recorder.finish(agent, status)
        except (OSError, RuntimeError) as exc:  # a full disk; torch.save reports it as a RuntimeError
            from qzoo.checkpoint import write_error

            message = f"cannot save the final model in {self.run_dir}: {write_error(exc)}"
            recorder.fail(agent, message)
            raise QzooError(message) from None
        return status, code


def _is_write_error(exc: BaseException) -> bool:
    """An OSError, or torch.save's RuntimeError around one (a full disk, a file size limit)."""
    return isinstance(exc, OSError) or isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError)


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its folder, ``finished`` or ``interrupted``, the exit code, and the report printed."""

    run_dir: Path
    status: str
    exit_code: int
    report: dict[str, Any]
