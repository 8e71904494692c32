"""``qzoo sweep``: many ordinary runs (envs x seeds x configs) as Ray tasks, into one sweep folder that resumes.

    qzoo sweep --env CartPole-v1 Acrobot-v1 --seeds 0-4 -n 50000 --set-grid double_q=true,false --out sweeps/classic
    qzoo sweep --grid grid.yml --out sweeps/classic --address auto        # on a cluster (inside `ray job submit`)

Each task is one single-process ``qzoo train`` (``qzoo.training``) into ``OUT/<name>``, named by its algorithm,
env, seed and grid values. ``OUT/sweep.json`` holds the grid; the state of each run is its own run folder, so a
sweep restarted with the same command runs only what is missing or unfinished: a finished run is skipped, a run
that stopped after a checkpoint goes on with ``--resume``, a run killed before its first checkpoint starts again.
A task whose worker process dies is retried by Ray (``--retries``) and takes the same path. Where the driver's
folder is not on the worker's disk (no shared storage), the task trains in a folder of its own and sends the
finished run folder back as a zip, which the driver unpacks (confined to the run's folder). At the end, the
sweep's curves, score table and IQM (``qzoo plot``) go to ``OUT/plots``.

Ray is the optional ``ray`` extra; a throwaway local Ray listens on 127.0.0.1 only (``qzoo.distributed.connect``).
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from qzoo import config as cfg
from qzoo.errors import QzooError

STATE_FILE = "sweep.json"
MARKER_FILE = ".sweep-id"  # a token the driver writes: a task that reads it back shares the driver's disk


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: what ``qzoo train --env ENV --algo ALGO --set ...`` would be given."""

    name: str
    env_id: str
    algo: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_seeds(text: str) -> list[int]:
    """``0-4`` -> [0, 1, 2, 3, 4]; ``0,3,7`` -> [0, 3, 7]; ranges and lists mix (``0-2,10``)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise QzooError(f"--seeds {text!r}: expected seeds like 0-4 or 0,3,7") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise QzooError(f"--seeds {text!r}: expected distinct seeds >= 0")
    return seeds


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["double_q=true,false", "n_step=1,3"]`` -> {"double_q": [True, False], "n_step": [1, 3]} (YAML values)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise QzooError(f"--set-grid {item!r}: expected KEY=VALUE,VALUE,...")
        grid[key] = [cfg.parse_value(value) for value in values.split(",")]
    return grid


def _value_name(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value).replace("/", "-").replace(" ", "")


def expand(envs: Sequence[str], algo: str, seeds: Sequence[int], fixed: Mapping[str, Any],
           grid: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """Every combination of env, grid values and seed, each a ``RunSpec`` with a distinct folder name."""
    if not envs:
        raise QzooError("sweep needs --env (one or more env ids) or --grid FILE")
    runs = []
    for env_id in envs:
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            for seed in seeds:
                label = "".join(f"-{key}={_value_name(value)}" for key, value in point.items())
                name = f"{algo}-{env_id.replace('/', '-')}{label}-s{seed}"
                runs.append(RunSpec(name, env_id, algo, {**fixed, **point, "seed": seed}))
    return runs


def read_grid_file(path: str) -> dict[str, Any]:
    """A YAML grid: ``env`` (an id or a list), ``algo``, ``seeds`` (``0-4``), ``n``, ``set`` and ``set_grid``
    (mappings; a grid key maps to a list of values)."""
    file = Path(path)
    if not file.is_file():
        raise QzooError(f"grid file not found: {path}")
    data = cfg.parse_yaml(file.read_text(), path)
    allowed = {"env", "algo", "seeds", "n", "set", "set_grid"}
    if not isinstance(data, dict) or set(data) - allowed:
        raise QzooError(f"{path}: expected a mapping with keys {', '.join(sorted(allowed))}")
    return data


def spec_of_request(envs: Sequence[str], algo: str, seeds: str, steps: int | None, fixed: dict[str, Any],
                    grid: dict[str, list[Any]]) -> list[RunSpec]:
    """The runs a command asks for; each run's config is resolved once here, so a bad key fails before any task."""
    fixed = dict(fixed)
    if steps is not None:
        fixed["n_timesteps"] = steps
    runs = expand(envs, algo, parse_seeds(seeds), fixed, grid)
    from qzoo import training

    for run in runs:  # every config resolves (strict keys and types), before the cluster is touched
        training.prepare(run.env_id, run.algo, overrides=run.overrides)
    return runs


