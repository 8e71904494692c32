"""Ape-X on a real Ray cluster: a head and a second node on loopback, inside a network namespace of their own.

Each test runs tests/ray_cluster.py under ``unshare -n`` (only 127.0.0.1 exists there, so no Ray port is ever
open to the network) and reads the run folders it wrote. Ray must be installed (``make test`` installs the ray
extra): a missing Ray fails these tests, it does not skip them.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "ray_cluster.py"


def on_loopback_cluster(request: dict, timeout: float) -> dict:
    """Run tests/ray_cluster.py in a new network namespace; its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE",
           "RAY_USAGE_STATS_ENABLED": "0"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(SCRIPT),
               json.dumps(request)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_actor_on_a_throwaway_local_ray_trains_through_the_plain_command(tmp_path):
    """No cluster: ``qzoo train --set actors=1`` starts its own Ray (loopback only, no dashboard) and stops it."""
    run_dir = tmp_path / "local"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-c",
               "from qzoo.cli import entry_point; entry_point()", "train", "--env", "CartPole-v1", "-n", "1000",
               "--run-dir", str(run_dir), "--no-progress", "--json", "--set", "actors=1", "torch_threads=1",
               "learning_starts=300", "exploration_fraction=0.9", "eval_freq=0", "log_interval=250"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 1000
    with open(run_dir / "train.csv") as f:  # one actor follows qzoo's schedule: 1 -> 0.04 (preset) over 900 steps
        epsilons = [float(row["epsilon"]) for row in csv.DictReader(f)]
    assert len(epsilons) == 4 and epsilons == sorted(epsilons, reverse=True) and epsilons[-1] == pytest.approx(0.04)
    assert epsilons[0] == pytest.approx(1 - 0.96 * 255 / 900, abs=1e-6)  # the last step of the first 256-step chunk


def test_ray_is_installed():
    import ray  # noqa: F401  (make test installs the ray extra; a missing Ray is a failure, not a skip)


SHORT = ["--no-progress", "--json", "--set", "actors=2", "actor_chunk_steps=100", "weight_publish_seconds=0",
         "torch_threads=1", "learning_starts=500", "train_freq=4", "gradient_steps=1", "net_arch=[32,32]",
         "eval_freq=1000", "n_eval_episodes=2", "checkpoint_freq=1000", "log_interval=500"]
COPIES = ["n_envs=2", "vec_env=sync"]  # after SHORT: more of its --set values
ATARI = "SpaceInvadersNoFrameskip-v4"  # ale-py ships its ROM


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """Short CartPole runs with 2 actors on one loopback cluster: a plain one; one whose actor is killed, and one whose
    learner (a separate process) is killed, then resumed with 1 actor: these two with 2 env copies per actor. Then a
    short SpaceInvaders run, 2 actors with 2 copies each, through the command line (the Atari path: frame stacks,
    chunks of new frames, the CNN learner)."""
    root = tmp_path_factory.mktemp("apex")
    dirs = {name: root / name for name in ("plain", "faulty", "resumed", "atari")}
    train = ["train", "--env", "CartPole-v1", "-n"]
    runs = [{"argv": [*train, "3000", "--seed", "2", "--run-dir", str(dirs["plain"]), *SHORT]},
            {"argv": [*train, "4000", "--seed", "3", "--run-dir", str(dirs["faulty"]), *SHORT, *COPIES],
             "kill_actor_at": 1500},
            {"argv": [*train, "4000", "--seed", "4", "--run-dir", str(dirs["resumed"]), *SHORT, *COPIES],
             "process": True,
             "kill_learner_at": 2500},
            {"argv": ["train", "--resume", str(dirs["resumed"]), "--no-progress", "--json", "--set", "actors=1"]},
            {"argv": ["train", "--env", ATARI, "-n", "600", "--run-dir", str(dirs["atari"]), *SHORT, *COPIES,
                      "buffer_size=2000", "learning_starts=200", "eval_freq=600", "n_eval_episodes=1",
                      "checkpoint_freq=0", "log_interval=200"]}]
    report = on_loopback_cluster({"runs": runs}, timeout=420)
    assert report["codes"] == [0, 0, -9, 0, 0] and len(report["killed"]) == 2, report
    print("seconds per run (plain, faulty, killed, resumed, atari):", report["seconds"])
    return report, dirs


