"""How many CPU threads torch gets, and how its OpenMP threads wait: a policy that must hold on a loaded host.

Measured on a 2-core host (issue 16): ``qzoo train --algo rainbow`` on CartPole beside one busy process ran 74
env steps/s with torch's defaults, 140 with one thread and 206 with ``OMP_WAIT_POLICY=PASSIVE``. By default an
OpenMP worker that finished its share of a parallel region spins on its core for a while (libgomp, which torch's
wheels ship: GOMP_SPINCOUNT iterations) waiting for the next region; when another process wants that core, the spinning thread and the process take turns and the
region's other half waits for the time slice. PASSIVE threads sleep instead, so a busy neighbour costs one core,
not the whole team. OpenMP reads the variable once, when its runtime starts (the first ``import torch``), so it has
to be in ``os.environ`` before that: ``qzoo/__init__.py`` calls ``prefer_passive_omp_wait`` first thing, which
covers ``import qzoo``, ``import qzoo.cli`` and the ``qzoo`` command. Where torch was imported before qzoo (a
notebook that imported torch first) the runtime has already read it and nothing changes. To measure OpenMP's own
default again, set the variable to an empty string: qzoo keeps it, and libgomp warns once and uses its default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SYSFS_CPUS = Path("/sys/devices/system/cpu")


def prefer_passive_omp_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy or torch is already imported.

    Returns whether the variable was set now. A user's own value (ACTIVE, to measure the old behaviour) is kept.
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (``taskset``, cgroup cpusets, Slurm's binding), not the machine's."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int], sysfs: Path = SYSFS_CPUS) -> int:
    """How many physical cores ``cpus`` cover: SMT siblings (two hyperthreads of one core) count once, as they
    share the core's vector units. Linux's topology files say which core a CPU is on; without them, one per CPU."""
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def resolve_torch_threads(requested: int, cpus: set[int] | None = None, sysfs: Path = SYSFS_CPUS) -> int:
    """The torch intra-op thread count for ``torch_threads: requested``: itself when > 0, else one per physical
    core among the CPUs this process may use (``usable_cpus``, or ``cpus`` when given).

    What torch picks by itself depends on how it was built (this build follows the affinity set; others count the
    machine's cores and start 32 threads in a process pinned to 2 CPUs), so qzoo decides. Busy cores (from
    /proc/loadavg) are not subtracted: with passive waiting a thread whose core is taken costs little, and no
    measurement has yet shown that fewer threads help (benchmarks/README.md, "Under load").
    """
    if requested > 0:
        return requested
    return physical_cores(usable_cpus() if cpus is None else cpus, sysfs)
