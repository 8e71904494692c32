"""Run one block of docs/results.md (or all of them) through ``qzoo sweep``; resumable.

    python benchmarks/results/run.py BLOCK [--dry-run] [--address ADDRESS] [--results DIR]
    make results BLOCK=classic            # make results: every block, one after the other

A block is a folder of this directory (``classic``, ``spaceinvaders``, ``atari100k``, ``minatar``) holding one or
more YAML grids that ``qzoo sweep --grid`` reads as they are. Each grid ``BLOCK/NAME.yml`` runs as

    qzoo sweep --grid benchmarks/results/BLOCK/NAME.yml --out results/BLOCK/NAME [--address ADDRESS]

so the folder ``results/BLOCK/NAME`` is an ordinary sweep folder: killed and started again with the same command,
it runs only what is missing and resumes unfinished runs from their checkpoints (``qzoo.sweep``). ``--dry-run``
resolves every run's config (a bad key fails here, before any training) and prints the commands and the runs,
marking those already finished. Then ``python benchmarks/results/page.py`` writes docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BLOCKS = ("classic", "spaceinvaders", "atari100k", "minatar")  # the page's order
DEFAULT_RESULTS = "results"  # relative to the repository root; gitignored


def grids(block: str) -> list[Path]:
    """The grid files of a block, in name order."""
    return sorted((HERE / block).glob("*.yml"))


def sweep_argv(grid: Path, results: str = DEFAULT_RESULTS, address: str | None = None) -> list[str]:
    """``qzoo sweep``'s arguments for one grid, paths relative to the repository root (the page prints them)."""
    out = f"{results}/{grid.parent.name}/{grid.stem}"
    return ["sweep", "--grid", grid.relative_to(ROOT).as_posix(), "--out", out,
            *(["--address", address] if address else [])]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("block", choices=[*BLOCKS, "all"])
    parser.add_argument("--dry-run", action="store_true", help="resolve and list the runs; train nothing")
    parser.add_argument("--address", help="Ray cluster (auto: this machine's); default: a local Ray on 127.0.0.1")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="folder of the sweep folders (default: results)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the grids' and results' paths are relative to the repository root, as the page prints them
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the runs share the cores
    from qzoo.cli import main as qzoo_main
    from qzoo.runs import read_meta

    failed = 0
    for block in BLOCKS if args.block == "all" else (args.block,):
        for grid in grids(block):
            argv_sweep = sweep_argv(grid, args.results, args.address)
            print("qzoo " + " ".join(argv_sweep), flush=True)
            if args.dry_run:
                runs, _ = grid_runs(grid)
                out = Path(argv_sweep[argv_sweep.index("--out") + 1])
                for run in runs:
                    status = read_meta(out / run.name).get("status") or "missing"
                    print(f"  {run.name}: {status}")
                continue
            failed += qzoo_main(argv_sweep) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
