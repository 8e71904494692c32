"""The command line: ``main(argv) -> int`` parses, then calls one function per command.

Every user mistake is a ``QzooError``: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from qzoo.algos import ALGOS
from qzoo.errors import EXIT_INTERRUPTED, QzooError

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, like every other qzoo error."""

    def error(self, message: str):
        raise QzooError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qzoo", description="Train, evaluate and watch Deep Q-Network agents.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent; writes a run folder")
    train.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1, SpaceInvadersNoFrameskip-v4")
    train.add_argument("--from", dest="source", metavar="DIR_OR_HUB_ID",
                       help="start from the weights and hyperparameters of a run, a pushed folder or a Hub repo")
    train.add_argument("--algo", default="dqn", choices=ALGOS,
                       help="dqn (default); rainbow: DQN with every Rainbow switch on (Hessel 2018 presets); "
                       "der: data-efficient Rainbow for Atari 100k (van Hasselt 2019); "
                       "or qlearning: a Q-table for Discrete observations (FrozenLake, Taxi)")
    train.add_argument("--network-timeout", type=float, metavar="SECONDS",
                       help="give a --from download up after this long (default: $QZOO_NETWORK_TIMEOUT, else 300)")
    train.add_argument("-n", "--steps", type=int, help="env steps to train for (sets n_timesteps)")
    train.add_argument("--seed", type=int, help="random seed (sets seed; default 0)")
    train.add_argument("--run-dir", help="run folder to write (default: runs/<algo>-<env>-s<seed>-<time>)")
    train.add_argument("--runs-root", default="runs", help="where default run folders go (default: runs)")
    train.add_argument("-c", "--config", help="YAML file of hyperparameters: flat, or keyed by env id (RL-Zoo dqn.yml)")
    train.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override hyperparameters")
    train.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY=VALUE", help="arguments for gymnasium.make")
    train.add_argument("--until-solved", action="store_true",
                       help="stop once an evaluation reaches the env's reward threshold (sets stop_reward)")
    train.add_argument("--dry-run", action="store_true", help="resolve and print the config; train nothing")
    train.add_argument("--json", action="store_true", help="print the result as one JSON object")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a stopped or killed run exactly from its newest checkpoint, with its own config "
                            "(a distributed run may change its actor count: --set actors=N)")
    train.add_argument("--trust-checkpoint", action="store_true",
                       help="with --resume: accept a checkpoint not signed with your key (~/.config/qzoo/checkpoint."
                            "key), e.g. copied from another machine or user; its env.pkl is a pickle, which runs code")
    train.add_argument("--address", metavar="RAY_ADDRESS",
                       help="with --set actors=N: the Ray cluster to join (auto: the one this machine belongs to, as "
                            "inside `ray job submit`); default: a throwaway local Ray on 127.0.0.1")
    train.add_argument("--track", action="store_true",
                       help="also send config, metrics, evaluations and the final model to Weights & Biases "
                            "(the wandb extra; WANDB_MODE=offline works without network); TensorBoard stays")
    train.add_argument("--wandb-project", default="qzoo", help="W&B project of --track (default qzoo)")
    train.add_argument("--wandb-entity", help="W&B user or team of --track (default: your default entity)")
    train.add_argument("--zoo-compatible", action="store_true",
                       help="Stable-Baselines3's DQN exactly where qzoo's defaults differ: double_q=false (plain DQN "
                            "target), precision=float32; -c and --set still win")
    train.add_argument("--deterministic", action="store_true",
                       help="bit-exact DQN runs: device cpu, torch_threads 1 unless set, deterministic torch kernels")

    # One epsilon rule for evaluate, record and enjoy (docs/departures.md, Evaluation).
    epsilon_help = ("random-action probability, in [0, 1] (default: the run's eval_epsilon, 0.05 for Atari "
                    "presets, as in Mnih et al. 2015, else 0); evaluate, record and enjoy play the same episodes")
    sb3_env_help = "env id of a Stable-Baselines3 zip that does not name it (RL-Zoo's dqn-ENV.zip names it)"
    evaluate = sub.add_parser("evaluate", help="evaluate a trained agent on full episodes")
    evaluate.add_argument("run", help="run folder or model file")
    evaluate.add_argument("--env", help=sb3_env_help)
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    evaluate.add_argument("--seed", type=int, default=0, help="episode i starts from seed + i (default 0)")
    evaluate.add_argument("--epsilon", type=float, help=epsilon_help)
    evaluate.add_argument("--best", action="store_true", help="use the best checkpoint instead of the final model")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--no-progress", action="store_true",
                          help="no per-episode lines (printed where stdout is not a terminal, as train's)")

    enjoy = sub.add_parser("enjoy", help="watch a trained agent play (a window, or PNG frames without a screen)",
                           description="Watch the episodes `qzoo evaluate` scores: episode i from seed + i, "
                                       "epsilon-greedy with the run's eval_epsilon unless --epsilon.")
    enjoy.add_argument("run", help="run folder or model file")
    enjoy.add_argument("--env", help=sb3_env_help)
    enjoy.add_argument("--episodes", type=int, default=1)
    enjoy.add_argument("--seed", type=int, default=0)
    enjoy.add_argument("--max-steps", type=int, default=5_000,
                       help="stop after this many env steps over all episodes (an episode cut short keeps its "
                            "partial return)")
    enjoy.add_argument("--render", choices=["auto", "window", "frames", "text"], default="auto",
                       help="auto: a window where there is a screen, else PNG frames; text: the env's text rendering")
    enjoy.add_argument("--frames-dir", help="write PNG frames here (default: RUN/enjoy)")
    enjoy.add_argument("--epsilon", type=float, help=epsilon_help)
    enjoy.add_argument("--best", action="store_true")

    info = sub.add_parser("info", help="what a run folder holds")
    info.add_argument("run", help="run folder or model file")
    info.add_argument("--env", help=sb3_env_help)
    info.add_argument("--json", action="store_true")

    presets = sub.add_parser("presets", help="list the built-in presets and the hyperparameters")
    presets.add_argument("--json", action="store_true")

    tune = sub.add_parser("tune", help="search hyperparameters with Optuna (TPE + median pruning)")
    tune.add_argument("--env", required=True)
    tune.add_argument("--algo", default="dqn", choices=ALGOS,
                      help="rainbow / der also search n_step, prioritisation, NoisyNets sigma0 and Adam epsilon")
    tune.add_argument("--trials", type=int, default=20, help="trials this command runs (default 20)")
    tune.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    tune.add_argument("--seeds", type=int, default=1, help="seeds per trial; the objective is their mean result")
    tune.add_argument("-n", "--steps", type=int, help="env steps per run (default: the preset's n_timesteps)")
    tune.add_argument("--evaluations", type=int, default=5, help="evaluations per run, fed to the pruner")
    tune.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (default 10)")
    tune.add_argument("--storage", help="database URL shared by workers (default: sqlite in the tuning folder)")
    tune.add_argument("--study-name", help="default: qzoo-<algo>-<env>")
    tune.add_argument("--out", help="tuning folder (default: runs/tune-<algo>-<env>)")
    tune.add_argument("--seed", type=int, help="sampler seed (default: random)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument("-c", "--config", help="YAML file of hyperparameters, as for train")
    tune.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="fixed hyperparameters (not searched)")
    tune.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY=VALUE")
    tune.add_argument("--track", action="store_true",
                      help="each trial is also a Weights & Biases run (its hyperparameters as config, its value in "
                           "the summary), grouped by study name; WANDB_MODE=offline works without network")
    tune.add_argument("--wandb-project", default="qzoo", help="W&B project of --track (default qzoo)")
    tune.add_argument("--wandb-entity", help="W&B user or team of --track (default: your default entity)")
    tune.add_argument("--json", action="store_true")

    plot = sub.add_parser("plot", help="learning curves, score table and IQM from run folders")
    plot.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    plot.add_argument("--out", default="plots", help="output folder (default: plots)")
    plot.add_argument("--x", choices=["steps", "time"], default="steps", help="x axis: env steps or wall-clock time")
    plot.add_argument("--source", choices=["eval", "train"], default="eval",
                      help="evaluation returns (default) or training episode returns")
    plot.add_argument("--smooth", type=int, default=1, help="moving-average window, in points")
    plot.add_argument("--label-keys", nargs="*", default=[], metavar="KEY",
                      help="hyperparameters that tell runs apart beside the algorithm (e.g. double_q)")
    plot.add_argument("--format", nargs="+", choices=["png", "svg"], default=["png", "svg"])
    plot.add_argument("--json", action="store_true")

    record = sub.add_parser("record", help="an mp4 (and GIF) of full evaluation episodes in colour")
    record.add_argument("run", help="run folder, pushed folder or model file")
    record.add_argument("--env", help=sb3_env_help)
    record.add_argument("--episodes", type=int, default=1)
    record.add_argument("--seed", type=int, default=0)
    record.add_argument("--out", help="mp4 path (default: RUN/videos/<env>.mp4)")
    record.add_argument("--gif", action="store_true", help="also write a GIF beside the mp4")
    record.add_argument("--fps", type=int, default=30)
    record.add_argument("--max-steps", type=int, default=100_000)
    record.add_argument("--epsilon", type=float, help=epsilon_help)
    record.add_argument("--best", action="store_true")
    record.add_argument("--json", action="store_true")

    sweep = sub.add_parser("sweep", help="many runs (envs x seeds x configs) as Ray tasks into one folder; resumable",
                           description="Each run is an ordinary qzoo train into OUT/<name>. The same command again "
                                       "runs only what is missing or unfinished (resuming from checkpoints).")
    sweep.add_argument("--env", nargs="+", default=[], help="env ids")
    sweep.add_argument("--algo", default="dqn", choices=ALGOS)
    sweep.add_argument("--seeds", default="0", help="seeds: 0-4, or 0,3,7 (default 0)")
    sweep.add_argument("-n", "--steps", type=int, help="env steps per run (sets n_timesteps)")
    sweep.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="hyperparameters of every run")
    sweep.add_argument("--set-grid", nargs="+", default=[], metavar="KEY=V1,V2",
                       help="hyperparameters to sweep: every combination runs")
    sweep.add_argument("--grid", metavar="FILE", help="YAML with env, algo, seeds, n, set, set_grid instead of flags")
    sweep.add_argument("--out", required=True, help="the sweep folder")
    sweep.add_argument("--address", help="Ray cluster to run on (auto: this machine's); default: a local Ray")
    sweep.add_argument("--retries", type=int, default=2, help="times Ray retries a task whose worker died")
    sweep.add_argument("--cpus", type=int, help="CPUs of the local Ray: at most this many runs at once (default: "
                       "every core; a cluster's CPUs are its own)")
    sweep.add_argument("--json", action="store_true")

    push = sub.add_parser("push", help="a Hugging Face Hub folder (model card, model, results, video); upload it")
    push.add_argument("run", help="run folder or model file")
    push.add_argument("--env", help=sb3_env_help)
    push.add_argument("--out", help="write the folder here and upload nothing")
    push.add_argument("--repo-id", help="Hub repository, user/name (uploads; needs a login, HF_TOKEN or --token)")
    push.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN, else the `huggingface-cli login` one)")
    push.add_argument("--network-timeout", type=float, metavar="SECONDS",
                      help="give the upload up after this long (default: $QZOO_NETWORK_TIMEOUT, else 300)")
    push.add_argument("--episodes", type=int, default=10, help="evaluation episodes for the card (default 10)")
    push.add_argument("--seed", type=int, default=0)
    push.add_argument("--epsilon", type=float,
                      help="random-action probability of the card's evaluation and video (default: the run's "
                           "eval_epsilon, 0.05 for Atari presets, else 0); the card states it")
    push.add_argument("--no-video", action="store_true")
    push.add_argument("--best", action="store_true")
    push.add_argument("--json", action="store_true")
    export = sub.add_parser("export", help="write a run's agent in another library's format")
    export.add_argument("run", help="run folder or model file")
    export.add_argument("--format", choices=["sb3"], required=True,
                        help="sb3: a Stable-Baselines3 DQN zip (plain DQN heads; needs the sb3 extra)")
    export.add_argument("--out", required=True, help="file to write, e.g. model.zip")
    export.add_argument("--best", action="store_true")
    export.add_argument("--env", help=sb3_env_help)
    return parser


