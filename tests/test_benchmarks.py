"""The benchmark scripts' bookkeeping (issue 16): what they compute from the runs, and their contract with qzoo's
run folder. No time is measured or asserted here; the figures live in benchmarks/README.md."""

import sys
from pathlib import Path

import pytest

from qzoo.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import compare_sb3  # noqa: E402
import time_to_score  # noqa: E402


def run(sps: float) -> dict:
    return {"sps": sps, "peak_rss_mb": 300.0, "torch_threads": 2, "omp_wait_policy": "PASSIVE"}


def test_ratios_are_paired_round_by_round():
    summary = compare_sb3.summarise({"qzoo": [run(400), run(300), run(500)], "sb3": [run(100), run(200), run(125)]})
    assert summary["ratio"]["rounds"] == [4.0, 1.5, 4.0]
    assert (summary["ratio"]["min"], summary["ratio"]["median"], summary["ratio"]["max"]) == (1.5, 4.0, 4.0)
    assert summary["ratio_of_medians"] == 3.2  # 400 / 125: not the median of the paired ratios
    assert summary["qzoo_sps"] == {"median": 400, "min": 300, "max": 500, "rounds": [400, 300, 500]}
    assert summary["threads_seen"]["qzoo"] == [(2, "PASSIVE")]


def test_share_per_free_core():
    # 2 cores, 1 busy: half the alone figure is a fair share, so 40% of it is 0.8 of a fair share.
    assert compare_sb3.load_shares(1000, 400, cores=2, burners=1) == {
        "burners": 1, "cores": 2, "qzoo_load_share": 0.4, "qzoo_share_per_free_core": 0.8}
    assert compare_sb3.load_shares(1000, 900, cores=8, burners=2)["qzoo_share_per_free_core"] == 1.2
    assert compare_sb3.load_shares(1000, 100, cores=1, burners=1)["qzoo_share_per_free_core"] is None


def test_the_host_names_its_cpu_and_only_known_flags():
    info = compare_sb3.cpu_info()
    assert info["model"]
    assert set(info["flags"]) <= set(compare_sb3.CPU_FLAGS)


def test_scores_follow_each_envs_rule():
    assert time_to_score.reached({"mean": 475.0, "std": 30.0}, "cartpole")
    assert not time_to_score.reached({"mean": 474.9, "std": 0.0}, "cartpole")
    assert not time_to_score.reached({"mean": 300.0, "std": 150.0}, "spaceinvaders")  # 150 < 200
    assert time_to_score.reached({"mean": 400.0, "std": 200.0}, "spaceinvaders")


@pytest.mark.parametrize("recipe", time_to_score.QZOO_RECIPES)
def test_qzoo_runs_use_the_common_evaluation_protocol(recipe, capsys):
    command = time_to_score.qzoo_command("cartpole", recipe, 3, Path("unused"), None, 2500, 0)
    assert main([*command[3:], "--dry-run", "--json"]) == 0
    config = __import__("json").loads(capsys.readouterr().out)["config"]
    assert (config["n_eval_episodes"], config["eval_epsilon"], config["eval_freq"]) == (20, 0.0, 2500)
    assert (config["stop_reward"], config["seed"]) == (475.0, 3)


def test_sb3_plays_the_course_recipe_on_space_invaders():
    """SB3's SpaceInvaders row is the course's unit-3 dqn.yml, at the budget qzoo's dqn preset has there: the
    budget sets when epsilon bottoms out, so a 10x longer one would hand SB3 10x more exploration."""
    import yaml

    from qzoo import config

    course = yaml.safe_load((Path(__file__).parent / "data" / "hf_course_dqn.yml").read_text())
    course = {k: v for k, v in course["SpaceInvadersNoFrameskip-v4"].items() if k not in ("env_wrapper", "frame_stack")}
    assert time_to_score.SB3_HYPERPARAMETERS["spaceinvaders"] == course
    qzoo_dqn, _ = config.resolve("SpaceInvadersNoFrameskip-v4", "atari", algo="dqn")
    assert qzoo_dqn.n_timesteps == course["n_timesteps"]
    assert qzoo_dqn.exploration_fraction == course["exploration_fraction"]


def test_evaluation_rows_are_read_from_the_run_folder(tmp_path):
    """The driver reads qzoo's own evaluations.csv: its columns must stay what time_to_score expects."""
    run_dir = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "-n", "600", "--run-dir", str(run_dir), "--no-progress", "--set",
                 "eval_freq=300", "n_eval_episodes=2", "learning_starts=100", "torch_threads=1",
                 "checkpoint_freq=0", "net_arch=[16]"]) == 0
    rows = time_to_score.read_rows("dqn", run_dir)
    assert [row["step"] for row in rows] == [300.0, 600.0]
    assert all(row["mean"] > 0 and row["std"] >= 0 and row["time"] > 0 for row in rows)
