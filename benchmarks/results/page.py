"""Write docs/results.md from the sweep folders of benchmarks/results/run.py, whatever of them exists.

    python benchmarks/results/page.py [--results results] [--out docs/results.md]
        [--figures docs/figures/results] [--summary benchmarks/results/summary.json]
        [--records benchmarks/results/records] [--block BLOCK ...] [--drop-missing]

The prose is template.md's; the published figures are anchors.yml's; the tables, figures and the summary come from
the run folders of each grid's sweep folder ``RESULTS/BLOCK/GRID`` (its sweep.json lists the runs it holds). Only
finished runs enter a table (a run's final evaluation is at the end of its budget); a block whose grids have no
finished run says "not run yet" with its command. Intervals: ``qzoo.stats.bootstrap_ci`` over seeds, the IQM's
``qzoo.stats.stratified_bootstrap_iqm`` through ``qzoo.plotting.iqm_by_label``; figures: ``qzoo.plotting.report``
(what ``qzoo plot`` writes) and, for Space Invaders, the course mark's curves from ``qzoo.plotting.mean_curve``.

Every finished run read from a folder is also written to its committed record (``run.py``'s ``keep``); a run
whose folder is absent or unfinished is read from its record. The page is not written, and the command exits 1,
if a finished run that the previous summary lists would be lost (``--drop-missing`` writes it anyway).
``--block`` writes only those blocks' sections and summary entries and keeps the others as they are, so a block
run on one machine can be published without the folders of the others.
"""

from __future__ import annotations

import argparse
import collections
import csv
import importlib.util
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from qzoo import plotting, stats
from qzoo.runs import read_meta

HERE = Path(__file__).resolve().parent