def test_two_actors_on_two_nodes_write_a_normal_run_folder(short_runs, capsys):
    report, dirs = short_runs
    run_dir = dirs["plain"]
    assert report["nodes"]["addresses"] == ["127.0.0.1"]  # loopback only
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 3000  # exactly n_timesteps, summed over actors
    lanes = meta["distributed"]["lanes"]
    assert sum(lane["chunks"] for lane in lanes) == 30 and meta["distributed"]["restarts"] == 0
    # One actor on each node (one CPU each); the worker node's actor acted with newer and newer weights.
    nodes = report["nodes"]
    assert sorted(node for lane in lanes for node in lane["nodes"]) == sorted([nodes["head"], nodes["worker"]])
    on_worker = next(lane for lane in lanes if lane["nodes"] == [nodes["worker"]])
    assert on_worker["versions"] >= 2 and on_worker["newest_version"] > on_worker["first_version"]
    with open(run_dir / "train.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(500, 3001, 500))
    with open(run_dir / "evaluations.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1000, 2000, 3000]
    with open(run_dir / "episodes.csv") as f:
        assert sum(int(row["length"]) for row in csv.DictReader(f)) <= 3000
    assert (run_dir / "model.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    # The commands that read run folders work unchanged, without Ray.
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluation["steps"] == 3000 and len(evaluation["returns"]) == 2


def test_an_actor_killed_mid_run_is_restarted_and_the_run_finishes(short_runs):
    """Two env copies per actor: exactly n_timesteps env steps summed over copies and actors, a normal folder."""
    _, dirs = short_runs
    meta = json.loads((dirs["faulty"] / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 4000
    assert meta["distributed"]["restarts"] == 1 and len(meta["actor_restarts"]) == 1
    assert meta["actor_restarts"][0]["step"] >= 1500
    assert sum(lane["chunks"] for lane in meta["distributed"]["lanes"]) == 40  # the lost ones asked again
    with open(dirs["faulty"] / "train.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(500, 4001, 500))
    with open(dirs["faulty"] / "evaluations.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1000, 2000, 3000, 4000]
    assert (dirs["faulty"] / "model.pt").is_file()


def test_a_killed_learner_resumes_from_its_newest_checkpoint_with_another_actor_count_and_finishes(short_runs):
    _, dirs = short_runs
    meta = json.loads((dirs["resumed"] / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 4000
    # checkpoint_freq 1000, killed once train.csv reached 2500: from the newest checkpoint written by then.
    assert len(meta["resumed"]) == 1 and meta["resumed"][0]["step"] in (1000, 2000)
    assert meta["distributed"]["restarts"] == 0
    # --set actors=1: the 4 saved streams (2 actors x 2 copies) closed, 2 from then on; config.yml says so.
    assert meta["resumed"][0]["notes"] == ["actors 2 -> 1: the replay memory's 4 streams closed as truncated, "
                                           "2 from here"]
    assert meta["distributed"]["actors"] == 1 and meta["distributed"]["cut_streams"] == 0
    assert "actors: 1\n" in (dirs["resumed"] / "config.yml").read_text()
    with open(dirs["resumed"] / "train.csv") as f:  # each row once: the rows after the checkpoint were cut back
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(500, 4001, 500))


def test_space_invaders_with_two_actors_through_the_command_line_writes_a_folder_that_evaluate_reads(short_runs,
                                                                                                    capsys):
    _, dirs = short_runs
    run_dir = dirs["atari"]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps"] == 600 and meta["network"] == "cnn"
    # 600 env steps in chunks of 100, from both actors; which actor delivers more depends on timing (seen: 4 and 2).
    chunks = [lane["chunks"] for lane in meta["distributed"]["lanes"]]
    assert sum(chunks) == 6 and min(chunks) >= 1, chunks
    with open(run_dir / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == [200, 400, 600] and rows[-1]["loss"] != ""
    with open(run_dir / "evaluations.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [600]
    assert main(["evaluate", str(run_dir), "--episodes", "1", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluation["env_id"] == ATARI and evaluation["steps"] == 600 and len(evaluation["returns"]) == 1


@pytest.mark.slow
def test_two_actors_solve_cartpole_within_the_single_process_budget_for_two_of_three_seeds(tmp_path):
    """Solved: an evaluation's mean over 20 episodes >= 475 within the RL-Zoo preset's 50k env steps."""
    runs = [["train", "--env", "CartPole-v1", "--seed", str(seed), "--until-solved", "--no-progress", "--json",
             "--run-dir", str(tmp_path / f"s{seed}"), "--set", "actors=2", "torch_threads=1"] for seed in range(3)]
    report = on_loopback_cluster({"runs": [{"argv": argv} for argv in runs], "solved_needed": 2}, timeout=480)
    results = {}
    for argv in runs[:len(report["codes"])]:
        meta = json.loads((Path(argv[argv.index("--run-dir") + 1]) / "run.json").read_text())
        results[argv[argv.index("--seed") + 1]] = (meta["steps"], (meta.get("best") or {}).get("mean"))
    print("CartPole-v1, 2 actors, seed -> (env steps, best mean of 20 episodes):", results)
    assert sum(mean is not None and mean >= 475 for _, mean in results.values()) >= 2, results
    assert all(steps <= 50_000 for steps, _ in results.values())
