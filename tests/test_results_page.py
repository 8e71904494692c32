"""benchmarks/results/page.py: docs/results.md from sweep folders, on fake run folders written here (no training).

A fake run folder holds what the generator and ``qzoo plot`` read: run.json (env id, variant, status, seconds,
versions, machine), config.yml (keyed by env id) and evaluations.csv.
"""

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from qzoo import stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SI = "SpaceInvadersNoFrameskip-v4"  # the name of the course grid's runs: dqn-SpaceInvadersNoFrameskip-v4-sSEED


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"results_{name}", RESULTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # page.py's dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_run(folder: Path, env_id: str, variant: str, seed: int, evaluations: list[tuple[int, float, float, float]],
             seconds: float, status: str = "finished", **config) -> None:
    """A run (finished unless ``status`` says otherwise): ``evaluations`` rows are (env step, seconds, mean, std)."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "algo": "dqn", "env_id": env_id, "variant": variant, "status": status, "seconds": seconds,
        "steps": evaluations[-1][0], "versions": {"qzoo": "test", "torch": "2.13.0"},
        "machine": {"cpu": "Test CPU 9000", "cpus": 2}, "command": None}))
    (folder / "config.yml").write_text(yaml.safe_dump({env_id: {"seed": seed, **config}}))
    rows = ["step,episodes,mean,std,result,time"]
    rows += [f"{step},10,{mean},{std},{mean - std},{time}" for step, time, mean, std in evaluations]
    (folder / "evaluations.csv").write_text("\n".join(rows) + "\n")


def fake_sweep(out: Path, runs: list[dict]) -> None:
    out.mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"runs": runs, "command": None}))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Classic DQN / Double DQN on CartPole (2 seeds each, one Double DQN seed unfinished), the Space Invaders
    course recipe (one seed passes the mark, one does not), Atari 100k DER on two games; everything else absent."""
    root = tmp_path_factory.mktemp("results")
    results = root / "results"
    classic = results / "classic" / "dqn"
    specs = []
    for double_q in (False, True):
        for seed in (0, 1):
            name = f"dqn-CartPole-v1-double_q={str(double_q).lower()}-s{seed}"
            specs.append({"name": name, "env_id": "CartPole-v1", "algo": "dqn",
                          "overrides": {"double_q": double_q, "seed": seed}})
    fake_sweep(classic, specs)
    scores = {specs[0]["name"]: 500.0, specs[1]["name"]: 400.0, specs[2]["name"]: 300.0}
    for name, score in scores.items():
        fake_run(classic / name, "CartPole-v1", "dqn", int(name[-1]), [(25000, 20.0, 100.0, 5.0),
                 (50000, 60.0, score, 10.0)], seconds=60.0 + score / 10, double_q="true" in name)
    (classic / specs[3]["name"]).mkdir()  # started, killed before its run.json: not finished

    course = results / "spaceinvaders" / "course"
    fake_sweep(course, [{"name": f"dqn-{SI}-s{s}", "env_id": SI, "algo": "dqn",
                         "overrides": {"double_q": False, "seed": s}} for s in (0, 1, 2)])
    fake_run(course / f"dqn-{SI}-s0", SI, "dqn", 0,
             [(50000, 600.0, 150.0, 40.0), (100000, 1500.0, 320.0, 90.0), (150000, 2400.0, 350.0, 100.0)],
             seconds=2400.0, double_q=False)
    fake_run(course / f"dqn-{SI}-s1", SI, "dqn", 1,
             [(50000, 600.0, 150.0, 40.0), (100000, 1500.0, 230.0, 60.0)], seconds=1500.0, double_q=False)
    fake_run(course / f"dqn-{SI}-s2", SI, "dqn", 2,  # killed at 100k, to be resumed
             [(50000, 660.0, 260.0, 50.0), (100000, 1320.0, 240.0, 70.0)], seconds=1320.0, status="running",
             double_q=False)

    der = results / "atari100k" / "der"
    games = {"BreakoutNoFrameskip-v4": (3.0, 5.0), "PongNoFrameskip-v4": (-18.0, -15.0)}
    fake_sweep(der, [{"name": f"der-{env}-s{s}", "env_id": env, "algo": "der", "overrides": {"seed": s}}
                     for env in [*games, "QbertNoFrameskip-v4"] for s in (0, 1)])  # Qbert: planned, not run yet
    for env, pair in games.items():
        for seed, score in enumerate(pair):
            # --algo der stacks on the Rainbow preset: run.json says variant "rainbow"; the page names the grid's algo
            fake_run(der / f"der-{env}-s{seed}", env, "rainbow", seed, [(100000, 900.0, score, 1.0)], seconds=900.0)

    out, summary = root / "docs" / "results.md", root / "summary.json"
    assert load("page").main(["--results", str(results), "--out", str(out), "--figures",
                              str(root / "docs" / "figures" / "results"), "--summary", str(summary),
                              "--records", str(root / "records")]) == 0
    return {"text": out.read_text(), "summary": json.loads(summary.read_text()), "root": root}