# ----------------------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from qzoo import config as cfg
    from qzoo import training

    progress = False if args.no_progress or args.json else None
    if args.resume:
        changes = [flag for flag, given in [
            ("--env", args.env), ("-n", args.steps is not None), ("--seed", args.seed is not None),
            ("--run-dir", args.run_dir), ("-c", args.config), ("--env-kwargs", args.env_kwargs),
            ("--until-solved", args.until_solved), ("--deterministic", args.deterministic),
            ("--dry-run", args.dry_run), ("--from", args.source),
            ("--zoo-compatible", args.zoo_compatible), ("--track", args.track)] if given]
        if changes:
            raise QzooError(f"--resume continues a run with its own config; drop {', '.join(changes)}")
        run = training.resume(args.resume, argv=args.argv, progress=progress, trust_checkpoint=args.trust_checkpoint,
                              overrides=cfg.parse_assignments(args.set, "--set"))
    else:
        if args.trust_checkpoint:
            raise QzooError("--trust-checkpoint goes with --resume RUN_DIR")
        overrides = cfg.parse_assignments(args.set, "--set")
        overrides.update({key: value for key, value in (("n_timesteps", args.steps), ("seed", args.seed))
                          if value is not None})
        if args.zoo_compatible:
            overrides = {**cfg.zoo_compatible(args.algo), **overrides}
        plan = training.prepare(args.env, args.algo, args.config, overrides,
                                cfg.parse_assignments(args.env_kwargs, "--env-kwargs"), source=args.source,
                                algo_given="--algo" in args.argv, until_solved=args.until_solved,
                                deterministic=args.deterministic, network_timeout=args.network_timeout)
        if args.dry_run:
            agent = plan.build_agent()
            agent.close()
            _print_notes(plan.notes, args.json)
            _print({"env_id": plan.env_id, "algo": plan.algo, "config": plan.config.to_dict(), "notes": plan.notes,
                    **agent.describe()}, args.json)
            return 0
        if args.address and not training.distributed(plan.config):
            raise QzooError("--address joins a Ray cluster for a distributed run: add --set actors=N")
        track = None
        if args.track:
            from qzoo.tracking import TrackSpec

            track = TrackSpec(args.wandb_project, args.wandb_entity)
        run = training.start(plan, args.run_dir, runs_root=args.runs_root, argv=args.argv, progress=progress,
                             track=track)
        _print_notes(plan.notes, args.json)
    run.address = args.address  # a distributed run's Ray cluster; a resumed single-process run ignores it
    result = run.learn()
    _print(result.report, args.json,
           f"run saved in {result.run_dir} ({result.report['steps']} env steps, {result.status})")
    return result.exit_code


