"""``qzoo tune``: hyperparameter search with Optuna, on one machine or many.

TPE sampling (Bergstra et al. 2011) and a median pruner fed by the periodic evaluations of the first
seed; with ``seeds > 1`` each trial trains one run per seed and its value is the mean ``result``
(mean - std of the final evaluation) over them. A run whose loss turns NaN or infinite is pruned.

Storage: an SQLite file in the tuning folder by default; any database URL (``postgresql://...``)
lets workers on many machines share one study. ``--trials N`` is the number of trials this command
runs, split over its ``--jobs`` processes (as RL-Zoo's ``--n-trials``); running the command again
continues the same study, and TPE learns from every trial already in it. Stale trials of a killed
worker are marked failed by Optuna's heartbeat.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from qzoo import config as cfg
from qzoo.errors import QzooError, TrainingDiverged

MLP_WIDTHS = {"small": [64, 64], "medium": [256, 256], "large": [400, 300]}
CNN_WIDTHS = {"small": [256], "medium": [512]}


def sample_dqn(trial, network: str, exploration: bool = True) -> dict[str, Any]:
    """The DQN search space, each hyperparameter on the scale it acts on (epsilon's schedule unless ``exploration``
    is False: NoisyNets explore without it)."""
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 8, 16, 128, 256])
    subsample = trial.suggest_categorical("subsample_steps", [1, 2, 4, 8])  # gradient steps = train_freq / this
    frames = network in ("cnn", "de_cnn")  # Atari frame stacks: fewer, wider hidden layers, smaller memories
    widths = CNN_WIDTHS if frames else MLP_WIDTHS
    buffers = [10_000, 50_000, 100_000] if frames else [10_000, 50_000, 100_000, 1_000_000]
    values = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "gamma": 1.0 - trial.suggest_float("one_minus_gamma", 1e-3, 1e-1, log=True),
        "batch_size": 2 ** trial.suggest_int("log2_batch_size", 4, 9),
        "buffer_size": trial.suggest_categorical("buffer_size", buffers),
        "learning_starts": trial.suggest_categorical("learning_starts", [0, 1_000, 5_000, 10_000, 20_000]),
        "target_update_interval": trial.suggest_int("target_update_interval", 1, 20_000, log=True),
        "train_freq": train_freq,
        "gradient_steps": max(train_freq // subsample, 1),
    }
    if exploration:
        values["exploration_fraction"] = trial.suggest_float("exploration_fraction", 0.0, 0.5)
        values["exploration_final_eps"] = trial.suggest_float("exploration_final_eps", 0.0, 0.2)
    values["net_arch"] = widths[trial.suggest_categorical("net_width", list(widths))]
    return values


def sample_rainbow(trial, network: str) -> dict[str, Any]:
    """Rainbow's search space (``--algo rainbow`` / ``der``): DQN's without epsilon, plus the switches' own
    parameters around Hessel et al. 2018's values (n = 3, omega = 0.5, beta0 = 0.4, sigma0 = 0.5, Adam eps 1.5e-4).
    The switches stay on: turn one off with ``--set``, which also keeps it out of the search."""
    values = sample_dqn(trial, network, exploration=False)
    values.update({
        "n_step": trial.suggest_categorical("n_step", [1, 3, 5, 10]),
        "prioritized_replay_alpha": trial.suggest_float("prioritized_replay_alpha", 0.2, 0.8),
        "prioritized_replay_beta0": trial.suggest_float("prioritized_replay_beta0", 0.2, 0.6),
        "noisy_sigma0": trial.suggest_float("noisy_sigma0", 0.05, 1.0, log=True),
        "adam_eps": trial.suggest_float("adam_eps", 1e-8, 1e-3, log=True),
    })
    # The first minibatch needs a complete n-step window (DQNConfig.check_combination).
    values["learning_starts"] = max(values["learning_starts"], values["n_step"] - 1)
    return values


def sample_qlearning(trial, network: str) -> dict[str, Any]:
    del network
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 1.0, log=True),
        "gamma": 1.0 - trial.suggest_float("one_minus_gamma", 1e-3, 1e-1, log=True),
        "exploration_decay_rate": trial.suggest_float("exploration_decay_rate", 1e-5, 1e-2, log=True),
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0.0, 0.2),
    }


SAMPLERS: dict[str, Callable] = {"dqn": sample_dqn, "rainbow": sample_rainbow, "der": sample_rainbow,
                                  "qlearning": sample_qlearning}


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker process needs to run trials (plain data, so it crosses process boundaries)."""

    env_id: str
    algo: str
    storage: str
    study_name: str
    base: dict[str, Any]  # the resolved config before sampling
    fixed: tuple[str, ...]  # keys the user set: never sampled
    seeds: tuple[int, ...]
    evaluations: int
    n_eval_episodes: int
    sampler_seed: int | None
    network: str = "mlp"
    timeout: float | None = None
    track: Any = None  # a ``tracking.TrackSpec``: each trial is also a W&B run (``--track``)
    out_dir: str = "."  # the tuning folder; W&B runs of ``--track`` go to its wandb/
    command: tuple[str, ...] = ()  # the command line, for the W&B runs' notes


