"""A ``qzoo sweep`` on a real two-node Ray cluster on loopback, for tests/test_sweep.py; run it inside a network
namespace of its own (``unshare -n``: only 127.0.0.1 exists there).

    python tests/ray_sweep.py '{"argv": [...qzoo sweep argv...], "kill_task_at": STEP}'

Starts a head and a second node (one CPU each), runs the sweep in this process (the driver joins the cluster), with
the worker of the task whose run first reaches STEP env steps SIGKILLed (Ray retries the task, which resumes that
run from its checkpoint); then runs the same command again. Shuts the cluster down by its handle (never with the
ray command line's stop, which kills every Ray on the host) and prints one JSON line: both exit codes, the killed
pids, the nodes the tasks ran on.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from qzoo.cli import main as qzoo
from qzoo.runs import LOCK_FILE
from ray_cluster import descendants_titled


def kill_a_task_at(out: Path, step: int, killed: list[int], timeout: float = 240) -> None:
    """SIGKILL the worker of the sweep task whose run first reaches ``step`` env steps (past its first checkpoint):
    the process that holds that run folder's lock (``runs.LOCK_FILE`` names its PID), a ``ray::train_one``."""
    deadline = time.monotonic() + timeout
    tasks = set(descendants_titled(b"ray::train_one"))
    while time.monotonic() < deadline and not killed:
        for train_csv in out.glob("*/train.csv"):
            rows = train_csv.read_text().strip().splitlines()[1:]
            if rows and int(rows[-1].split(",")[0]) >= step:
                holder = (train_csv.parent / LOCK_FILE).read_text().split(" ", 1)[0]
                tasks |= set(descendants_titled(b"ray::train_one"))
                if holder.isdigit() and int(holder) in tasks:
                    os.kill(int(holder), signal.SIGKILL)
                    killed.append(int(holder))
                    return
        time.sleep(0.05)


def run(request: dict) -> dict:
    node_args = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False},
                      shutdown_at_exit=False)
    try:
        cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        argv = [*request["argv"], "--address", cluster.address]
        out = Path(argv[argv.index("--out") + 1])
        killed: list[int] = []
        watcher = threading.Thread(target=kill_a_task_at, args=(out, request["kill_task_at"], killed), daemon=True)
        watcher.start()
        first = qzoo(argv)
        again = qzoo(argv)
        addresses = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
        return {"codes": [first, again], "killed": killed, "addresses": addresses, "nodes": len(ray.nodes())}
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
