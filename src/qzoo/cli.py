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

from qzoo.errors import QzooError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


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
    train.add_argument("--algo", default="dqn", choices=["dqn", "rainbow", "der", "qlearning"],
                       help="dqn (default); rainbow: DQN with every Rainbow switch on (Hessel 2018 presets); "
                       "der: data-efficient Rainbow for Atari 100k (van Hasselt 2019); "
                       "or qlearning: a Q-table for Discrete observations (FrozenLake, Taxi)")
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
                       help="continue a stopped or killed run exactly from its newest checkpoint, with its own config")
    train.add_argument("--deterministic", action="store_true",
                       help="bit-exact DQN runs: device cpu, torch_threads 1 unless set, deterministic torch kernels")

    # One epsilon rule for evaluate, record and enjoy (docs/departures.md, Evaluation).
    epsilon_help = ("random-action probability, in [0, 1] (default: the run's eval_epsilon, 0.05 for Atari "
                    "presets, as in Mnih et al. 2015, else 0); evaluate, record and enjoy play the same episodes")
    evaluate = sub.add_parser("evaluate", help="evaluate a trained agent on full episodes")
    evaluate.add_argument("run", help="run folder or model file")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    evaluate.add_argument("--seed", type=int, default=0, help="episode i starts from seed + i (default 0)")
    evaluate.add_argument("--epsilon", type=float, help=epsilon_help)
    evaluate.add_argument("--best", action="store_true", help="use the best checkpoint instead of the final model")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    enjoy = sub.add_parser("enjoy", help="watch a trained agent play (a window, or PNG frames without a screen)",
                           description="Watch the episodes `qzoo evaluate` scores: episode i from seed + i, "
                                       "epsilon-greedy with the run's eval_epsilon unless --epsilon.")
    enjoy.add_argument("run", help="run folder or model file")
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
    info.add_argument("--json", action="store_true")

    presets = sub.add_parser("presets", help="list the built-in presets and the hyperparameters")
    presets.add_argument("--json", action="store_true")

    tune = sub.add_parser("tune", help="search hyperparameters with Optuna (TPE + median pruning)")
    tune.add_argument("--env", required=True)
    tune.add_argument("--algo", default="dqn", choices=["dqn", "rainbow", "der", "qlearning"],
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
    record.add_argument("--episodes", type=int, default=1)
    record.add_argument("--seed", type=int, default=0)
    record.add_argument("--out", help="mp4 path (default: RUN/videos/<env>.mp4)")
    record.add_argument("--gif", action="store_true", help="also write a GIF beside the mp4")
    record.add_argument("--fps", type=int, default=30)
    record.add_argument("--max-steps", type=int, default=100_000)
    record.add_argument("--epsilon", type=float, help=epsilon_help)
    record.add_argument("--best", action="store_true")
    record.add_argument("--json", action="store_true")

    push = sub.add_parser("push", help="a Hugging Face Hub folder (model card, model, results, video); upload it")
    push.add_argument("run", help="run folder or model file")
    push.add_argument("--out", help="write the folder here and upload nothing")
    push.add_argument("--repo-id", help="Hub repository, user/name (uploads; needs HF_TOKEN or --token)")
    push.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN)")
    push.add_argument("--episodes", type=int, default=10, help="evaluation episodes for the card (default 10)")
    push.add_argument("--seed", type=int, default=0)
    push.add_argument("--no-video", action="store_true")
    push.add_argument("--best", action="store_true")
    push.add_argument("--json", action="store_true")
    return parser