# ----------------------------------------------------------------------------------------------- a task


def train_one(spec: dict[str, Any], out: str, marker: str) -> dict[str, Any]:
    """A Ray task: train (or finish) one run of the sweep; its summary, and its zipped folder when the driver's
    disk is not this worker's. The same call resumes a run that a killed attempt left behind."""
    import torch

    from qzoo import training
    from qzoo.runs import read_meta

    torch.set_num_threads(1)  # one CPU per task, like an actor
    run = RunSpec(**spec)
    shared = (Path(out) / MARKER_FILE).is_file() and (Path(out) / MARKER_FILE).read_text() == marker
    root = Path(out) if shared else Path(f"/tmp/qzoo-sweep-{marker}")
    run_dir = root / run.name
    started = time.monotonic()
    status = read_meta(run_dir).get("status") if run_dir.is_dir() else None
    if status != "finished":
        if run_dir.is_dir() and any((run_dir / "checkpoints").glob("step-*")):
            result = training.resume(run_dir, progress=False).learn()
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: nothing to keep
            # One torch thread per task (0 would take one per core: qzoo.threads), unless the grid sets it.
            threads = {} if run.algo == "qlearning" else {"torch_threads": 1}
            plan = training.prepare(run.env_id, run.algo, overrides={**threads, **run.overrides})
            result = training.start(plan, run_dir, argv=None, progress=False).learn()
        status = result.status
    meta = read_meta(run_dir)
    summary = {"name": run.name, "status": status, "best": meta.get("best"), "steps": meta.get("steps"),
               "seconds": round(time.monotonic() - started, 1), "zip": None}
    if not shared:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(run_dir.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(run_dir).as_posix())
        summary["zip"] = buffer.getvalue()
        shutil.rmtree(run_dir, ignore_errors=True)
    return summary


def unpack(data: bytes, run_dir: Path) -> None:
    """A run folder sent back as a zip, unpacked into ``run_dir``; no member may reach outside it."""
    target = run_dir.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.namelist():
            if not (target / member).resolve().is_relative_to(target):
                raise QzooError(f"a sweep task sent back {member!r}, outside its run folder")
        archive.extractall(target)


# ---------------------------------------------------------------------------------------------- driver