def row(text: str, *cells: str) -> list[str]:
    """The table rows that start with ``cells``."""
    start = "| " + " | ".join(cells) + " |"
    return [line for line in text.splitlines() if line.startswith(start)]


def test_classic_rows_give_finished_seeds_and_bootstrap_intervals_over_them_with_the_rl_zoo_anchor(page):
    text = page["text"]
    assert "| env | algorithm | seeds finished | final score, mean [95% CI] | final mean - std, mean [95% CI] |" in text
    mean, low, high = stats.bootstrap_ci([500.0, 400.0])
    (dqn,) = row(text, "CartPole-v1", "DQN", "2 of 2")
    assert f"{mean:.1f} [{low:.1f}, {high:.1f}]" in dqn and "450.0 [400.0, 500.0]" in dqn
    assert "500.00 +/- 0.00" in dqn and "Test CPU 9000, 2 CPUs" in dqn and "1.8 min (1.7-1.8)" in dqn
    (double,) = row(text, "CartPole-v1", "Double DQN", "1 of 2")  # the unfinished seed is not in the table
    assert "| 300.0 (one seed: no interval) | 290.0 (one seed: no interval) |" in double
    assert "`classic/dqn`: 3 of 4 runs finished" in text and "`classic/rainbow`: not run yet" in text


def test_the_course_mark_is_found_at_its_first_passing_evaluation_or_the_gap_is_given(page):
    text = page["text"]
    (passed,) = row(text, "course", "DQN", "0")
    assert "| 100,000 | 25.0 | 350.0 +/- 100.0 | 250.0 |" in passed  # 320 - 90 = 230 >= 200 first at 100k, 1500 s
    (short,) = row(text, "course", "DQN", "1")
    assert "not passed: best mean - std 170.0, 30.0 short" in short
    (unfinished,) = row(text, "course", "DQN", "2")  # a run spanning sessions: its first pass is already measured
    assert "| unfinished: last evaluation at 100,000 env steps | 50,000 | 11.0 | 240.0 +/- 70.0 | 170.0 | - |" \
        in unfinished
    assert "`spaceinvaders/course`: 2 of 3 runs finished" in text
    assert (page["root"] / "docs" / "figures" / "results" / "spaceinvaders" / "course_mark.png").is_file()


def test_atari100k_rows_carry_the_published_der_score_and_the_iqm_its_interval(page):
    text = page["text"]
    (breakout,) = row(text, "Breakout", "DER", "2 of 2")
    assert "| 1.9 |" in breakout  # van Hasselt et al. 2019 through anchors.yml
    # a partial block shows what it lacks
    (qbert,) = row(text, "Qbert", "DER", "0 of 2", "no seed finished yet", "1152.9")
    assert "| 0.074 |" in qbert  # DER's own human-normalised score: (1152.9 - 163.9) / (13455 - 163.9)
    assert re.search(r"IQM of human-normalised final scores, der, 2 of the 3 games planned \(Breakout, Pong\): "
                     r"\*\*-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]\*\*", text)
    assert "![curves](figures/results/atari100k/curves.png)" in text