# ----------------------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    from qzoo import config as cfg
    from qzoo.algos import agent_class
    from qzoo.buffer import check_fits
    from qzoo.envs import env_spec, family
    from qzoo.hub import fetch
    from qzoo.runs import RunRecorder, default_run_dir

    if args.resume:
        return _resume_train(args, argv)
    source_agent = None
    if args.source:
        source_agent, _ = _load_agent(str(fetch(args.source)))
        if args.env and args.env != source_agent.env_id:
            raise QzooError(f"--from holds a {source_agent.env_id} agent, not {args.env}")
        if args.algo != source_agent.algo and "--algo" in argv:
            raise QzooError(f"--from holds a {source_agent.algo} agent, not {args.algo}")
        args.env, args.algo = source_agent.env_id, source_agent.algo
    elif not args.env:
        raise QzooError("the following arguments are required: --env (or --resume RUN_DIR, or --from)")
    overrides = cfg.parse_assignments(args.set, "--set")
    if args.deterministic and args.algo != "qlearning":  # a Q-table run is exact already
        overrides = {"device": "cpu", "torch_threads": 1, **overrides, "deterministic": True}
    if args.steps is not None:
        overrides["n_timesteps"] = args.steps
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.until_solved:
        threshold = env_spec(args.env).reward_threshold
        if threshold is None:
            raise QzooError(f"{args.env} has no reward threshold; use --set stop_reward=VALUE")
        overrides["stop_reward"] = float(threshold)
    env_kwargs = cfg.parse_assignments(args.env_kwargs, "--env-kwargs")
    if source_agent is not None:
        # The source's hyperparameters stand where a preset would; -c and --set still come after.
        base = source_agent.config.to_dict()
        config, notes = cfg.resolve(args.env, None, args.config, {**base, **overrides}, env_kwargs, args.algo,
                                    presets=False)
        notes.insert(0, f"from: {args.source} ({source_agent.num_timesteps} env steps)")
    else:
        config, notes = cfg.resolve(args.env, family(args.env), args.config, overrides, env_kwargs, args.algo)

    agent = agent_class(args.algo)(args.env, config)
    if source_agent is not None:
        agent.initialise_from(source_agent)
    if not args.dry_run:
        check_fits(agent.memory_bytes())  # before the run folder exists and before anything is allocated
    if not args.json:
        for note in notes:
            print(f"qzoo: {note}", file=sys.stderr)
    if args.dry_run:
        report = {"env_id": args.env, "algo": args.algo, "config": config.to_dict(), "notes": notes,
                  **agent.describe()}
        _print(report, args.json)
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.runs_root, args.algo, args.env, config.seed)
    recorder = RunRecorder(run_dir, agent, argv, notes, progress=False if args.no_progress or args.json else None)
    return _learn(agent, recorder, None, run_dir, args)


def _resume_train(args: argparse.Namespace, argv: list[str]) -> int:
    """``qzoo train --resume RUN``: every check passes before anything in the run folder changes."""
    from qzoo import checkpoint
    from qzoo.algos import agent_class
    from qzoo.runs import RunRecorder, read_meta

    changes = [flag for flag, given in [("--env", args.env), ("-n", args.steps is not None),
               ("--seed", args.seed is not None), ("--run-dir", args.run_dir), ("-c", args.config), ("--set", args.set),
               ("--env-kwargs", args.env_kwargs), ("--until-solved", args.until_solved),
               ("--deterministic", args.deterministic), ("--dry-run", args.dry_run)] if given]
    if changes:
        raise QzooError(f"--resume continues a run with its own config; drop {', '.join(changes)}")
    run_dir = Path(args.resume)
    if _saved_n_envs(run_dir) > 1:
        raise QzooError(f"{run_dir} ran n_envs > 1 copies of its env, whose state is not saved: it cannot resume "
                        f"exactly; start a new run from its weights with --from {run_dir}")
    saved = checkpoint.read_latest(run_dir)
    if read_meta(run_dir).get("status") == "finished":
        raise QzooError(f"{run_dir} finished its {read_meta(run_dir).get('steps')} env steps; nothing to resume")
    agent = checkpoint.restore(agent_class(saved.state["algo"]), saved)
    recorder = RunRecorder(run_dir, agent, argv, [], progress=False if args.no_progress or args.json else None,
                           resume=saved)
    return _learn(agent, recorder, agent.horizon - agent.num_timesteps, run_dir, args)


def _saved_n_envs(run_dir: Path) -> int:
    """n_envs of a run folder's config.yml (1 where it cannot be read)."""
    import yaml

    try:
        entries = yaml.safe_load((run_dir / "config.yml").read_text())
        return int(next(iter(entries.values())).get("n_envs", 1))
    except (OSError, yaml.YAMLError, AttributeError, StopIteration, TypeError, ValueError):
        return 1