def pending(out: Path, runs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs not yet finished in ``out`` (a finished run's run.json says so)."""
    from qzoo.runs import read_meta

    return [run for run in runs if read_meta(out / run.name).get("status") != "finished"]


def seed_first(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """``runs`` in the order a sweep submits them: every cell's lowest seed, then every cell's next one, the grid's
    order within a seed. A sweep stopped part way (a block longer than a working session) has then covered its
    envs and values once before it repeats any of them."""
    return sorted(runs, key=lambda run: run.overrides["seed"])


def open_sweep(out: Path, runs: Sequence[RunSpec], command: list[str] | None) -> None:
    """Create the sweep folder, or check that an existing one holds the same grid (a restart)."""
    state = {"runs": [asdict(run) for run in runs], "command": command}
    path = out / STATE_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            raise QzooError(f"{path} is damaged; give --out a new folder") from None
        if not isinstance(saved, dict) or saved.get("runs") != state["runs"]:
            raise QzooError(f"{out} holds another sweep's grid; give --out a new folder or repeat its command")
        return
    if out.exists() and any(out.iterdir()):
        raise QzooError(f"{out} already holds files and no {STATE_FILE}; give --out a new folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1) + "\n")


def collect(ray: Any, ref: Any, run: RunSpec, out: Path, failed: list[str], stopping: bool) -> dict[str, Any]:
    """The summary of a task that ended; its folder unpacked into ``out`` when it came back zipped. A task that
    raised was either cancelled before it started, once the sweep is ``stopping`` (status 'stopped'), or failed
    past its retries (status 'failed', its reason in ``failed``)."""
    try:
        summary = ray.get(ref)
    except Exception as exc:  # the other tasks go on
        if stopping and isinstance(exc, ray.exceptions.TaskCancelledError):
            return {"name": run.name, "status": "stopped"}
        failed.append(f"{run.name}: {str(exc).strip().splitlines()[-1]}")
        return {"name": run.name, "status": "failed"}
    data = summary.pop("zip", None)
    if data is not None:  # no shared storage: the run's folder came back with the result
        unpack(data, out / run.name)
    return summary


def run_sweep(runs: Sequence[RunSpec], out: Path, address: str | None = None, retries: int = 2,
              command: list[str] | None = None, on_finished: Callable[[dict[str, Any], int, int], None] | None = None,
              label_keys: Sequence[str] = (), cpus: int | None = None) -> dict[str, Any]:
    """Run what is missing of the sweep on Ray, then plot every finished run (``label_keys``: the grid's keys,
    which tell its curves apart); the summary (runs done now, runs a signal left unstarted, skipped, failed, plot
    files). Each run is a task of one CPU, so a local Ray of ``cpus`` CPUs (default: every core) runs at most that
    many at once."""
    from qzoo.distributed import connect, require_ray
    from qzoo.runs import stop_signals_noted

    open_sweep(out, runs, command)
    todo = pending(out, runs)
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    stopped: list[int] = []  # the signal that stopped the sweep, if one did
    if todo:
        ray = require_ray()
        started_here = connect(ray, address, 1, cpus)
        try:
            marker = uuid.uuid4().hex
            (out / MARKER_FILE).write_text(marker)
            task = ray.remote(num_cpus=1, max_retries=retries)(train_one)
            refs = {task.remote(asdict(run), str(out.resolve()), marker): run for run in seed_first(todo)}

            def wait_for_one() -> None:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)  # a signal is seen within 1 s
                if ready:
                    done.append(collect(ray, ready[0], refs.pop(ready[0]), out, failed, bool(stopped)))
                    if on_finished:
                        on_finished(done[-1], len(done), len(todo))

            # A signal to the driver cancels every task: one not started is dropped, and Ray interrupts one running
            # (SIGINT in its worker), which the run takes as its own stop: it ends its step, checkpoints and returns.
            # The driver waits for them (ending at once would let Ray kill the workers mid-step), so the same command
            # resumes each run from the step it reached.
            with stop_signals_noted(stopped.append):
                while refs and not stopped:
                    wait_for_one()
                for ref in refs:
                    ray.cancel(ref)
                while refs:
                    wait_for_one()
        finally:
            (out / MARKER_FILE).unlink(missing_ok=True)
            if started_here:
                ray.shutdown()
    files: list[str] = []
    finished = [run for run in runs if run not in pending(out, runs)]
    if finished and not stopped:
        from qzoo import plotting

        _, written, _ = plotting.report([out / run.name for run in finished], out / "plots", label_keys=label_keys)
        files = [str(f) for f in written]
    not_started = sum(summary["status"] == "stopped" for summary in done)  # the ones a signal dropped
    return {"out": str(out), "runs": len(runs), "ran": len(done) - not_started, "not_started": not_started,
            "skipped": len(runs) - len(todo), "failed": failed, "results": done, "plots": files,
            "stopped_by": stopped[0] if stopped else None}