def _load_run_py():
    """run.py, beside this file, names the blocks, their grids and commands (loaded by path: no package here)."""
    spec = importlib.util.spec_from_file_location("qzoo_results_run", HERE / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


blocks = _load_run_py()

ROOT = blocks.ROOT


@dataclass
class Grid:
    """One grid of a block and what its sweep folder holds."""

    block: str
    path: Path  # the grid file
    command: str  # the canonical qzoo sweep command (results under results/)
    planned: list[dict[str, Any]] = field(default_factory=list)  # sweep.json's runs; empty: never started
    finished: list[plotting.RunData] = field(default_factory=list)
    unfinished: list[plotting.RunData] = field(default_factory=list)  # started, with evaluations, not finished
    metas: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> run.json
    other_command: str | None = None  # the sweep command saved in sweep.json when it names another grid file

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def status(self) -> str:
        if not self.planned:
            return "not run yet"
        done = len(self.finished)
        text = "complete" if done == len(self.planned) else f"{done} of {len(self.planned)} runs finished"
        return text + (f"; the folder was written by another command: `{self.other_command}`"
                       if self.other_command else "")


def read_grid(block: str, path: Path, results: Path, records: Path) -> Grid:
    """A grid's runs from its sweep folder and, for each run without a finished folder there, its record: a grid
    that was never started here but has records reads as its grid file plans it."""
    grid = Grid(block, path, blocks.command_text(path))
    out = results / block / path.stem
    try:
        state = json.loads((out / "sweep.json").read_text())
        grid.planned = state["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        state = {}
        planned = blocks.grid_runs(path)[0]
        if any(blocks.has_record(records, block, path.stem, run.name) for run in planned):
            grid.planned = [asdict(run) for run in planned]
    saved = state.get("command")
    if isinstance(saved, list) and "--grid" in saved[:-1]:
        named = Path(saved[saved.index("--grid") + 1])
        if (named.parent.name, named.name) != (block, path.name):  # e.g. a smoke test's own grid
            grid.other_command = " ".join(map(str, saved))
    for spec in grid.planned:
        folder = out / spec["name"]
        meta = read_meta(folder)
        record = blocks.record_path(records, block, path.stem, spec["name"])
        if meta.get("status") != "finished" and not grid.other_command and \
                read_meta(record).get("status") == "finished":
            folder, meta = record, read_meta(record)
        grid.metas[spec["name"]] = meta
        if meta.get("status") == "finished":
            grid.finished.append(as_planned(plotting.load_run(folder), spec))
        elif meta and (folder / "evaluations.csv").is_file():
            run = as_planned(plotting.load_run(folder), spec)
            if run.evaluations["step"].size:
                grid.unfinished.append(run)
    return grid


def as_planned(run: plotting.RunData, spec: dict[str, Any]) -> plotting.RunData:
    """The run named by the preset its grid asked for: ``--algo der`` stacks on the Rainbow preset, so its run.json
    variant says "rainbow"; plain DQN keeps its variant (Double DQN or not, switches)."""
    return run if spec.get("algo", "dqn") == "dqn" else replace(run, algo=spec["algo"])


def keep_records(grids: Sequence[Grid], records: Path) -> int:
    """Record every finished run read from a sweep folder of the grids' own commands (run.py's ``keep``); how many
    records were written."""
    written = 0
    for grid in grids:
        if grid.other_command:  # another grid file wrote the folder: its runs are not this grid's results
            continue
        for run in grid.finished:
            record = blocks.record_path(records, grid.block, grid.name, run.path.name)
            if run.path.resolve() != record.resolve():
                blocks.keep(run.path, record)
                written += 1
    return written


def lost_runs(summary_path: Path, grids: Sequence[Grid]) -> list[str]:
    """Finished runs of these grids that the summary written last time lists and that neither a folder nor a record
    holds now."""
    try:
        old = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return []
    now = {f"{g.block}/{g.name}": {run.path.name for run in g.finished} for g in grids}
    return [f"{key}/{run.get('name')}" for key, entry in (old.items() if isinstance(old, dict) else ())
            for run in ((entry.get("runs") or []) if isinstance(entry, dict) else [])
            if key in now and isinstance(run, dict) and run.get("status") == "finished"
            and run.get("name") not in now[key]]


# ------------------------------------------------------------------------------------------- formatting


def table_label(algo: str, double_q: bool) -> str:
    """DQN, Double DQN, Rainbow or DER, as the tables name an algorithm."""
    if algo == "dqn":
        return "Double DQN" if double_q else "DQN"
    return {"rainbow": "Rainbow", "der": "DER"}.get(algo, algo)


def algorithm_name(run: plotting.RunData) -> str:
    """A finished run's algorithm: the variant run.json names, and double_q for plain DQN."""
    return table_label(run.algo, bool(run.config.get("double_q")))


def ci_text(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "-"
    if len(values) == 1:  # a bootstrap over one seed is that seed: [x, x] would read as an interval
        return f"{values[0]:.{digits}f} (one seed: no interval)"
    mean, low, high = stats.bootstrap_ci(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def wall_clock(metas: Sequence[dict[str, Any]]) -> str:
    """Median (min-max) minutes per run."""
    seconds = [float(m["seconds"]) for m in metas if isinstance(m.get("seconds"), (int, float))]
    if not seconds:
        return "-"
    text = f"{minutes(statistics.median(seconds))} min"
    return text + (f" ({minutes(min(seconds))}-{minutes(max(seconds))})" if len(seconds) > 1 else "")


def cpu_text(metas: Sequence[dict[str, Any]]) -> str:
    """The CPU model(s) and usable CPU count(s) of run.json's ``machine``; older runs did not record it."""
    seen = []
    for meta in metas:
        machine = meta.get("machine") or {}
        text = f"{machine['cpu']}, {machine.get('cpus', '?')} CPUs" if machine.get("cpu") else "not recorded"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or "-"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def meta_of(grid: Grid, run: plotting.RunData) -> dict[str, Any]:
    return grid.metas.get(run.path.name, {})


def relative(path: Path, page: Path) -> str:
    return Path(os.path.relpath(path, page.parent)).as_posix()


def commands_text(grids: Sequence[Grid]) -> str:
    return "```\n" + "\n".join(g.command for g in grids) + "\n```\n"


def not_run_text(grids: Sequence[Grid]) -> str:
    return "\n".join(f"- not run yet: `{g.command}`" for g in grids) + "\n"


def status_text(grids: Sequence[Grid]) -> str:
    return "\n".join(f"- `{g.block}/{g.name}`: {g.status}" for g in grids) + "\n"


# ----------------------------------------------------------------------------------------------- blocks


def figures(runs: list[plotting.RunData], folder: Path, page: Path, label_keys: Sequence[str],
            iqm: bool = True) -> str:
    """``qzoo plot``'s curves and IQM (unless ``iqm`` is false) for the runs, as PNG into ``folder``; Markdown
    image links."""
    _, files, _ = plotting.report([r.path for r in runs], folder, label_keys=label_keys, formats=("png",))
    images = [f for f in files if f.suffix == ".png"]
    if not iqm:
        for f in [f for f in images if f.stem == "iqm"]:
            f.unlink()
            images.remove(f)
    return "\n".join(f"![{f.stem}]({relative(f, page)})" for f in images) + "\n"


def runs_by(grids: Sequence[Grid]) -> list[tuple[Grid, plotting.RunData]]:
    return [(g, r) for g in grids for r in g.finished]


def group(pairs: Sequence[tuple[Grid, plotting.RunData]], key) -> dict[Any, list[tuple[Grid, plotting.RunData]]]:
    groups: dict[Any, list] = {}
    for grid, run in pairs:
        groups.setdefault(key(run), []).append((grid, run))
    return dict(sorted(groups.items(), key=lambda item: str(item[0])))


def planned_label(spec: dict[str, Any]) -> str:
    """A planned run's algorithm (``algorithm_name`` of its finished run): the presets' double_q is true."""
    return table_label(spec["algo"], spec.get("overrides", {}).get("double_q", True))


def planned_count(grids: Sequence[Grid], env_id: str, name: str) -> int:
    """Runs of this env and algorithm the grids ask for (seeds)."""
    return sum(spec["env_id"] == env_id and planned_label(spec) == name for grid in grids for spec in grid.planned)


def cells(grids: Sequence[Grid], pairs: Sequence[tuple[Grid, plotting.RunData]]) -> dict[tuple[str, str], list]:
    """Every (env id, algorithm) the grids plan, with its finished runs: a cell none of whose seeds has finished yet
    keeps its row (empty list), so a partial block shows what it still lacks."""
    found = group(pairs, lambda r: (r.env_id, algorithm_name(r)))
    planned = {(spec["env_id"], planned_label(spec)) for grid in grids for spec in grid.planned}
    return {cell: found.get(cell, []) for cell in sorted(planned | set(found), key=str)}


def block_opening(grids: list[Grid]) -> tuple[list, str]:
    """Every block starts alike: its runs, and its commands followed by what ran (or, with no run, what to run)."""
    pairs = runs_by(grids)
    if not pairs:
        return pairs, commands_text(grids) + "\n" + not_run_text(grids)
    return pairs, commands_text(grids) + "\n" + status_text(grids) + "\n"


def classic_block(grids: list[Grid], anchors: dict, page: Path, figure_dir: Path) -> str:
    pairs, text = block_opening(grids)
    if not pairs:
        return text
    rows = []
    for (env_id, name), members in cells(grids, pairs).items():
        anchor = anchors["envs"].get(env_id) or {}
        zoo = f"{anchor['mean']:.2f} +/- {anchor['std']:.2f}" if anchor.get("mean") is not None else "-"
        runs = [r for _, r in members]
        if not runs:
            rows.append([env_id, name, f"0 of {planned_count(grids, env_id, name)}", "no seed finished yet", "-", zoo,
                         "-", "-"])
            continue
        metas = [meta_of(g, r) for g, r in members]
        rows.append([env_id, name, f"{len(runs)} of {planned_count(grids, env_id, name)}",
                     ci_text([r.final_score for r in runs if r.final_score is not None], 1),
                     ci_text([r.final_result for r in runs if r.final_result is not None], 1),
                     zoo, wall_clock(metas), cpu_text(metas)])
    text += table(["env", "algorithm", "seeds finished", "final score, mean [95% CI]",
                   "final mean - std, mean [95% CI]", "RL-Zoo DQN (one run, mean +/- std)",
                   "wall-clock per run, median (min-max)", "CPU"], rows)
    return text + "\n" + figures([r for _, r in pairs], figure_dir / "classic", page, ["double_q"])


def evaluation_stds(run_dir: Path) -> list[float]:
    """evaluations.csv's std column (``qzoo.plotting.RunData`` keeps mean and result, not std)."""
    with open(run_dir / "evaluations.csv", newline="") as f:
        return [float(row["std"]) for row in csv.DictReader(f) if row.get("std") not in (None, "")]


def first_pass(run: plotting.RunData, mark: float) -> tuple[float, float] | None:
    """(env step, seconds) of the first evaluation whose mean - std reaches ``mark``."""
    for step, seconds, result in zip(run.evaluations["step"], run.evaluations["time"], run.evaluations["result"]):
        if result >= mark:
            return float(step), float(seconds)
    return None


def spaceinvaders_block(grids: list[Grid], anchors: dict, page: Path, figure_dir: Path) -> str:
    """The course mark per run. Unfinished runs (a 1M-step run spans sessions) show their evaluations so far:
    the first pass of the mark is already a measured figure; their last evaluation is not a final one."""
    pairs, text = block_opening(grids)
    partial = [(g, r) for g in grids for r in g.unfinished]
    if not pairs and not partial:
        return text
    if not pairs:
        text = commands_text(grids) + "\n" + status_text(grids) + "\n"
    mark, rows = float(anchors["mark"]), []
    for grid, run in sorted(pairs + partial, key=lambda p: (p[0].name, p[1].config.get("seed", 0))):
        meta, evals = meta_of(grid, run), run.evaluations
        done = meta.get("status") == "finished"
        std = evaluation_stds(run.path)
        last = f"{evals['mean'][-1]:.1f} +/- {std[-1]:.1f}" if evals["mean"].size and std else "-"
        passed = first_pass(run, mark)
        if passed:
            when, minute = f"{passed[0]:,.0f}", minutes(passed[1])
        else:
            best = float(evals["result"].max()) if evals["result"].size else float("nan")
            gap = f"best mean - std {best:.1f}, {mark - best:.1f} short"
            when, minute = f"not passed{'' if done else ' yet'}: {gap}", "-"
        progress = "finished" if done else f"unfinished: last evaluation at {evals['step'][-1]:,.0f} env steps"
        rows.append([grid.name, algorithm_name(run), run.config.get("seed"), progress, when, minute, last,
                     f"{evals['result'][-1]:.1f}" if evals["result"].size else "-",
                     wall_clock([meta]) if done else "-", cpu_text([meta])])
    text += table(["recipe", "algorithm", "seed", "run", "mark first passed at env step", "at minute",
                   "last evaluation: mean +/- std (10 games)", "its mean - std", "wall-clock", "CPU"], rows)
    path = course_figure(grids, mark, figure_dir / "spaceinvaders")
    return text + f"![course mark curves]({relative(path, page)})\n"


def course_figure(grids: Sequence[Grid], mark: float, folder: Path) -> Path:
    """Mean score and mean - std (10 games) against env steps and wall-clock minutes, one line per recipe (mean
    over seeds, 95% bootstrap band), the course mark drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    for row, column in enumerate(("mean", "result")):
        for col, x in enumerate(("step", "time")):
            ax = axes[row][col]
            for grid in grids:
                runs = grid.finished + grid.unfinished
                curves = [(r.evaluations[x] / (60 if x == "time" else 1), r.evaluations[column]) for r in runs]
                curve = plotting.mean_curve(curves)
                if curve is None:
                    continue
                points, mean, low, high = curve
                line = ax.plot(points, mean, label=f"{grid.name} ({len(runs)} seed{'s' * (len(runs) != 1)}"
                               + (f", {len(grid.unfinished)} unfinished)" if grid.unfinished else ")"))[0]
                ax.fill_between(points, low, high, color=line.get_color(), alpha=0.2)
            if column == "result":
                ax.axhline(mark, color="grey", linestyle="--", label=f"course mark {mark:g}")
            ax.set_xlabel("env steps" if x == "step" else "wall-clock minutes")
            ax.set_ylabel("mean score, 10 games" if column == "mean" else "mean - std, 10 games")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "course_mark.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def atari100k_block(grids: list[Grid], anchors: dict, page: Path, figure_dir: Path) -> str:
    pairs, text = block_opening(grids)
    if not pairs:
        return text
    rows = []
    for (env_id, name), members in cells(grids, pairs).items():
        game = stats.atari_game(env_id)
        anchor = anchors["games"].get(game) or {}
        runs = [r for _, r in members]
        scores = [r.final_score for r in runs if r.final_score is not None]
        low, high = anchor.get("random"), anchor.get("human")
        normalise = (lambda s: f"{(s - low) / (high - low):.3f}") if low is not None and high is not None else None
        der = anchor.get("der")
        der_text = f"{der:g}" if der is not None else f"- ({anchor.get('note', 'not read')})"
        der_normalised = normalise(der) if normalise and der is not None else "-"
        if not runs:
            rows.append([game, name, f"0 of {planned_count(grids, env_id, name)}", "no seed finished yet", der_text,
                         "-", der_normalised, "-", "-"])
            continue
        rows.append([game, name, f"{len(runs)} of {planned_count(grids, env_id, name)}", ci_text(scores, 1),
                     der_text, normalise(statistics.fmean(scores)) if normalise and scores else "-", der_normalised,
                     wall_clock([meta_of(g, r) for g, r in members]), cpu_text([meta_of(g, r) for g, r in members])])
    text += table(["game", "algorithm", "seeds finished", "final score, mean [95% CI]", "DER, van Hasselt 2019",
                   "human-normalised, qzoo mean", "human-normalised, DER", "wall-clock per run", "CPU"], rows)
    iqm = plotting.iqm_by_label([r for _, r in pairs])
    games = sorted({stats.atari_game(r.env_id) for _, r in pairs})
    planned = {spec["env_id"] for grid in grids for spec in grid.planned}
    # one seed per game: every stratified resample is the same runs, so the interval would be the point itself
    single = max(collections.Counter(r.env_id for _, r in pairs).values()) == 1
    text += "\n" + "\n".join(
        f"IQM of human-normalised final scores, {label}, {len(games)} of the {len(planned)} games planned "
        f"({', '.join(games)}): " + (f"**{point:.3f}** (one seed per game: no interval)" if single else
                                     f"**{point:.3f} [{lo:.3f}, {hi:.3f}]** (95% stratified bootstrap CI)")
        for label, (point, lo, hi, _) in iqm.items())
    return text + "\n\n" + figures([r for _, r in pairs], figure_dir / "atari100k", page, [])


def minatar_block(grids: list[Grid], anchors: dict, page: Path, figure_dir: Path) -> str:
    pairs, text = block_opening(grids)
    if not pairs:
        return text
    rows = []
    for (env_id, name), members in cells(grids, pairs).items():
        game = env_id.split("/")[-1].split("-v")[0]
        anchor = (anchors["games"].get(game) or {}).get("dqn")
        anchor_cell = f"{anchor:g}" if anchor is not None else "- (not read yet)"
        runs = [r for _, r in members]
        if not runs:
            rows.append([env_id, name, f"0 of {planned_count(grids, env_id, name)}", "no seed finished yet",
                         anchor_cell, "-", "-"])
            continue
        rows.append([env_id, name, f"{len(runs)} of {planned_count(grids, env_id, name)}",
                     ci_text([r.final_score for r in runs if r.final_score is not None], 2), anchor_cell,
                     wall_clock([meta_of(g, r) for g, r in members]), cpu_text([meta_of(g, r) for g, r in members])])
    text += table(["game", "algorithm", "seeds finished", "final score, mean [95% CI]",
                   "Young & Tian 2019 DQN at 1M frames", "wall-clock per run", "CPU"], rows)
    # MinAtar has no reference scores (stats.normalise: raw), so an IQM across its games would mix their scales
    return text + "\n" + figures([r for _, r in pairs], figure_dir / "minatar", page, [], iqm=False)


def anchor_text(block: str, anchors: dict) -> str:
    """The block's published figures as anchors.yml gives them, with where and how each was read: on the page
    whether or not the block has run."""
    def number(value: Any) -> str:
        return "not read (see below)" if value is None else f"{value:g}"

    if block == "classic":
        rows = [[env, a["algo"], f"{a['mean']:.3f} +/- {a['std']:.3f}", f"{a['n_timesteps']:,}", a["eval_episodes"]]
                for env, a in anchors["envs"].items()]
        text = table(["env", "RL-Zoo algo", "mean_reward +/- std_reward", "n_timesteps", "eval episodes"], rows)
    elif block == "atari100k":
        rows = [[game, "-" if a.get("der") is None else f"{a['der']:g}", f"{a['random']:g}", f"{a['human']:g}",
                 a.get("note", "")]
                for game, a in anchors["games"].items()]
        text = table(["game", "DER (van Hasselt et al. 2019)", "random", "human", "note"], rows)
    elif block == "minatar":
        rows = [[game, number(a.get("dqn"))] for game, a in anchors["games"].items()]
        text = table(["game", "Young & Tian 2019 DQN at 1M frames"], rows)
    else:
        text = f"The course mark: mean - std >= {anchors['mark']:g} over {anchors['episodes']} full games.\n"
    return f"Anchor:\n\n{text}\nSource: {anchors['source']}\n\nHow it was read: {anchors['how_read']}\n"


BUILDERS = {"classic": classic_block, "spaceinvaders": spaceinvaders_block, "atari100k": atari100k_block,
            "minatar": minatar_block}


def summary(grids: Sequence[Grid]) -> dict[str, Any]:
    """Each run's run.json metadata that a reader needs to reproduce or judge it: versions, command, seed,
    wall-clock, machine, status; the train command equivalent to the sweep's task."""
    out: dict[str, Any] = {}
    for grid in grids:
        runs = []
        for spec in grid.planned:
            meta = grid.metas.get(spec["name"], {})
            overrides = spec.get("overrides", {})
            settings = " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items())
            runs.append({"name": spec["name"], "env_id": spec["env_id"], "algo": spec["algo"],
                         "seed": overrides.get("seed"), "status": meta.get("status", "missing"),
                         "train_command": f"qzoo train --env {spec['env_id']} --algo {spec['algo']} --set {settings}",
                         **{k: meta.get(k) for k in ("variant", "versions", "machine", "started", "ended", "seconds",
                                                      "steps", "best", "resumed")}})
        out[f"{grid.block}/{grid.name}"] = {"command": grid.command, "grid": grid.path.relative_to(ROOT).as_posix(),
                                            "written_by": grid.other_command or grid.command if grid.planned else None,
                                            "status": grid.status, "runs": runs}
    return out


def sections(text: str) -> dict[str, str]:
    """A page's parts in order: what comes before the first ``## `` heading (key ""), then each section by its
    heading line, up to the next heading; joined, they are the page."""
    parts: dict[str, str] = {"": ""}
    heading = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            heading = line.rstrip()
        parts[heading] = parts.get(heading, "") + line
    return parts


def heading_of(template: str, block: str) -> str:
    """The ``## `` heading line above the block's placeholder in the template."""
    before = template[:template.index("{{" + block + "}}")]
    return [line for line in before.splitlines() if line.startswith("## ")][-1]


def kept_parts(page: Path, summary_path: Path, template: str, kept: Sequence[str]) -> tuple[dict, dict]:
    """The sections of the kept blocks as the page has them, by heading, and their grids' summary entries; a
    KeyError (or an OSError, ValueError) where the page or the summary lacks one."""
    if not kept:
        return {}, {}
    old_page, old_summary = sections(page.read_text()), json.loads(summary_path.read_text())
    headings = [heading_of(template, block) for block in kept]
    entries = {f"{block}/{path.stem}": old_summary[f"{block}/{path.stem}"] for block in kept
               for path in blocks.grids(block)}
    return {heading: old_page[heading] for heading in headings}, entries


def with_counts(text: str, entries: dict[str, Any]) -> tuple[str, int]:
    """The page with its grid and run counts and section 5's cluster commands, from the summary's entries; and
    how many runs are finished."""
    runs = [run for entry in entries.values() for run in entry["runs"]]
    finished = sum(run.get("status") == "finished" for run in runs)
    missing = [entry for entry in entries.values() if entry["status"] != "complete"]
    cluster = "\n".join(f"{entry['command']} --address auto    # {entry['status']}" for entry in missing)
    text = text.replace("{{not_run}}", f"```\n{cluster}\n```" if missing else "Every block's grid is complete.")
    text = text.replace("{{generated}}", f"Grids started: {sum(1 for e in entries.values() if e['runs'])} of "
                        f"{len(entries)}; runs finished: {finished} of the {len(runs)} that the started grids hold.")
    return text, finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(ROOT / blocks.DEFAULT_RESULTS), help="the sweep folders' root")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--figures", default=str(ROOT / "docs" / "figures" / "results"))
    parser.add_argument("--summary", default=str(HERE / "summary.json"))
    parser.add_argument("--records", default=str(blocks.RECORDS), help="the committed records of finished runs")
    parser.add_argument("--block", nargs="+", choices=blocks.BLOCKS, default=list(blocks.BLOCKS),
                        help="write only these blocks' sections; the others stay as the page and summary have them")
    parser.add_argument("--drop-missing", action="store_true",
                        help="write the page even though finished runs of the last summary are gone")
    args = parser.parse_args(argv)
    results, page, figure_dir, records = Path(args.results), Path(args.out), Path(args.figures), Path(args.records)
    anchors = yaml.safe_load((HERE / "anchors.yml").read_text())
    template = (HERE / "template.md").read_text()
    all_grids = [read_grid(block, path, results, records) for block in blocks.BLOCKS for path in blocks.grids(block)]
    kept = keep_records(all_grids, records)  # whatever happens next, no finished run here is lost with its machine
    chosen = [grid for grid in all_grids if grid.block in args.block]
    lost = lost_runs(Path(args.summary), chosen)
    if lost and not args.drop_missing:
        gone = sorted({name.split("/")[0] for name in lost})
        print(f"page.py: {args.summary} lists {len(lost)} finished run(s) with neither a folder under {results} nor "
              f"a record under {records} (e.g. {lost[0]}); the page would lose them. Run them again (make results "
              f"BLOCK={'|'.join(gone)}), write only other blocks (--block), or pass --drop-missing. {kept} records "
              f"written.", file=sys.stderr)
        return 1
    kept_blocks = [block for block in blocks.BLOCKS if block not in args.block]
    try:
        old_sections, old_entries = kept_parts(page, Path(args.summary), template, kept_blocks)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        print(f"page.py: {page} or {args.summary} lacks the sections of {', '.join(kept_blocks)} that --block keeps; "
              f"write every block (no --block)", file=sys.stderr)
        return 1
    text = template
    for block in args.block:
        grids = [grid for grid in all_grids if grid.block == block]
        section = BUILDERS[block](grids, anchors[block], page, figure_dir).rstrip()
        text = text.replace("{{" + block + "}}", section + "\n\n" + anchor_text(block, anchors[block]).rstrip())
    parts = sections(text)
    parts.update(old_sections)
    new_entries = summary(chosen)
    merged = {key: old_entries.get(key) or new_entries[key] for key in (f"{g.block}/{g.name}" for g in all_grids)}
    text, finished = with_counts("".join(parts.values()), merged)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text.rstrip() + "\n")
    Path(args.summary).write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {page} and {args.summary}: {finished} finished runs ({kept} records written under {records})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