def test_an_iqm_over_one_seed_per_game_gives_the_point_and_no_interval(tmp_path):
    der = tmp_path / "results" / "atari100k" / "der"
    games = {"BreakoutNoFrameskip-v4": 6.4, "PongNoFrameskip-v4": -18.0}
    fake_sweep(der, [{"name": f"der-{env}-s0", "env_id": env, "algo": "der", "overrides": {"seed": 0}}
                     for env in games])
    for env, score in games.items():
        fake_run(der / f"der-{env}-s0", env, "rainbow", 0, [(100000, 900.0, score, 1.0)], seconds=900.0)
    out = tmp_path / "results.md"
    assert load("page").main(["--results", str(tmp_path / "results"), "--out", str(out), "--figures",
                              str(tmp_path / "figures"), "--summary", str(tmp_path / "summary.json"),
                              "--records", str(tmp_path / "records")]) == 0
    assert re.search(r"IQM of human-normalised final scores, der, 2 of the 2 games planned \(Breakout, Pong\): "
                     r"\*\*\d\.\d{3}\*\* \(one seed per game: no interval\)", out.read_text())


def test_minatar_figures_leave_out_the_iqm_across_games_whose_scores_have_no_common_scale(tmp_path):
    from qzoo import plotting

    for game, score in (("Asterix", 12.0), ("Breakout", 9.0)):
        fake_run(tmp_path / "runs" / game, f"MinAtar/{game}-v1", "dqn", 0, [(1000000, 600.0, score, 1.0)], 600.0)
    runs = plotting.find_runs([tmp_path / "runs"])
    text = load("page").figures(runs, tmp_path / "figures", tmp_path / "results.md", [], iqm=False)
    assert text == "![curves](figures/curves.png)\n"
    assert sorted(f.name for f in (tmp_path / "figures").iterdir()) == ["curves.png", "scores.md"]


def test_blocks_without_data_say_not_run_yet_with_the_commands_of_their_specs(page):
    run = load("run")
    text = page["text"]
    for block in ("minatar",):
        for grid in run.grids(block):
            assert f"- not run yet: `{run.command_text(grid)}`" in text
    for block in run.BLOCKS:  # every grid's command is on the page, and it names a grid file that qzoo sweep reads
        for grid in run.grids(block):
            command = run.command_text(grid)
            spec = f"benchmarks/results/{block}/{grid.stem}.yml"
            assert command == f"qzoo sweep --grid {spec} --out results/{block}/{grid.stem}"
            assert command in text and (ROOT / command.split()[3]).is_file()
    assert "{{" not in text
    cluster = "qzoo sweep --grid benchmarks/results/minatar/rainbow.yml --out results/minatar/rainbow --address auto"
    assert cluster in text  # block 5: what was not run, as a cluster command


def test_summary_holds_each_runs_metadata_and_its_train_command(page):
    runs = page["summary"]["classic/dqn"]["runs"]
    first = runs[0]
    assert first["seed"] == 0 and first["status"] == "finished" and first["versions"]["torch"] == "2.13.0"
    assert first["train_command"] == "qzoo train --env CartPole-v1 --algo dqn --set double_q=false seed=0"
    assert runs[3]["status"] == "missing" and page["summary"]["minatar/dqn"]["status"] == "not run yet"


