"""A real two-node Ray cluster on loopback, for tests/test_distributed.py; run it inside a network namespace of
its own (``unshare -n``: only 127.0.0.1 exists there), never on the host's network.

    python tests/ray_cluster.py '{"runs": [[...qzoo train argv...], ...], "solved_needed": 2}'

Starts a head and a second node (one CPU each, so the two actors land one per node), joins them, runs each
``qzoo train`` in this process (the learner), stops after ``solved_needed`` runs whose best evaluation reached
475 when given, shuts the cluster down by its handle (never ``ray stop``: it kills every Ray on the host) and
prints one JSON line: the two node ids and each run's exit code.
"""

import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from qzoo.cli import main as qzoo

SOLVED = 475.0  # CartPole-v1's reward threshold


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
        codes, solved = [], 0
        for argv in request["runs"]:
            codes.append(qzoo(argv))
            run_dir = Path(argv[argv.index("--run-dir") + 1])
            best = json.loads((run_dir / "run.json").read_text()).get("best") or {}
            solved += best.get("mean", -1) >= SOLVED
            if request.get("solved_needed") and solved >= request["solved_needed"]:
                break
        return {"nodes": nodes, "codes": codes}
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
