"""A real two-node Ray cluster on loopback, for tests/test_distributed.py; run it inside a network namespace of
its own (``unshare -n``: only 127.0.0.1 exists there), never on the host's network.

    python tests/ray_cluster.py '{"runs": [{"argv": [...qzoo train argv...]}, ...], "solved_needed": 2}'

Starts a head and a second node (one CPU each, so two actors land one per node), joins them, and runs each
``qzoo train`` in turn: in this process (the learner joins the cluster this script joined), or with
``"process": true`` as a separate learner process joining with ``--address``. ``"kill_actor_at": STEP``: one actor
process gets SIGKILL once the run's train.csv reaches STEP env steps; ``"kill_learner_at": STEP``: the learner
process does. Stops after ``solved_needed`` runs whose best evaluation reached 475, when given. Shuts the cluster
down by its handle (never with the ray command line's stop, which kills every Ray on the host) and prints one JSON
line: the node ids and addresses, each run's exit code and the processes it killed.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from qzoo.cli import main as qzoo

SOLVED = 475.0  # CartPole-v1's reward threshold


def descendants_titled(prefix: bytes) -> list[int]:
    """This process's descendants whose process title starts with ``prefix``: only our cluster's processes."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                title = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(prefix):
                found.append(child)
    return sorted(found)


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen | None = None, timeout: float = 240) -> bool:
    """Whether the run's train.csv reached ``step`` env steps (False once ``process`` ended, or at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            rows = (run_dir / "train.csv").read_text().strip().splitlines()[1:]
        except OSError:
            rows = []
        if rows and int(rows[-1].split(",")[0]) >= step:
            return True
        time.sleep(0.05)
    return False


def kill_an_actor_at(run_dir: Path, step: int, killed: list[int]) -> None:
    """SIGKILL one qzoo actor process (title ``ray::Host``) once the run reaches ``step``: a crashed actor."""
    if wait_for_step(run_dir, step):
        pids = descendants_titled(b"ray::Host")
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])


def run(request: dict) -> dict:
    node_args = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False},
                      shutdown_at_exit=False)
    try:
        worker = cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        nodes = {"head": cluster.head_node.node_id, "worker": worker.node_id,
                 "addresses": sorted({n["NodeManagerAddress"] for n in ray.nodes()})}
        codes, solved, killed, errors, seconds = [], 0, [], [], []
        for entry in request["runs"]:
            argv = entry["argv"]
            run_dir = Path(argv[argv.index("--run-dir" if "--run-dir" in argv else "--resume") + 1])
            started = time.monotonic()
            if "kill_actor_at" in entry:
                threading.Thread(target=kill_an_actor_at, args=(run_dir, entry["kill_actor_at"], killed),
                                 daemon=True).start()
            if entry.get("process"):
                learner = subprocess.Popen([sys.executable, "-c", "from qzoo.cli import entry_point; entry_point()",
                                            *argv, "--address", cluster.address], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True)
                if "kill_learner_at" in entry and wait_for_step(run_dir, entry["kill_learner_at"], learner):
                    learner.kill()  # SIGKILL: no checkpoint of its own, the last periodic one stays
                    killed.append(learner.pid)
                codes.append(learner.wait())
                errors.append(learner.stderr.read()[-2000:])
            else:
                codes.append(qzoo(argv))
            seconds.append(round(time.monotonic() - started, 1))
            best = json.loads((run_dir / "run.json").read_text()).get("best") or {}
            solved += best.get("mean", -1) >= SOLVED
            if request.get("solved_needed") and solved >= request["solved_needed"]:
                break
        return {"nodes": nodes, "codes": codes, "killed": killed, "seconds": seconds, "learner_errors": errors}
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