def test_run_py_hands_each_grid_of_a_block_to_qzoo_sweep_and_all_runs_every_block(monkeypatch, tmp_path):
    import qzoo.cli

    calls = []
    monkeypatch.setattr(qzoo.cli, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.chdir(tmp_path)  # run.py moves to the repository root; monkeypatch moves back
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # run.py sets it where unset: keep the change inside this test
    run = load("run")
    no_records = ["--records", str(tmp_path / "records")]  # none: nothing to restore into the real results/
    assert run.main(["classic", "--address", "auto", *no_records]) == 0
    assert calls == [["sweep", "--grid", "benchmarks/results/classic/dqn.yml", "--out", "results/classic/dqn",
                      "--address", "auto"],
                     ["sweep", "--grid", "benchmarks/results/classic/rainbow.yml", "--out", "results/classic/rainbow",
                      "--address", "auto"]]
    calls.clear()
    assert run.main(["all", *no_records]) == 0
    assert [c[2] for c in calls] == [f"benchmarks/results/{b}/{g.name}" for b in run.BLOCKS for g in run.grids(b)]
    calls.clear()
    assert run.main(["spaceinvaders", "--cpus", "1", *no_records]) == 0  # make results CPUS=1: one run at a time
    assert len(calls) == 2 and all(c[-2:] == ["--cpus", "1"] for c in calls)


def test_finished_runs_are_recorded_and_the_page_reads_them_back_once_their_folders_are_gone(page, tmp_path):
    """Run folders do not outlive their machine: the records (committed) give the same tables without them."""
    records = page["root"] / "records"
    recorded = sorted(p.parent.relative_to(records).as_posix() for p in records.rglob("run.json"))
    assert recorded == sorted(["classic/dqn/dqn-CartPole-v1-double_q=false-s0",
                               "classic/dqn/dqn-CartPole-v1-double_q=false-s1",
                               "classic/dqn/dqn-CartPole-v1-double_q=true-s0",
                               f"spaceinvaders/course/dqn-{SI}-s0", f"spaceinvaders/course/dqn-{SI}-s1",
                               *(f"atari100k/der/der-{g}NoFrameskip-v4-s{s}" for g in ("Breakout", "Pong")
                                 for s in (0, 1))])  # not the unfinished seed 2
    assert sorted(p.name for p in (records / "classic" / "dqn" / "dqn-CartPole-v1-double_q=false-s0").iterdir()) == \
        ["config.yml", "evaluations.csv", "run.json"]
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(page["summary"]))
    out = tmp_path / "results.md"
    assert load("page").main(["--results", str(tmp_path / "empty"), "--out", str(out), "--figures",
                              str(tmp_path / "figures"), "--summary", str(summary), "--records", str(records)]) == 0
    text = out.read_text()
    for cells in (("CartPole-v1", "DQN"), ("CartPole-v1", "Double DQN"), ("Breakout", "DER")):
        (now,), (before,) = row(text, *cells), row(page["text"], *cells)
        assert now.split(" | ")[3:] == before.split(" | ")[3:]  # "seeds finished" counts the grid file's seeds now
    assert "9 finished runs" not in text and "runs finished: 9 of" in text


def test_the_page_refuses_to_drop_finished_runs_that_neither_a_folder_nor_a_record_holds(page, tmp_path, capsys):
    """The last summary lists a finished run that is gone (its machine went, no record): one line, no page, no
    summary written; the runs that are there are recorded all the same."""
    listed = json.loads(json.dumps(page["summary"]))
    listed["classic/rainbow"]["runs"].append({"name": "rainbow-CartPole-v1-s0", "status": "finished"})
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(listed))
    out, records = tmp_path / "results.md", tmp_path / "records"
    argv = ["--results", str(page["root"] / "results"), "--out", str(out), "--figures", str(tmp_path / "figures"),
            "--summary", str(summary), "--records", str(records)]
    assert load("page").main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "1 finished run(s)" in error and "make results BLOCK=classic)" in error
    assert "classic/rainbow/rainbow-CartPole-v1-s0" in error
    assert not out.exists() and json.loads(summary.read_text()) == listed  # nothing written
    assert len(list(records.rglob("run.json"))) == 9
    assert load("page").main(argv + ["--drop-missing"]) == 0 and out.is_file()
    assert "rainbow-CartPole-v1-s0" not in summary.read_text()