def _writer_lock(out: Path | None, argv: list[str]):
    """The writer's lock of the run folder that ``out`` lies in, if any (enjoy's frames, record's video, push's
    folder): a run still training there, or another writer, refuses this command before it writes anything."""
    import contextlib
    import shlex

    from qzoo.runs import lock_run_dir

    out = out.absolute() if out is not None else None
    for folder in [out, *out.parents] if out is not None else []:
        if (folder / "run.json").is_file():
            return lock_run_dir(folder, shlex.join(["qzoo", *argv]))
    return contextlib.nullcontext()


def _load_agent(target: str, best: bool = False, env_id: str | None = None):
    from qzoo.training import load_agent

    return load_agent(target, best, env_id)


def _check_playing(args: argparse.Namespace) -> None:
    """--episodes, --seed and --epsilon of evaluate, enjoy, record and push: one rule, checked before loading."""
    from qzoo.config import MAX_SEED

    if args.episodes < 1:
        raise QzooError("--episodes must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        raise QzooError(f"--seed must be in [0, {MAX_SEED}]")
    if getattr(args, "epsilon", None) is not None and not 0 <= args.epsilon <= 1:
        raise QzooError("--epsilon must be in [0, 1]")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_playing(args)
    agent, path = _load_agent(args.run, args.best, env_id=args.env)
    # Progress anywhere, as train's: where stdout is not a terminal (nohup, a notebook, CI), plain lines.
    lines = not (args.json or args.no_progress or sys.stdout.isatty())
    stats = agent.evaluate(args.episodes, seed=args.seed, epsilon=args.epsilon,
                           on_step=_episode_lines(args.episodes) if lines else None)
    report = {"env_id": agent.env_id, "model": str(path), "steps": agent.num_timesteps, **stats.to_dict()}
    _print(report, args.json,
           f"{agent.env_id}: mean {stats.mean:.2f} +/- {stats.std:.2f} over {len(stats.returns)} episodes; "
           f"result (mean - std) = {stats.result:.2f}")
    return 0


def _episode_lines(n_episodes: int):
    """A ``play_episodes`` hook printing one line per finished episode, with the mean so far: the first and the
    last always, the others at least ``runs.progress_seconds()`` apart (a long Atari evaluation shows every
    episode; a thousand CartPole ones do not flood the log)."""
    import time

    from qzoo.runs import progress_seconds

    gap, returns = progress_seconds(), []
    last: float | None = None

    def on_step(event) -> None:
        nonlocal last
        if not event.done:
            return
        returns.append(event.episode_return)
        now = time.perf_counter()
        if last is None or len(returns) == n_episodes or now - last >= gap:
            last = now
            print(f"episode {len(returns)}/{n_episodes}: return {event.episode_return:.2f}, length {event.step} | "
                  f"mean {sum(returns) / len(returns):.2f} over {len(returns)}", flush=True)

    return on_step


def cmd_enjoy(args: argparse.Namespace) -> int:
    """Watch the episodes ``qzoo evaluate`` scores: same loop, seeds and epsilon (default: the run's eval_epsilon)."""
    from qzoo.runs import run_dir_of

    _check_playing(args)
    if args.max_steps < 1:
        raise QzooError("--max-steps must be >= 1")
    agent, path = _load_agent(args.run, args.best, env_id=args.env)
    epsilon = agent.config.eval_epsilon if args.epsilon is None else args.epsilon
    mode = args.render
    if mode == "auto":
        has_screen = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        mode = "window" if has_screen and not args.frames_dir else "frames"
    render_mode = {"window": "human", "frames": "rgb_array", "text": "ansi"}[mode]
    env = agent.make_env(training=False, render_mode=render_mode)
    if render_mode not in (env.metadata.get("render_modes") or []):
        env.close()
        raise QzooError(f"{agent.env_id} cannot render as {mode}; try --render frames")
    frames_dir = None
    if mode == "frames":
        frames_dir = Path(args.frames_dir) if args.frames_dir else run_dir_of(path) / "enjoy"
    try:
        with _writer_lock(frames_dir, args.argv):
            return _enjoy(args, agent, env, epsilon, mode, frames_dir)
    finally:
        env.close()


def _enjoy(args: argparse.Namespace, agent, env, epsilon: float, mode: str, frames_dir: Path | None) -> int:
    import cv2

    from qzoo.evaluation import StepEvent, play_episodes

    if frames_dir is not None:
        try:
            frames_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QzooError(f"cannot write frames to {frames_dir}: {exc.strerror or exc}") from None
    frames = 0

    def show(event: StepEvent) -> None:  # a window draws itself on every step ("human" render mode)
        nonlocal frames
        if frames_dir is not None:
            name = frames_dir / f"ep{event.episode:02d}_{event.step:06d}.png"
            cv2.imwrite(str(name), cv2.cvtColor(event.env.render(), cv2.COLOR_RGB2BGR))
            frames += 1
        elif mode == "text":
            print(event.env.render())
        if event.done:
            print(f"episode {event.episode}: return {event.episode_return:.1f}"
                  + (" (cut by --max-steps)" if event.capped else ""))

    play_episodes(agent.greedy_action, env, args.episodes, args.seed, epsilon, on_step=show, max_steps=args.max_steps)
    if frames_dir is not None:
        print(f"wrote {frames} frames to {frames_dir}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from qzoo.runs import read_meta

    agent, path = _load_agent(args.run, env_id=args.env)
    run_dir = Path(args.run) if Path(args.run).is_dir() else None
    meta = read_meta(run_dir) if run_dir else {}
    report = {
        "env_id": agent.env_id, "algo": agent.algo, "variant": agent.variant,
        "steps": agent.num_timesteps, "episodes": agent.num_episodes,
        "weights_sha256": agent.weights_sha256(), "model": str(path), "status": meta.get("status"),
        "best": meta.get("best"), "config": agent.config.to_dict(),
    }
    if args.json:
        _print(report, True)
    else:
        for key in ("env_id", "algo", "variant", "steps", "episodes", "status", "best", "weights_sha256", "model"):
            print(f"{key}: {report[key]}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from qzoo import config as cfg

    if args.json:
        _print({algo: {"presets": cfg.builtin_presets(algo), "defaults": cfg.SCHEMAS[algo]().to_dict()}
                for algo in ALGOS}, True)
        return 0
    shown_defaults: set[type] = set()
    for algo in ALGOS:
        schema = cfg.SCHEMAS[algo]
        bases = "".join(f"{base}'s presets, then " for base in cfg.PRESET_BASES.get(algo, ()))
        print(f"--algo {algo}: presets (lookup: {bases}default -> family -> env id -> env id[env_kwargs]):")
        for key, values in cfg.builtin_presets(algo).items():
            steps = f"n_timesteps={int(values['n_timesteps']):,}" if "n_timesteps" in values else ""
            print(f"  {key:36s} {steps}".rstrip())
        if schema in shown_defaults:  # rainbow and der: the DQN agent's hyperparameters, listed once
            print()
            continue
        shown_defaults.add(schema)
        print(f"--algo {algo}: hyperparameters (defaults):")
        for name, default, help in cfg.describe_fields(schema):
            print(f"  {name:26s} {str(default):10s} {help}")
        print()
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from qzoo import config as cfg
    from qzoo.algos import agent_class
    from qzoo.envs import family
    from qzoo.tuning import TuneSpec, tune

    for name in ("trials", "jobs", "seeds", "evaluations", "eval_episodes"):
        if getattr(args, name) < 1:
            raise QzooError(f"--{name.replace('_', '-')} must be >= 1")
    track = None
    if args.track:  # W&B installed? before any trial
        from qzoo.tracking import TrackSpec, require_wandb

        require_wandb()
        track = TrackSpec(args.wandb_project, args.wandb_entity)
    overrides = cfg.parse_assignments(args.set, "--set")
    if args.steps is not None:
        overrides["n_timesteps"] = args.steps
    env_kwargs = cfg.parse_assignments(args.env_kwargs, "--env-kwargs")
    config, _ = cfg.resolve(args.env, family(args.env), args.config, overrides, env_kwargs, args.algo)
    probe = agent_class(args.algo)(args.env, config)  # checks the env and the algorithm fit before any trial
    network = probe.network_kind
    probe.close()  # async env copies are subprocesses
    name = f"{args.algo}-{args.env.replace('/', '-')}"
    out = Path(args.out or f"runs/tune-{name}")
    if out.exists() and not out.is_dir():
        raise QzooError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out.resolve() / 'study.db'}"
    spec = TuneSpec(
        env_id=args.env, algo=args.algo, storage=storage, study_name=args.study_name or f"qzoo-{name}",
        base=config.to_dict(), fixed=tuple(sorted(set(overrides) - {"n_timesteps", "seed"})),
        seeds=tuple(config.seed + i for i in range(args.seeds)), evaluations=args.evaluations,
        n_eval_episodes=args.eval_episodes, sampler_seed=args.seed,
        network=network, timeout=args.timeout, track=track, out_dir=str(out), command=tuple(args.argv),
    )
    summary = tune(spec, args.trials, args.jobs, out)
    if args.json:
        _print({k: v for k, v in summary.items() if k != "table"}, True)
    else:
        print(summary["table"])
        if summary["best"]:
            print(f"best hyperparameters: {out / 'best_params.yml'} (qzoo train --env {args.env} -c that file)")
        else:
            print("no trial completed yet: best_params.yml not written")
    return EXIT_INTERRUPTED if summary["interrupted"] else 0


def cmd_plot(args: argparse.Namespace) -> int:
    from qzoo import plotting

    if args.smooth < 1:
        raise QzooError("--smooth must be >= 1 (points in the moving average)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise QzooError(f"--out {out} is a file; give a folder")
    runs, files, tables = plotting.report(args.runs, out, args.x, args.source, args.smooth, args.label_keys,
                                          args.format)
    report = {"runs": len(runs), "envs": sorted({r.env_id for r in runs}), "files": [str(f) for f in files]}
    _print(report, args.json, tables + "\n" + "\n".join(f"wrote {f}" for f in files))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from qzoo.runs import run_dir_of
    from qzoo.video import record

    _check_playing(args)
    if args.fps < 1 or args.max_steps < 1:
        raise QzooError("--fps and --max-steps must be >= 1")
    agent, path = _load_agent(args.run, args.best, env_id=args.env)
    out = Path(args.out) if args.out else run_dir_of(path) / "videos" / f"{agent.env_id.replace('/', '-')}.mp4"
    if out.suffix != ".mp4":
        raise QzooError(f"--out must name an .mp4 file, got {out}")
    with _writer_lock(out, args.argv):
        result = record(agent, out, args.episodes, args.seed, args.fps, args.max_steps,
                        gif=out.with_suffix(".gif") if args.gif else None, epsilon=args.epsilon)
    _print(result, args.json, f"wrote {result['frames']} frames to {out}" + (f" and {result['gif']}" if args.gif else ""))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from qzoo import config as cfg
    from qzoo import sweep

    envs, algo, seeds, steps = args.env, args.algo, args.seeds, args.steps
    fixed, grid = cfg.parse_assignments(args.set, "--set"), sweep.parse_grid(args.set_grid)
    if args.grid:
        data = sweep.read_grid_file(args.grid)
        envs = [data["env"]] if isinstance(data.get("env"), str) else list(data.get("env") or envs)
        algo, seeds, steps = data.get("algo", algo), str(data.get("seeds", seeds)), data.get("n", steps)
        fixed = {**(data.get("set") or {}), **fixed}
        grid = {**{k: list(v) if isinstance(v, list) else [v] for k, v in (data.get("set_grid") or {}).items()}, **grid}
    if args.retries < 0:
        raise QzooError("--retries must be >= 0")
    if args.cpus is not None and (args.cpus < 1 or args.address):
        raise QzooError("--cpus sets the local Ray's CPUs: give it a number >= 1, and no --address")
    runs = sweep.spec_of_request(envs, algo, seeds, steps, fixed, grid)

    def progress(summary: dict, done: int, total: int) -> None:
        best = summary.get("best") or {}
        line = f"[{done}/{total}] {summary['name']}: {summary['status']}"
        if best:
            line += f", best {best['mean']:.1f} at env step {best['step']}"
        print(line + (f" ({summary['seconds']} s)" if "seconds" in summary else ""), file=sys.stderr, flush=True)

    result = sweep.run_sweep(runs, Path(args.out), args.address, args.retries, ["qzoo", *args.argv], progress,
                             label_keys=list(grid), cpus=args.cpus)
    _print(result, args.json, f"{result['runs']} runs in {args.out}: {result['ran']} ran now, {result['skipped']} "
           f"already finished, {len(result['failed'])} failed" + "".join(f"\n  failed: {f}" for f in result["failed"])
           + (f"\n  stopped by signal {result['stopped_by']}: each run it stopped kept a checkpoint at the step it "
              f"reached, {result['not_started']} not started; the same command resumes them"
              if result["stopped_by"] else ""))
    if result["stopped_by"]:
        return 128 + result["stopped_by"]
    return 1 if result["failed"] else 0


def cmd_push(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from qzoo.hub import build_folder, find_token, network_timeout, upload

    if not args.out and not args.repo_id:
        raise QzooError("push needs --out DIR (write the folder only) or --repo-id USER/NAME (upload)")
    _check_playing(args)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise QzooError(f"--out {args.out} is a file; give a new folder")
    network_timeout(args.network_timeout)  # a bad value is refused before any work
    token = None if args.out else find_token(args.token)
    if not args.out and not token:
        raise QzooError("no Hugging Face token: run `huggingface-cli login`, set HF_TOKEN or pass --token, "
                        "or write the folder only with --out")
    agent, path = _load_agent(args.run, args.best, env_id=args.env)
    if args.out:
        with _writer_lock(Path(args.out), args.argv):
            result = build_folder(agent, path, Path(args.out), args.episodes, args.seed, not args.no_video,
                                  args.repo_id, args.epsilon)
        _print(result, args.json, f"wrote {args.out}: mean {result['mean']:.2f} +/- {result['std']:.2f}")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="qzoo-push-")) / "hub"
    result = build_folder(agent, path, folder, args.episodes, args.seed, not args.no_video, args.repo_id,
                          args.epsilon)
    result["url"] = upload(folder, args.repo_id, token, args.network_timeout)  # a failed upload keeps the folder and names it
    shutil.rmtree(folder.parent)
    _print(result, args.json, f"uploaded to {result['url']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from qzoo import sb3

    agent, path = _load_agent(args.run, args.best, env_id=args.env)
    try:
        out = sb3.export(agent, args.out)
    finally:
        agent.close()
    _print({"model": str(path), "format": args.format, "out": str(out)}, False,
           f"wrote {out} (Stable-Baselines3 DQN {sb3.sb3_layout(agent)[0]}, {agent.env_id})")
    return 0


def _print_notes(notes: list[str], as_json: bool) -> None:
    """Which presets applied and which keys were ignored: on stderr, unless the output is JSON."""
    for note in [] if as_json else notes:
        print(f"qzoo: {note}", file=sys.stderr)


def _print(report: dict[str, Any], as_json: bool, line: str | None = None) -> None:
    if as_json:
        print(json.dumps(report, default=str))
    elif line is not None:
        print(line)
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "enjoy": cmd_enjoy, "info": cmd_info,
            "presets": cmd_presets, "tune": cmd_tune, "plot": cmd_plot, "record": cmd_record, "push": cmd_push,
            "sweep": cmd_sweep, "export": cmd_export}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # the command run.json records
        return COMMANDS[args.command](args)
    except QzooError as exc:
        print(f"qzoo: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a path the user gave that is a file, a folder, unwritable, or a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"qzoo: error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("qzoo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> None:
    try:
        sys.exit(main())
    except BrokenPipeError:  # `qzoo presets | head`
        sys.stderr.close()
        sys.exit(0)