class _TrialRecorder:
    """Feeds periodic evaluations to Optuna's pruner (and to the trial's W&B run under ``--track``); the rest of
    a run's reports are dropped."""

    stop_requested = 0  # trials are stopped by Optuna, never by a signal handler of ours

    def __init__(self, trial, tracked=None):
        self.trial, self.tracked = trial, tracked

    def on_evaluation(self, agent, stats, improved) -> None:
        import optuna

        if self.tracked is not None:  # before the pruner may stop the trial: W&B sees its last evaluation too
            self.tracked.on_evaluation(agent.num_timesteps, stats)
        self.trial.report(stats.result, agent.num_timesteps)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at env step {agent.num_timesteps}")

    def on_episode(self, agent, episode_return, length) -> None: ...
    def on_train(self, agent, metrics) -> None: ...
    def on_checkpoint(self, agent) -> None: ...


def objective(trial, spec: TuneSpec) -> float:
    """Train one run per seed with sampled hyperparameters; the mean final result over seeds."""
    import optuna

    from qzoo.algos import agent_class

    sampled = {k: v for k, v in SAMPLERS[spec.algo](trial, spec.network).items() if k not in spec.fixed}
    n_timesteps = spec.base["n_timesteps"]
    values = {**spec.base, **sampled, "eval_freq": max(n_timesteps // spec.evaluations, 1),
              "n_eval_episodes": spec.n_eval_episodes, "stop_reward": None, "checkpoint_freq": 0}
    if values.get("torch_threads") == 0:  # workers run side by side: one thread each (0 takes one per core)
        values["torch_threads"] = 1
    trial.set_user_attr("hyperparameters", {k: values[k] for k in sorted(sampled)})
    tracked = None
    if spec.track is not None:
        from qzoo.tracking import TrackedTrial

        tracked = TrackedTrial(spec.track, Path(spec.out_dir), spec.study_name, trial.number,
                               {"env_id": spec.env_id, "algo": spec.algo, "seeds": list(spec.seeds),
                                "sampled": sorted(sampled), **values}, list(spec.command))
    results: dict[str, float] = {}
    state, value, reason = "fail", None, None
    try:
        for i, seed in enumerate(spec.seeds):
            config = cfg.build({**values, "seed": seed}, f"trial {trial.number}", cfg.SCHEMAS[spec.algo])
            try:
                agent = agent_class(spec.algo)(spec.env_id, config)
            except QzooError as exc:  # a sampled value against a fixed one, e.g. n_step 5 with --set learning_starts=0
                raise optuna.TrialPruned(str(exc)) from None
            try:
                agent.learn(recorder=_TrialRecorder(trial, tracked) if i == 0 else None)
            except TrainingDiverged as exc:
                raise optuna.TrialPruned(f"diverged: {exc}") from None
            stats = agent.evaluate(spec.n_eval_episodes)
            results[f"result_seed_{seed}"] = stats.result
            trial.set_user_attr(f"result_seed_{seed}", stats.result)
        state, value = "complete", float(np.mean(list(results.values())))
        return value
    except optuna.TrialPruned as exc:
        state, reason = "pruned", str(exc)
        raise
    except BaseException as exc:  # Ctrl-C, a crash: the W&B run still ends, marked failed
        reason = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc) else "")
        raise
    finally:
        if tracked is not None:
            tracked.finish(state, value, results, reason)