def test_run_py_restores_records_so_the_sweep_trains_only_the_runs_without_one(monkeypatch, tmp_path, capsys):
    import qzoo.cli
    from qzoo import sweep

    calls = []
    monkeypatch.setattr(qzoo.cli, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.chdir(tmp_path)  # run.py moves to the repository root; monkeypatch moves back
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    run = load("run")
    runs, _ = run.grid_runs(RESULTS / "classic" / "dqn.yml")
    records, results = tmp_path / "records", tmp_path / "results"
    for spec in runs[:3]:
        fake_run(records / "classic" / "dqn" / spec.name, spec.env_id, "dqn", 0, [(50000, 60.0, 500.0, 0.0)], 60.0)
    out = results / "classic" / "dqn"
    sweep.open_sweep(out, runs, None)  # a sweep started here, with its own folder of one run (to be resumed)
    (out / runs[2].name).mkdir()
    assert run.main(["classic", "--results", str(results), "--records", str(records)]) == 0
    assert [c[4] for c in calls] == [str(out), str(results / "classic" / "rainbow")]
    assert [r.name for r in runs if r not in sweep.pending(out, runs)] == [runs[0].name, runs[1].name]
    assert not any((out / runs[2].name).iterdir())  # left as it was

    other = tmp_path / "other" / "classic" / "dqn"  # a folder of another grid: one line, the block's other grids run
    other.mkdir(parents=True)
    (other / "sweep.json").write_text(json.dumps({"runs": [], "command": None}))
    calls.clear()
    capsys.readouterr()
    assert run.main(["classic", "--results", str(tmp_path / "other"), "--records", str(records)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "holds another sweep's grid" in error
    assert [c[4] for c in calls] == [str(tmp_path / "other" / "classic" / "rainbow")]


def test_one_block_is_rewritten_and_the_others_stay_as_the_page_and_its_summary_have_them(page, tmp_path, capsys):
    """--block spaceinvaders on a machine with only Space Invaders' folders: the classic and Atari sections and
    summary entries are kept word for word; without --block the page would lose their runs and is refused."""
    page_module = load("page")
    out, summary, results = tmp_path / "results.md", tmp_path / "summary.json", tmp_path / "results"
    out.write_text(page["text"])
    summary.write_text(json.dumps(page["summary"]))
    shutil.copytree(page["root"] / "results" / "spaceinvaders", results / "spaceinvaders")
    resumed = results / "spaceinvaders" / "course" / f"dqn-{SI}-s2" / "run.json"
    resumed.write_text(json.dumps({**json.loads(resumed.read_text()), "status": "finished"}))  # seed 2 finished
    argv = ["--results", str(results), "--out", str(out), "--figures", str(tmp_path / "figures"), "--summary",
            str(summary), "--records", str(tmp_path / "records")]
    assert page_module.main(argv) == 1  # every block: the classic and Atari runs would be lost
    assert page_module.main(argv + ["--block", "spaceinvaders"]) == 0
    before, after = page_module.sections(page["text"]), page_module.sections(out.read_text())
    assert list(before) == list(after)
    template = (RESULTS / "template.md").read_text()
    for block in ("classic", "atari100k", "minatar"):
        heading = page_module.heading_of(template, block)
        assert after[heading] == before[heading]
    course = page_module.heading_of(template, "spaceinvaders")
    assert after[course] != before[course] and "runs finished: 10 of" in after[""]
    written = json.loads(summary.read_text())
    assert {k: v for k, v in written.items() if not k.startswith("spaceinvaders/")} == \
        {k: v for k, v in page["summary"].items() if not k.startswith("spaceinvaders/")}
    assert [run["status"] for run in written["spaceinvaders/course"]["runs"]] == ["finished"] * 3

    out.write_text("# Results\n")  # a page without the sections --block keeps: one line, nothing written
    capsys.readouterr()
    assert page_module.main(argv + ["--block", "spaceinvaders"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and out.read_text() == "# Results\n"
