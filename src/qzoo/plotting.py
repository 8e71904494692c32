"""``qzoo plot``: learning curves, score tables and the IQM across envs, from run folders.

Runs are grouped by env and by label (the variant from run.json, e.g. ``dqn`` or ``rainbow``, plus any
hyperparameters named with ``--label-keys``, e.g. ``double_q`` to tell DQN from Double DQN). Each group's
curve is the mean over its runs (seeds) with a 95% bootstrap band, on a common grid of env steps or
wall-clock seconds.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from qzoo import stats
from qzoo.errors import QzooError


@dataclass
class RunData:
    """What a plot needs from one run folder."""

    path: Path
    env_id: str
    algo: str
    config: dict
    evaluations: dict[str, np.ndarray] = field(default_factory=dict)  # step, time, mean, result
    episodes: dict[str, np.ndarray] = field(default_factory=dict)  # step, time, return

    @property
    def env_name(self) -> str:
        """The env id, with its env_kwargs when there are any: slippery and dry FrozenLake differ."""
        kwargs = self.config.get("env_kwargs") or {}
        return self.env_id + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())) + ")" if kwargs else "")

    def label(self, keys: Sequence[str] = ()) -> str:
        parts = [self.algo] + [f"{k}={self.config.get(k)}" for k in keys]
        return " ".join(parts)

    @property
    def final_score(self) -> float | None:
        means = self.evaluations.get("mean")
        return float(means[-1]) if means is not None and means.size else None

    @property
    def final_result(self) -> float | None:
        results = self.evaluations.get("result")
        return float(results[-1]) if results is not None and results.size else None


def _read_csv(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {c: np.array([]) for c in columns}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if all(r.get(c) not in (None, "") for c in columns)]
    return {c: np.array([float(r[c]) for r in rows]) for c in columns}


def load_run(run_dir: Path) -> RunData:
    """Read a run folder written by ``qzoo train``; a damaged one (run.json not an object or without env_id,
    unreadable config.yml or CSV rows) is one QzooError naming it."""
    import yaml

    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        raise QzooError(f"{run_dir} is not a qzoo run folder (no readable run.json)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("env_id"), str):
        raise QzooError(f"{run_dir} is damaged: its run.json is not an object with an env_id")
    try:
        return _load_run(run_dir, meta)
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise QzooError(f"{run_dir} is damaged: {type(exc).__name__} {reason}".rstrip()) from None


def _load_run(run_dir: Path, meta: dict) -> RunData:
    import yaml

    config_entries = yaml.safe_load((run_dir / "config.yml").read_text()) if (run_dir / "config.yml").is_file() else {}
    config = next(iter(config_entries.values()), {}) if isinstance(config_entries, dict) else {}
    config = config if isinstance(config, dict) else {}
    return RunData(
        path=run_dir,
        env_id=meta["env_id"],
        # The variant ("rainbow", "dqn+dueling", ...) tells runs with switches apart; Q-tables have none.
        algo=str(meta.get("variant") or meta.get("algo", "dqn")),
        config=config,
        evaluations=_read_csv(run_dir / "evaluations.csv", ["step", "time", "mean", "result"]),
        episodes=_read_csv(run_dir / "episodes.csv", ["step", "time", "return"]),
    )


def find_runs(paths: Sequence[str | Path]) -> list[RunData]:
    """Every run folder at or below ``paths``."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise QzooError(f"not found: {p}")
        folders = [p] if (p / "run.json").is_file() else sorted(r.parent for r in p.rglob("run.json"))
        runs += [load_run(folder) for folder in folders]
    if not runs:
        raise QzooError(f"no run folders (with run.json) in {', '.join(map(str, paths))}")
    return runs


def run_curve(run: RunData, source: str = "eval", x: str = "steps") -> tuple[np.ndarray, np.ndarray]:
    """(x, y): evaluation mean returns, or training episode returns, against env steps or seconds."""
    table = run.evaluations if source == "eval" else run.episodes
    y = table["mean"] if source == "eval" else table["return"]
    return (table["step"] if x == "steps" else table["time"]), y


