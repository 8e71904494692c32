"""The run folder: everything one training run leaves behind.

    runs/<name>/
        config.yml          resolved hyperparameters, keyed by env id (reusable with ``qzoo train -c``)
        run.json            algo, env id, the command, library versions, the CPU, start and end times, status
        episodes.csv        one row per finished training game: real (unclipped) score and length
        train.csv           every log_interval env steps: epsilon, mean loss, env steps per second
        evaluations.csv     every eval_freq env steps: mean, std and result = mean - std
        tb/                 the same metrics as TensorBoard events
        checkpoints/step-N/     every checkpoint_freq env steps and on SIGINT / SIGTERM: everything exact
                                resume needs (``qzoo.checkpoint``); only the newest is kept
        checkpoints/latest.pt   at the end: the final model with target network and optimizer
        checkpoints/best.pt     the model of the best evaluation so far
        model.pt            the final model (model.npz for a Q-table, like the checkpoints)
        .lock               the writer's lock: an OS file lock (``fcntl.flock``) held by the one process that
                            writes the folder (train, resume, enjoy, record), with its PID inside

``qzoo train --resume RUN`` reopens the folder: each CSV is cut back to its size at the checkpoint
(the rows after it are computed again, so none is lost or written twice) and TensorBoard events
after the checkpoint's step are purged (``purge_step``).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import platform
import shlex
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from qzoo import checkpoint
from qzoo.errors import QzooError
from qzoo.evaluation import EvalStats
from qzoo.files import atomic_write

# Names without suffix: an agent class adds its own (.pt for DQN, .npz for a Q-table).
MODEL_FILE = "model"
LATEST_FILE = "checkpoints/latest"
BEST_FILE = "checkpoints/best"
SUFFIXES = (".pt", ".npz")


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run folder, held by this process until ``release`` (or its death).

    ``fcntl.flock`` on ``RUN/.lock``, not a marker file: the kernel drops the lock when its process ends, even by
    SIGKILL, so a killed holder's lock is simply free again. The holder writes its PID (and command) into the
    file, so a refused writer can name it. Two writers of one folder (two ``--resume``, or a resume of a run
    still training) would truncate each other's CSVs and delete each other's checkpoints: the second is refused.
    """

    def __init__(self, run_dir: Path, command: str | None = None):
        self.path = Path(run_dir) / LOCK_FILE
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise QzooError(f"{run_dir} is a file, not a run folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise QzooError(f"cannot lock run folder {run_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            self._fd = None
            pid, _, what = holder.partition(" ")
            named = f"process {pid}" + (f" ({what})" if what else "") if pid.isdigit() else holder
            raise QzooError(f"{run_dir} is in use by {named}; wait for it to end or stop it") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {command or 'qzoo'}\n".encode(), 0)

    def release(self) -> None:
        """Empty the file and drop the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def stop_signals_noted(note: Callable[[int], None]):
    """While the block runs in the main thread, SIGINT and SIGTERM only call ``note(signum)`` (a loop acts on it at
    its next step) and put the previous handlers back, so that a second signal acts at once; the previous handlers
    are back after the block in any case. Elsewhere than the main thread, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def noted(signum, frame):
        for s, handler in previous.items():
            signal.signal(s, handler)
        note(signum)

    previous = {s: signal.signal(s, noted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def lock_run_dir(run_dir: str | Path, command: str | None = None) -> RunLock:
    """Take the writer's lock of ``run_dir`` (created if missing); a QzooError naming the holder if it is taken."""
    return RunLock(Path(run_dir), command)


def _quiet_event_writer_errors(args: Any, previous: Any = threading.excepthook) -> None:
    """threading.excepthook: an OSError in TensorBoard's event-writer thread (a full disk) is not printed as a
    traceback; the writer raises it again in the training thread at its next write, where the run fails with one
    line (``training.Run``). Every other thread's exception goes to the previous hook."""
    if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboard."):
        return
    previous(args)


def default_run_dir(root: str | Path, algo: str, env_id: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{algo}-{env_id.replace('/', '-')}-s{seed}-{stamp}"
    path = Path(root) / name
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{name}-{n}"
    return path


def library_versions() -> dict[str, str]:
    import ale_py
    import gymnasium
    import numpy
    import torch

    from qzoo import __version__

    return {
        "qzoo": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "ale_py": ale_py.__version__,
        "numpy": numpy.__version__,
    }


def machine() -> dict[str, Any]:
    """The CPU a run trained on (its model name and the CPUs this process may use): wall-clock times in a results
    table mean little without it. Linux reads /proc/cpuinfo; elsewhere ``platform.processor()``."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cpus": usable}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Csv:
    """An append-only CSV file, flushed at each row so a crash loses nothing written."""

    def __init__(self, path: Path, columns: list[str]):
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        if self._file.tell() == 0:
            self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def size(self) -> int:
        """Bytes written so far: where a resumed run cuts the file back to."""
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class RunRecorder:
    """Writes a run folder while an agent's ``learn`` reports to it (see ``qzoo.agent.Recorder``).

    ``resume``: reopen the folder of ``resume``'s run where that checkpoint left it. ``lock``: the folder's
    ``RunLock`` when the caller took it already (resume takes it before reading the checkpoint); otherwise it is
    taken here before anything is written. The recorder releases it when it closes.
    """

    CSV_FILES = ("episodes.csv", "train.csv", "evaluations.csv")

    def __init__(self, run_dir: Path, agent, argv: list[str] | None, notes: list[str], progress: bool | None = None,
                 resume: checkpoint.Checkpoint | None = None, lock: RunLock | None = None):
        command = shlex.join(["qzoo", *argv]) if argv is not None else None
        self.lock = lock or lock_run_dir(run_dir, command)
        try:
            self._open(run_dir, agent, command, notes, progress, resume)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, run_dir: Path, agent, command: str | None, notes: list[str], progress: bool | None,
              resume: checkpoint.Checkpoint | None) -> None:
        run_state: dict[str, Any] = resume.state.get("run") if resume else {}
        if not isinstance(run_state, dict):
            raise QzooError(f"the checkpoint of {run_dir} has no run state; cannot resume")
        if resume is None:
            if any(p.name != LOCK_FILE for p in run_dir.iterdir()):
                raise QzooError(f"{run_dir} already holds files; choose another --run-dir")
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_config(run_dir / "config.yml", agent.env_id, agent.config.to_dict())
            self.meta = {
                "algo": agent.algo,
                "env_id": agent.env_id,
                "command": command,
                "versions": library_versions(),
                "machine": machine(),
                "started": _now(),
                "status": "running",
                "notes": notes,
                **agent.describe(),
            }
        else:
            _cut_back(run_dir, run_state.get("csv_bytes"))
            self.meta = read_meta(run_dir)
            self.meta.update(status="running", best=run_state.get("best"))
            self.meta.pop("error", None)
            self.meta.setdefault("resumed", []).append({"step": resume.step, "at": _now(), "command": command,
                                                        **({"notes": notes} if notes else {})})
            if notes:  # the config changed on resume (``training.RESUME_SETTINGS``): config.yml says what runs now
                write_config(run_dir / "config.yml", agent.env_id, agent.config.to_dict())
        self.dir = run_dir
        self.suffix = agent.file_suffix
        self.started = time.perf_counter() - run_state.get("elapsed", 0.0)
        self.stop_requested = 0  # the signal number once SIGINT or SIGTERM arrived
        self._write_meta()
        self.episodes = _Csv(run_dir / "episodes.csv", ["step", "episode", "return", "length", "time"])
        self.train = _Csv(run_dir / "train.csv", ["step", "epsilon", "loss", "steps_per_second", "time"])
        self.evals = _Csv(run_dir / "evaluations.csv", ["step", "episodes", "mean", "std", "result", "time"])
        from torch.utils.tensorboard import SummaryWriter

        threading.excepthook = _quiet_event_writer_errors
        # On resume, events after the checkpoint's step are hidden: they are written again.
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume.step + 1 if resume else None)
        from tqdm import tqdm

        # progress=None: a bar only on a terminal.
        disable = None if progress is None else not progress
        self.bar = tqdm(total=agent.config.n_timesteps, initial=agent.num_timesteps, unit="step", disable=disable,
                        dynamic_ncols=True, file=sys.stderr)
        self._recent: list[float] = list(run_state.get("recent", []))
        # Progress anywhere: where stdout is not a terminal (`> train.log`, nohup, a notebook, CI), plain lines.
        self.progress_lines = progress is None and not sys.stdout.isatty()
        self.progress_seconds = progress_seconds()
        self._last_line: float | None = None

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def _write_meta(self) -> None:
        text = json.dumps(self.meta, indent=2) + "\n"
        atomic_write(self.dir / "run.json", lambda f: f.write(text.encode()))

    def on_episode(self, agent, episode_return: float, length: int) -> None:
        self.episodes.write({"step": agent.num_timesteps, "episode": agent.num_episodes, "return": episode_return,
                             "length": length, "time": self._elapsed()})
        self.tb.add_scalar("rollout/episode_return", episode_return, agent.num_timesteps)
        self._recent = (self._recent + [episode_return])[-20:]

    def on_train(self, agent, metrics: dict[str, float]) -> None:
        step = agent.num_timesteps
        self.train.write({"step": step, "loss": metrics.get("loss", ""), "epsilon": round(metrics["epsilon"], 6),
                          "steps_per_second": round(metrics["steps_per_second"], 1), "time": self._elapsed()})
        for name, value in metrics.items():
            self.tb.add_scalar(f"train/{name}", value, step)
        self.bar.n = step
        postfix = {"eps": f"{metrics['epsilon']:.3f}", "sps": f"{metrics['steps_per_second']:.0f}"}
        if self._recent:
            postfix["return"] = f"{sum(self._recent) / len(self._recent):.1f}"
        self.bar.set_postfix(postfix, refresh=True)

        self._progress_line(agent, metrics)

    def _progress_line(self, agent, metrics: dict[str, float]) -> None:
        """One plain line on stdout every log_interval env steps or every ``progress_seconds``, whichever comes
        later (the first at the first log_interval), where the bar cannot show."""
        now = time.perf_counter()
        if not self.progress_lines or self._last_line is not None and now - self._last_line < self.progress_seconds:
            return
        self._last_line = now
        step, horizon, sps = agent.num_timesteps, max(agent.horizon, 1), metrics["steps_per_second"]
        eta = (horizon - step) / sps if sps > 0 else float("inf")
        parts = [f"step {step:,}/{horizon:,} ({100 * step / horizon:.0f}%)", f"{sps:.0f} steps/s",
                 f"ETA {_duration(eta)}",
                 f"return {sum(self._recent) / len(self._recent):.2f} (last {len(self._recent)})" if self._recent
                 else "return -", f"eps {metrics['epsilon']:.3f}",
                 f"loss {metrics['loss']:.4g}" if "loss" in metrics else "loss -"]
        print(" | ".join(parts), flush=True)

    def on_evaluation(self, agent, stats: EvalStats, improved: bool) -> None:
        step = agent.num_timesteps
        if self.progress_lines:
            print(f"eval at step {step:,}: mean {stats.mean:.2f} +/- {stats.std:.2f} over {len(stats.returns)} "
                  f"episodes{' (new best)' if improved else ''}", flush=True)
        self.evals.write({"step": step, "episodes": len(stats.returns), "mean": stats.mean, "std": stats.std,
                          "result": stats.result, "time": self._elapsed()})
        self.tb.add_scalar("eval/mean_return", stats.mean, step)
        self.tb.add_scalar("eval/result", stats.result, step)
        if improved:  # the agent keeps the best mean return (``Evaluations``), the folder the best model
            agent.save(self.dir / (BEST_FILE + self.suffix))
            self.meta["best"] = {"step": step, "mean": stats.mean, "std": stats.std, "result": stats.result}
            self._write_meta()

    def on_checkpoint(self, agent) -> None:
        """Everything exact resume needs, with this folder's own state (``qzoo.checkpoint``)."""
        if not agent.exact_resume:
            # Env copies live in other processes whose state cannot be saved: keep the model and
            # optimizer (train --from can start from them), not a resumable checkpoint.
            agent.save(self.dir / (LATEST_FILE + self.suffix), with_training_state=True)
            return
        run_state = {
            "csv_bytes": {name: f.size() for name, f in zip(self.CSV_FILES, (self.episodes, self.train, self.evals))},
            "best": self.meta.get("best"), "recent": self._recent,
            "elapsed": self._elapsed(),
        }
        checkpoint.write(self.dir / "checkpoints", agent, run_state)

    def on_distributed(self, agent, summary: dict[str, Any]) -> None:
        """What a distributed run saw (``qzoo.distributed``): per actor lane its chunks, nodes and weight versions."""
        self.meta["distributed"] = summary
        self._write_meta()

    def on_actor_restart(self, agent, lane: int) -> None:
        """An Ape-X actor died and Ray restarted it (``qzoo.distributed``): run.json lists each restart."""
        self.meta.setdefault("actor_restarts", []).append({"step": agent.num_timesteps, "lane": lane, "at": _now()})
        self._write_meta()

    @contextlib.contextmanager
    def stopping_on_signals(self):
        """SIGINT and SIGTERM set ``stop_requested``: the loop ends its step, checkpoints and stops.

        A second signal acts at once (the previous handlers are back). SIGKILL cannot be caught:
        a killed run resumes from its last checkpoint.
        """
        with stop_signals_noted(lambda signum: setattr(self, "stop_requested", signum)):
            yield

    def _close(self, agent) -> None:
        self.bar.n = agent.num_timesteps
        self.bar.close()
        for f in (self.episodes, self.train, self.evals):
            f.close()
        self.tb.close()
        self.lock.release()

    def finish(self, agent, status: str) -> None:
        """Save the final model and close every file; ``status`` is 'finished' or 'interrupted'."""
        agent.save(self.dir / (MODEL_FILE + self.suffix))
        agent.save(self.dir / (LATEST_FILE + self.suffix), with_training_state=True)
        self.meta.update(status=status, ended=_now(), steps=agent.num_timesteps, episodes=agent.num_episodes,
                         seconds=self._elapsed())
        self._write_meta()
        self._close(agent)

    def fail(self, agent, error: str) -> None:
        """Mark the run failed and close its files, saving no model: the last good checkpoint stays the
        newest (the weights may be NaN, the disk full). Best effort: a full disk must not hide ``error``."""
        self.meta.update(status="failed", error=error, ended=_now(), steps=agent.num_timesteps,
                         episodes=agent.num_episodes, seconds=self._elapsed())
        with contextlib.suppress(OSError):
            self._write_meta()
        with contextlib.suppress(OSError):
            self._close(agent)
        self.lock.release()


PROGRESS_SECONDS = 30.0  # the shortest gap between two progress lines ($QZOO_PROGRESS_SECONDS)


def progress_seconds() -> float:
    """The shortest gap between two plain progress lines (train's steps, evaluate's episodes): $QZOO_PROGRESS_SECONDS,
    else ``PROGRESS_SECONDS``."""
    text = os.environ.get("QZOO_PROGRESS_SECONDS", str(PROGRESS_SECONDS))
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:
        raise QzooError(f"QZOO_PROGRESS_SECONDS must be a number of seconds >= 0, got {text!r}")
    return seconds


def _duration(seconds: float) -> str:
    """``3h02m``, ``4m05s``, ``12s`` or ``?``."""
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


def _cut_back(run_dir: Path, csv_bytes: dict[str, int]) -> None:
    """Cut each CSV back to its size at the checkpoint; checks them all before changing any.

    The names come from a checkpoint's state.json, an untrusted file: only this folder's own CSVs are accepted
    (a crafted ``{"/any/file": 0}`` would otherwise truncate that file)."""
    if not isinstance(csv_bytes, dict) or set(csv_bytes) != set(RunRecorder.CSV_FILES) or not all(
            isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in csv_bytes.values()):
        raise QzooError(f"the checkpoint of {run_dir} names other files than {', '.join(RunRecorder.CSV_FILES)} "
                        f"in its CSV sizes ({sorted(map(str, csv_bytes)) if isinstance(csv_bytes, dict) else csv_bytes}); "
                        "cannot resume")
    for name, size in csv_bytes.items():
        path = run_dir / name
        if not path.is_file() or path.stat().st_size < size:
            raise QzooError(f"{path} is missing or shorter than at the checkpoint ({size} bytes); cannot resume")
    for name, size in csv_bytes.items():
        os.truncate(run_dir / name, size)


def write_config(path: Path, env_id: str, values: dict[str, Any]) -> None:
    header = "# Resolved qzoo config: defaults <- preset <- -c FILE <- --set. Reuse with: qzoo train -c this_file\n"
    path.write_text(header + yaml.safe_dump({env_id: values}, sort_keys=False))


def find_model(target: str | Path, best: bool = False) -> Path:
    """The model file of a run folder (final, else latest checkpoint), or ``target`` itself if a file."""
    path = Path(target)
    if path.is_file():
        return path
    if not path.is_dir():
        raise QzooError(f"run folder not found: {path}")
    candidates = [BEST_FILE] if best else [MODEL_FILE, LATEST_FILE]
    for name in candidates:
        for suffix in SUFFIXES:
            if (path / (name + suffix)).is_file():
                return path / (name + suffix)
    newest = None if best else checkpoint.latest(path / "checkpoints")  # a run killed before its end
    for suffix in SUFFIXES if newest else ():
        if (newest / ("model" + suffix)).is_file():
            return newest / ("model" + suffix)
    zips = [] if best else sorted(path.glob("*.zip"))
    if len(zips) == 1:  # a Stable-Baselines3 model, as RL-Zoo pushes them: <algo>-<env id>.zip (qzoo.sb3)
        return zips[0]
    names = " or ".join(name + ".*" for name in candidates)
    raise QzooError(f"{path} holds no {'best model' if best else 'model'} ({names})")


def run_dir_of(model_path: Path) -> Path:
    """The folder a model file belongs to: its run or pushed folder (``checkpoints/`` files included)."""
    return model_path.parent.parent if model_path.parent.name == "checkpoints" else model_path.parent


def saved_env_copies(run_dir: Path) -> int:
    """Env copies the run folder's config.yml stepped in the training process: its n_envs, or 1 for an Ape-X run
    (actors > 0: the actors step the copies) and where it cannot be read."""
    try:
        values = next(iter(yaml.safe_load((run_dir / "config.yml").read_text()).values()))
        return 1 if int(values.get("actors", 0)) > 0 else int(values.get("n_envs", 1))
    except (OSError, yaml.YAMLError, AttributeError, StopIteration, TypeError, ValueError):
        return 1


def read_meta(run_dir: Path) -> dict[str, Any]:
    """run.json, or {} where it is missing, unreadable or not a JSON object (a damaged folder)."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