def redact(url: str) -> str:
    """A database URL without its password (``postgresql://user:***@host/db``): for error lines and reports."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def open_study(spec: TuneSpec):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    engine = {"connect_args": {"timeout": 60}} if spec.storage.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            storage = optuna.storages.RDBStorage(spec.storage, engine_kwargs=engine, heartbeat_interval=30,
                                                 grace_period=120)
            break
        except Exception as exc:  # a bad URL, an unreachable server, a missing driver
            # Workers that start together race to create the schema of an empty database: try again.
            if attempt == 4 or "Failed to import" in str(exc):
                reason = (str(exc).splitlines() or [type(exc).__name__])[0].replace(spec.storage, redact(spec.storage))
                raise QzooError(f"cannot open study storage {redact(spec.storage)}: {redact(reason)}") from None
            time.sleep(1 + attempt)
    return optuna.create_study(
        study_name=spec.study_name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )


def run_worker(spec: TuneSpec, n_trials: int) -> list[int]:
    """Run ``n_trials`` trials of the shared study in this process; the numbers of the trials it ran."""
    import optuna
    import torch

    # Optuna logs an interrupted trial with its traceback; qzoo prints one line per trial itself.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)  # workers run side by side: one thread each
    study = open_study(spec)
    ran: list[int] = []
    started = time.perf_counter()

    def note(study, trial) -> None:
        ran.append(trial.number)
        print(trial_line(study, trial, time.perf_counter() - started), flush=True)

    study.optimize(lambda t: objective(t, spec), n_trials=n_trials, timeout=spec.timeout, callbacks=[note],
                   catch=())
    return ran


def trial_line(study, trial, elapsed: float) -> str:
    """One plain line per finished trial (the progress of ``qzoo tune``, on a terminal or in a log file):
    its number and state, value, the study's best so far, its duration and this worker's elapsed time, then the
    hyperparameters it sampled (as report.md lists them)."""
    import optuna

    value = f"value {trial.value:.3f}" if trial.value is not None else "value -"
    best = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None]
    top = max(best, key=lambda t: t.value) if best else None
    duration = trial.duration.total_seconds() if trial.duration is not None else float("nan")
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.user_attrs.get("hyperparameters", {}).items())
    return " | ".join([f"trial {trial.number}: {trial.state.name.lower()}", value,
                       f"best {top.value:.3f} (trial {top.number})" if top else "best -",
                       f"{duration:.1f} s (elapsed {timedelta(seconds=round(elapsed))})", params or "-"])


def tune(spec: TuneSpec, n_trials: int, jobs: int, out_dir: Path) -> dict[str, Any]:
    """Run the search (``jobs`` processes), then write the report files; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shares = [n_trials // jobs + (1 if i < n_trials % jobs else 0) for i in range(jobs)]
    started = time.perf_counter()
    interrupted = False
    ran: list[int] = []
    try:
        if jobs == 1:
            ran = run_worker(spec, n_trials)
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                seeds = [None if spec.sampler_seed is None else spec.sampler_seed + i for i in range(jobs)]
                futures = [pool.submit(run_worker, _with_seed(spec, s), n) for s, n in zip(seeds, shares) if n]
                for future in futures:
                    ran += future.result()
    except KeyboardInterrupt:
        interrupted = True
    summary = report(spec, out_dir)
    summary.update(trials_run=sorted(ran), interrupted=interrupted, seconds=round(time.perf_counter() - started, 1))
    return summary


def _with_seed(spec: TuneSpec, seed: int | None) -> TuneSpec:
    return replace(spec, sampler_seed=seed)


def report(spec: TuneSpec, out_dir: Path) -> dict[str, Any]:
    """trials.csv (Optuna's trials_dataframe), Optuna's figures, the best trials table (report.md) and
    best_params.yml for ``qzoo train -c``."""
    import optuna

    study = open_study(spec)
    trials = study.get_trials(deepcopy=False)
    # Optuna's own table: number, value, datetimes, duration, params_*, user_attrs_hyperparameters, state.
    study.trials_dataframe().to_csv(out_dir / "trials.csv", index=False)
    figures = optuna_plots(study, out_dir)
    complete = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=True)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    lines = [f"# Tuning {spec.algo} on {spec.env_id}", "",
             f"study `{spec.study_name}`: {len(trials)} trials ({', '.join(f'{n} {k}' for k, n in counts.items() if n)})",
             "", "| rank | trial | value | hyperparameters |", "|---|---|---|---|"]
    for rank, t in enumerate(complete[:10], 1):
        params = ", ".join(f"{k}={_short(v)}" for k, v in t.user_attrs.get("hyperparameters", {}).items())
        lines.append(f"| {rank} | {t.number} | {t.value:.3f} | {params} |")
    table = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(table)
    best = None
    if complete:
        fixed = {k: spec.base[k] for k in spec.fixed}
        best_values = {**fixed, **complete[0].user_attrs.get("hyperparameters", {})}
        header = (f"# Best of study {spec.study_name} ({spec.algo}, {spec.env_id}): trial {complete[0].number}, "
                  f"value {complete[0].value:.3f}. Use: qzoo train --algo {spec.algo} --env {spec.env_id} -c THIS_FILE\n")
        (out_dir / "best_params.yml").write_text(header + yaml.safe_dump({spec.env_id: best_values}, sort_keys=False))
        best = {"trial": complete[0].number, "value": complete[0].value, "hyperparameters": best_values}
    return {"study": spec.study_name, "storage": redact(spec.storage), "n_trials": len(trials), "states": counts,
            "best": best, "table": table, "out_dir": str(out_dir), "figures": figures}


def optuna_plots(study, out_dir: Path) -> list[str]:
    """Optuna's own optimisation-history and parameter-importance figures (its matplotlib backend), as PNG files
    beside report.md; a figure Optuna cannot draw yet (importance needs two finished trials that differ) is skipped."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_matplotlib

    written = []
    for name, plot in (("optimization_history", optuna_matplotlib.plot_optimization_history),
                       ("param_importances", optuna_matplotlib.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
                axes = plot(study)
            axes.figure.savefig(out_dir / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
            written.append(f"{name}.png")
        except (ValueError, RuntimeError, ZeroDivisionError):
            plt.close("all")
    return written


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