def group_runs(runs: Sequence[RunData], label_keys: Sequence[str] = ()) -> dict[str, dict[str, list[RunData]]]:
    """env name -> label -> runs."""
    groups: dict[str, dict[str, list[RunData]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[run.env_name][run.label(label_keys)].append(run)
    return groups


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 100, smooth_window: int = 1):
    """Grid, mean and 95% bootstrap band of curves interpolated on their common x range."""
    curves = [(x, stats.smooth(y, smooth_window)) for x, y in curves if len(x) >= 1]
    if not curves:
        return None
    end = min(x[-1] for x, _ in curves)
    start = max(x[0] for x, _ in curves)
    grid = np.linspace(start, end, points) if end > start else np.array([end])
    values = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean, low, high = stats.bootstrap_band(values)
    return grid, mean, low, high


def _figure(n_panels: int, width_each: float = 4.5, height: float = 3.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n_panels, 3)
    rows = (n_panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width_each * cols, height * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[n_panels:]:
        ax.axis("off")
    return plt, fig, axes.ravel()


def _save(plt, fig, out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=100, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def plot_curves(
    runs: Sequence[RunData], out_dir: Path, x: str = "steps", source: str = "eval", smooth_window: int = 1,
    label_keys: Sequence[str] = (), formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """One panel per env, one line (mean over seeds, 95% bootstrap band) per label."""
    groups = group_runs(runs, label_keys)
    plt, fig, axes = _figure(len(groups))
    for ax, (env_id, by_label) in zip(axes, sorted(groups.items())):
        for label, members in sorted(by_label.items()):
            curve = mean_curve([run_curve(r, source, x) for r in members], smooth_window=smooth_window)
            if curve is None:
                continue
            grid, mean, low, high = curve
            marker = "o" if grid.size <= 20 else None  # a curve of one point is a point
            line = ax.plot(grid, mean, marker=marker, label=f"{label} ({len(members)} run{'s' * (len(members) > 1)})")[0]
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("env steps" if x == "steps" else "wall-clock seconds")
        ax.set_ylabel("evaluation return" if source == "eval" else "training episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, out_dir, "curves", formats)


def score_table(runs: Sequence[RunData], label_keys: Sequence[str] = ()) -> str:
    """Markdown: per env and label, the final evaluation's score and result, mean [95% CI] over seeds."""
    lines = ["| env | algorithm | runs | final score, mean [95% CI] | final result (mean - std), mean [95% CI] |",
             "|---|---|---|---|---|"]
    for env_id, by_label in sorted(group_runs(runs, label_keys).items()):
        for label, members in sorted(by_label.items()):
            scores = [r.final_score for r in members if r.final_score is not None]
            results = [r.final_result for r in members if r.final_result is not None]
            lines.append(f"| {env_id} | {label} | {len(members)} | {_ci_text(scores)} | {_ci_text(results)} |")
    return "\n".join(lines) + "\n"


def _ci_text(values: Sequence[float]) -> str:
    if not values:
        return "no evaluation"
    mean, low, high = stats.bootstrap_ci(values)
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def iqm_by_label(runs: Sequence[RunData], label_keys: Sequence[str] = ()) -> dict[str, tuple[float, float, float, str]]:
    """label -> (IQM, low, high, scale) of normalised final scores over every env, stratified bootstrap."""
    by_label: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    scales = set()
    for env_name, groups in group_runs(runs, label_keys).items():
        for label, members in groups.items():
            scores = [r.final_score for r in members if r.final_score is not None]
            if scores:
                normalised, scale = stats.normalise(members[0].env_id, np.array(scores))
                by_label[label][env_name] += normalised.tolist()
                scales.add(scale)
    scale = " / ".join(sorted(scales))
    return {label: (*stats.stratified_bootstrap_iqm(envs), scale) for label, envs in sorted(by_label.items())}


def plot_iqm(runs: Sequence[RunData], out_dir: Path, label_keys: Sequence[str] = (),
             formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """The IQM of normalised scores per label, with its stratified bootstrap 95% interval."""
    results = iqm_by_label(runs, label_keys)
    plt, fig, axes = _figure(1, width_each=6.0, height=1.0 + 0.5 * len(results))
    ax = axes[0]
    for i, (label, (point, low, high, _)) in enumerate(results.items()):
        ax.errorbar([point], [i], xerr=[[point - low], [high - point]], fmt="o", capsize=4)
    ax.set_yticks(range(len(results)), list(results))
    scale = next(iter(results.values()))[3] if results else ""
    envs = sorted({r.env_name for r in runs})
    ax.set_xlabel(f"IQM of final scores ({scale}), 95% stratified bootstrap CI")
    ax.set_title(f"{len(envs)} env{'s' * (len(envs) > 1)}: {', '.join(envs)}", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(plt, fig, out_dir, "iqm", formats)


def iqm_table(runs: Sequence[RunData], label_keys: Sequence[str] = ()) -> str:
    lines = ["| algorithm | IQM [95% CI] | scale |", "|---|---|---|"]
    for label, (point, low, high, scale) in iqm_by_label(runs, label_keys).items():
        lines.append(f"| {label} | {point:.3f} [{low:.3f}, {high:.3f}] | {scale} |")
    return "\n".join(lines) + "\n"


def report(paths: Sequence[str | Path], out: Path, x: str = "steps", source: str = "eval", smooth: int = 1,
           label_keys: Sequence[str] = (), formats: Sequence[str] = ("png", "svg")) -> tuple[list[RunData], list[Path], str]:
    """``qzoo plot``'s whole output for the run folders at or below ``paths``: curves, the IQM figure and
    ``scores.md`` (score table and IQM table) in ``out``. Returns the runs, the files written and the tables."""
    runs = find_runs(paths)
    files = plot_curves(runs, out, x, source, smooth, label_keys, formats)
    files += plot_iqm(runs, out, label_keys, formats)
    scores, iqm = score_table(runs, label_keys), iqm_table(runs, label_keys)
    (out / "scores.md").write_text("# Final scores\n\n" + scores + "\n# IQM across envs\n\n" + iqm)
    files.append(out / "scores.md")
    return runs, files, scores + "\n" + iqm
