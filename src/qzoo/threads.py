"""How many CPU threads torch gets: a default that must hold alone and beside other busy processes.

Measured alone and beside one busy process on a 2-core AMD EPYC (issue 16; ``benchmarks/README.md``, "3. qzoo's
default thread policy"). Two torch threads only pay where one gradient step is large and the machine is idle;
beside one busy process they collapse, whatever OpenMP's wait policy, because each parallel region waits for the
thread that shares its core with the neighbour:

    env steps/s or ms per step          2 threads, spin   2 threads, PASSIVE   1 thread
    CartPole DQN (flat MLP), alone            2,737             1,173            2,327
    CartPole DQN, beside a busy process         766             1,782            2,231
    Rainbow CartPole step, alone             5.8 ms           14.5 ms           7.0 ms
    Rainbow CartPole step, loaded           24.4 ms            7.9 ms           7.1 ms
    DER SpaceInvaders step, alone           18.2 ms           19.5 ms          18.5 ms
    DER SpaceInvaders step, loaded          72.1 ms           66.6 ms          16.7 ms
    Nature CNN SpaceInvaders DQN, alone     169-182               121          131

So ``torch_threads: 0`` picks one thread for networks whose step is small (the MLPs of classic control, MinAtar's
CNN): threads cost them more in hand-offs than they save, alone too. Frame CNNs (the Nature CNN gains 1.3x from a
second idle core) get one thread per *free* physical core: the cores this process may use (affinity, SMT siblings
counted once) less the busy ones, at least one. Busy is measured, not remembered: the CPUs' busy time in /proc/stat
over a fifth of a second (``busy_cores``). The first version read the 1-minute load average, which still counted
runs that had ended: a SpaceInvaders run started just after another took 1 thread on an idle machine (118 env
steps/s against 151 with 2; benchmarks/README.md, section 2). A run started beside others therefore takes one
thread; runs started at the same instant all see an idle machine, so ``qzoo sweep`` and ``qzoo tune`` give each
of their runs ``torch_threads: 1``, and side-by-side seeds should too.

OpenMP's wait policy is left to OpenMP (libgomp: spin a while, then sleep). ``OMP_WAIT_POLICY=PASSIVE`` helped
only where two threads shared a loaded machine and cost 2.3x (CartPole) and 1.4x (Nature CNN) alone, where qzoo's
default now runs one thread or has idle cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SYSFS_CPUS = Path("/sys/devices/system/cpu")
PROC_STAT = Path("/proc/stat")
BUSY_SAMPLE_SECONDS = 0.2  # 20 clock ticks a CPU at Linux's usual 100 Hz: busy time to about 5% of a core


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


def cpu_ticks(stat: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks since boot of each CPU of ``cpus`` in /proc/stat's text (its ``cpuN`` lines:
    user nice system idle iowait irq softirq steal ...). Idle and iowait are free time; steal (a hypervisor running
    another guest) is busy: the core is not ours then."""
    ticks = {}
    for line in stat.splitlines():
        name, *fields = line.split() or [""]
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus and len(fields) >= 8:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
            total = user + nice + system + idle + iowait + irq + softirq + steal
            ticks[int(name[3:])] = (total - idle - iowait, total)
    return ticks


def busy_between(before: str, after: str, cpus: set[int]) -> float:
    """CPUs' worth of busy time among ``cpus`` between two readings of /proc/stat (0.0 to len(cpus))."""
    start, end = cpu_ticks(before, cpus), cpu_ticks(after, cpus)
    busy = 0.0
    for cpu in start.keys() & end.keys():
        elapsed = end[cpu][1] - start[cpu][1]
        if elapsed > 0:
            busy += (end[cpu][0] - start[cpu][0]) / elapsed
    return busy


def busy_cores(cpus: set[int] | None = None, seconds: float = BUSY_SAMPLE_SECONDS, stat: Path = PROC_STAT) -> int:
    """Cores other processes keep busy now among ``cpus`` (default: this process's): their busy time in /proc/stat
    over ``seconds``, while this process sleeps, rounded. Without /proc/stat (macOS, Windows), the 1-minute load
    average, rounded; 0 where neither can be read."""
    cpus = usable_cpus() if cpus is None else cpus
    try:
        before = stat.read_text()
        time.sleep(seconds)
        return round(busy_between(before, stat.read_text(), cpus))
    except OSError:
        pass
    try:
        return round(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def resolve_torch_threads(requested: int, frame_cnn: bool = False, cpus: set[int] | None = None,
                          sysfs: Path = SYSFS_CPUS, busy: int | None = None) -> int:
    """The torch intra-op thread count for ``torch_threads: requested`` (see the module docstring): itself when
    > 0; else 1 for small networks, and for frame CNNs (``frame_cnn``: networks.FRAME_NETWORKS) the free physical
    cores among the usable CPUs (``cpus``) less the ``busy`` ones (default: measured now, ``busy_cores``), at least 1."""
    if requested > 0:
        return requested
    if not frame_cnn:
        return 1
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, physical_cores(cpus, sysfs) - (busy_cores(cpus) if busy is None else busy))
