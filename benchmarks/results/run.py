"""Run one block of docs/results.md (or all of them) through ``qzoo sweep``; resumable.

    python benchmarks/results/run.py BLOCK [--dry-run] [--address ADDRESS | --cpus N] [--results DIR] [--records DIR]
    make results BLOCK=classic            # make results: every block, one after the other

A block is a folder of this directory (``classic``, ``spaceinvaders``, ``atari100k``, ``minatar``) holding one or
more YAML grids that ``qzoo sweep --grid`` reads as they are. Each grid ``BLOCK/NAME.yml`` runs as

    qzoo sweep --grid benchmarks/results/BLOCK/NAME.yml --out results/BLOCK/NAME [--address ADDRESS]

so the folder ``results/BLOCK/NAME`` is an ordinary sweep folder: killed and started again with the same command,
it runs only what is missing and resumes unfinished runs from their checkpoints (``qzoo.sweep``). ``--dry-run``
resolves every run's config (a bad key fails here, before any training) and prints the commands and the runs,
marking those already finished. Then ``python benchmarks/results/page.py`` writes docs/results.md.

Run folders are not committed and do not outlive the machine they ran on; a block can take several sessions. So
page.py keeps each finished run's small files (run.json, config.yml, evaluations.csv: what the page reads) as a
committed record under ``records/BLOCK/GRID/RUN``, and before a grid's sweep this script copies back into its
folder the record of every run that has no folder there: the sweep counts it finished and trains only the rest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BLOCKS = ("classic", "spaceinvaders", "atari100k", "minatar")  # the page's order
DEFAULT_RESULTS = "results"  # relative to the repository root; gitignored
RECORDS = HERE / "records"  # committed: the durable copy of every finished run the page reads
RECORD_FILES = ("run.json", "config.yml", "evaluations.csv")  # what page.py reads of a run folder


def grids(block: str) -> list[Path]:
    """The grid files of a block, in name order."""
    return sorted((HERE / block).glob("*.yml"))


def sweep_argv(grid: Path, results: str = DEFAULT_RESULTS, address: str | None = None,
               cpus: int | None = None) -> list[str]:
    """``qzoo sweep``'s arguments for one grid, paths relative to the repository root (the page prints them)."""
    out = f"{results}/{grid.parent.name}/{grid.stem}"
    return ["sweep", "--grid", grid.relative_to(ROOT).as_posix(), "--out", out,
            *(["--address", address] if address else []), *(["--cpus", str(cpus)] if cpus else [])]


def command_text(grid: Path, results: str = DEFAULT_RESULTS) -> str:
    return "qzoo " + " ".join(sweep_argv(grid, results))


def grid_runs(grid: Path):
    """The runs a grid file asks for (``qzoo.sweep.RunSpec``), each config resolved, and the grid's label keys:
    what ``qzoo sweep --grid FILE`` with no other flag runs."""
    from qzoo import sweep

    data = sweep.read_grid_file(str(grid))
    envs = [data["env"]] if isinstance(data.get("env"), str) else list(data.get("env") or [])
    grid_values = {k: v if isinstance(v, list) else [v] for k, v in (data.get("set_grid") or {}).items()}
    runs = sweep.spec_of_request(envs, data.get("algo", "dqn"), str(data.get("seeds", "0")), data.get("n"),
                                 dict(data.get("set") or {}), grid_values)
    return runs, list(grid_values)


def record_path(records: Path, block: str, grid: str, run: str) -> Path:
    return records / block / grid / run


def has_record(records: Path, block: str, grid: str, run: str) -> bool:
    return (record_path(records, block, grid, run) / "run.json").is_file()


def keep(run_dir: Path, record: Path) -> None:
    """Write (or replace) ``record`` with the small files of the finished run in ``run_dir``: into a new folder
    first, so an interrupted copy never leaves a half record in place of a whole one."""
    fresh = record.with_name(record.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for name in RECORD_FILES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, fresh / name)
    shutil.rmtree(record, ignore_errors=True)
    fresh.rename(record)


def restore(records: Path, block: str, grid: str, out: Path, names: list[str]) -> list[str]:
    """Copy into the sweep folder ``out`` the record of each run in ``names`` that has no folder there (a folder
    already there, finished or not, is left as it is); the names restored."""
    restored = []
    for name in names:
        if has_record(records, block, grid, name) and not (out / name).exists():
            shutil.copytree(record_path(records, block, grid, name), out / name)
            restored.append(name)
    return restored


def restore_grid(grid: Path, argv_sweep: list[str], out: Path, records: Path) -> int:
    """Open the grid's sweep folder ``out`` as ``qzoo sweep`` will (the same runs and command) and restore its
    records; how many runs were restored."""
    from qzoo import sweep

    runs, _ = grid_runs(grid)
    names = [run.name for run in runs]
    if not any(has_record(records, grid.parent.name, grid.stem, name) for name in names):
        return 0
    sweep.open_sweep(out, runs, ["qzoo", *argv_sweep])
    return len(restore(records, grid.parent.name, grid.stem, out, names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("block", choices=[*BLOCKS, "all"])
    parser.add_argument("--dry-run", action="store_true", help="resolve and list the runs; train nothing")
    parser.add_argument("--address", help="Ray cluster (auto: this machine's); default: a local Ray on 127.0.0.1")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="folder of the sweep folders (default: results)")
    parser.add_argument("--records", default=str(RECORDS), help="the committed records (default: records/ here)")
    parser.add_argument("--cpus", type=int, help="qzoo sweep --cpus: at most this many runs at once on this machine")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the grids' and results' paths are relative to the repository root, as the page prints them
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the runs share the cores
    from qzoo.cli import main as qzoo_main
    from qzoo.errors import QzooError
    from qzoo.runs import read_meta

    failed = 0
    for block in BLOCKS if args.block == "all" else (args.block,):
        for grid in grids(block):
            argv_sweep = sweep_argv(grid, args.results, args.address, args.cpus)
            print("qzoo " + " ".join(argv_sweep), flush=True)
            out = Path(argv_sweep[argv_sweep.index("--out") + 1])
            if args.dry_run:
                runs, _ = grid_runs(grid)
                for run in runs:
                    status = read_meta(out / run.name).get("status") or "missing"
                    if status != "finished" and has_record(Path(args.records), block, grid.stem, run.name):
                        status = "finished (its record)"
                    print(f"  {run.name}: {status}")
                continue
            try:
                restored = restore_grid(grid, argv_sweep, out, Path(args.records))
            except QzooError as exc:  # e.g. the folder holds another sweep: the sweep would refuse it too
                print(f"qzoo: {exc}", file=sys.stderr)
                failed += 1
                continue
            if restored:
                print(f"  {restored} finished runs restored from their records", flush=True)
            code = qzoo_main(argv_sweep)
            if code >= 128:  # stopped by a signal (its runs checkpointed where they were): no further grid starts
                return code
            failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