def _learn(agent, recorder, total_timesteps: int | None, run_dir: Path, args: argparse.Namespace) -> int:
    """Train, then close the run folder: finished, interrupted by a signal, or failed.

    On an error (a NaN loss, a full disk) no model is saved: the last good checkpoint stays the newest
    and run.json says ``failed`` with the message.
    """
    status, code = "finished", 0
    with recorder.stopping_on_signals():
        try:
            agent.learn(total_timesteps, recorder=recorder)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, without a checkpoint
            status, code = "interrupted", EXIT_INTERRUPTED
        except BaseException as exc:
            recorder.fail(agent, str(exc))
            raise
    if recorder.stop_requested:
        status, code = "interrupted", 128 + recorder.stop_requested  # 130 for SIGINT, 143 for SIGTERM
    try:
        recorder.finish(agent, status)
    except (OSError, RuntimeError) as exc:  # a full disk; torch.save reports it as a RuntimeError
        from qzoo.checkpoint import write_error

        message = f"cannot save the final model in {run_dir}: {write_error(exc)}"
        recorder.fail(agent, message)
        raise QzooError(message) from None
    report = {"run_dir": str(run_dir), "env_id": agent.env_id, "steps": agent.num_timesteps,
              "episodes": agent.num_episodes, "status": status, "best": recorder.meta.get("best"),
              "weights_sha256": agent.weights_sha256()}
    _print(report, args.json, f"run saved in {run_dir} ({agent.num_timesteps} env steps, {status})")
    return code


def _load_agent(target: str, best: bool = False):
    from qzoo.algos import load_agent
    from qzoo.runs import find_model

    path = find_model(target, best)
    return load_agent(path), path


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise QzooError("--episodes must be >= 1")
    if args.epsilon is not None and not 0 <= args.epsilon <= 1:
        raise QzooError("--epsilon must be in [0, 1]")
    agent, path = _load_agent(args.run, args.best)
    stats = agent.evaluate(args.episodes, seed=args.seed, epsilon=args.epsilon)
    report = {"env_id": agent.env_id, "model": str(path), "steps": agent.num_timesteps, **stats.to_dict()}
    _print(report, args.json,
           f"{agent.env_id}: mean {stats.mean:.2f} +/- {stats.std:.2f} over {len(stats.returns)} episodes; "
           f"result (mean - std) = {stats.result:.2f}")
    return 0


def cmd_enjoy(args: argparse.Namespace) -> int:
    """Watch the episodes ``qzoo evaluate`` scores: same loop, seeds and epsilon (default: the run's eval_epsilon)."""
    import cv2

    from qzoo.evaluation import StepEvent, play_episodes

    if args.episodes < 1 or args.max_steps < 1:
        raise QzooError("--episodes and --max-steps must be >= 1")
    if args.epsilon is not None and not 0 <= args.epsilon <= 1:
        raise QzooError("--epsilon must be in [0, 1]")
    agent, path = _load_agent(args.run, args.best)
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
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        frames_dir = Path(args.frames_dir) if args.frames_dir else run_dir / "enjoy"
        frames_dir.mkdir(parents=True, exist_ok=True)
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

    try:
        play_episodes(agent.greedy_action, env, args.episodes, args.seed, epsilon, on_step=show,
                      max_steps=args.max_steps)
    finally:
        env.close()
    if frames_dir is not None:
        print(f"wrote {frames} frames to {frames_dir}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from qzoo.runs import read_meta

    agent, path = _load_agent(args.run)
    run_dir = Path(args.run) if Path(args.run).is_dir() else None
    meta = read_meta(run_dir) if run_dir else {}
    report = {
        "env_id": agent.env_id, "algo": agent.algo, "variant": getattr(agent, "variant", agent.algo),
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
    from qzoo.algos import ALGOS

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
    overrides = cfg.parse_assignments(args.set, "--set")
    if args.steps is not None:
        overrides["n_timesteps"] = args.steps
    env_kwargs = cfg.parse_assignments(args.env_kwargs, "--env-kwargs")
    config, _ = cfg.resolve(args.env, family(args.env), args.config, overrides, env_kwargs, args.algo)
    probe = agent_class(args.algo)(args.env, config)  # checks the env and the algorithm fit before any trial
    name = f"{args.algo}-{args.env.replace('/', '-')}"
    out = Path(args.out or f"runs/tune-{name}")
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out.resolve() / 'study.db'}"
    spec = TuneSpec(
        env_id=args.env, algo=args.algo, storage=storage, study_name=args.study_name or f"qzoo-{name}",
        base=config.to_dict(), fixed=tuple(sorted(set(overrides) - {"n_timesteps", "seed"})),
        seeds=tuple(config.seed + i for i in range(args.seeds)), evaluations=args.evaluations,
        n_eval_episodes=args.eval_episodes, sampler_seed=args.seed,
        network=getattr(probe, "network_kind", "table"), timeout=args.timeout,
    )
    del probe
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

    runs = plotting.find_runs(args.runs)
    out = Path(args.out)
    files = plotting.plot_curves(runs, out, args.x, args.source, args.smooth, args.label_keys, args.format)
    files += plotting.plot_iqm(runs, out, args.label_keys, args.format)
    table = plotting.score_table(runs, args.label_keys)
    iqm = plotting.iqm_table(runs, args.label_keys)
    (out / "scores.md").write_text("# Final scores\n\n" + table + "\n# IQM across envs\n\n" + iqm)
    files.append(out / "scores.md")
    report = {"runs": len(runs), "envs": sorted({r.env_id for r in runs}), "files": [str(f) for f in files]}
    _print(report, args.json, table + "\n" + iqm + "\n" + "\n".join(f"wrote {f}" for f in files))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from qzoo.video import record

    if args.episodes < 1 or args.fps < 1:
        raise QzooError("--episodes and --fps must be >= 1")
    agent, path = _load_agent(args.run, args.best)
    base = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out = Path(args.out) if args.out else base / "videos" / f"{agent.env_id.replace('/', '-')}.mp4"
    if out.suffix != ".mp4":
        raise QzooError(f"--out must name an .mp4 file, got {out}")
    result = record(agent, out, args.episodes, args.seed, args.fps, args.max_steps,
                    gif=out.with_suffix(".gif") if args.gif else None, epsilon=args.epsilon)
    _print(result, args.json, f"wrote {result['frames']} frames to {out}" + (f" and {result['gif']}" if args.gif else ""))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    import tempfile

    from qzoo.hub import build_folder, upload

    if not args.out and not args.repo_id:
        raise QzooError("push needs --out DIR (write the folder only) or --repo-id USER/NAME (upload)")
    if not args.out and not (args.token or os.environ.get("HF_TOKEN")):
        raise QzooError("no Hugging Face token: set HF_TOKEN or pass --token, or write the folder only with --out")
    agent, path = _load_agent(args.run, args.best)
    if args.out:
        result = build_folder(agent, path, Path(args.out), args.episodes, args.seed, not args.no_video, args.repo_id)
        _print(result, args.json, f"wrote {args.out}: mean {result['mean']:.2f} +/- {result['std']:.2f}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hub"
        result = build_folder(agent, path, folder, args.episodes, args.seed, not args.no_video, args.repo_id)
        result["url"] = upload(folder, args.repo_id, args.token)
    _print(result, args.json, f"uploaded to {result['url']}")
    return 0


def _print(report: dict[str, Any], as_json: bool, line: str | None = None) -> None:
    if as_json:
        print(json.dumps(report, default=str))
    elif line is not None:
        print(line)
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return cmd_train(args, argv)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "enjoy":
            return cmd_enjoy(args)
        commands = {"info": cmd_info, "presets": cmd_presets, "tune": cmd_tune, "plot": cmd_plot,
                    "record": cmd_record, "push": cmd_push}
        return commands[args.command](args)
    except QzooError as exc:
        print(f"qzoo: error: {exc}", file=sys.stderr)
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
