"""qzoo's thread policy (issue 16): torch_threads 0 resolved from the network and the free CPUs this process may use;
OpenMP's wait policy left alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo.threads import busy_between, busy_cores, cpu_ticks, physical_cores, resolve_torch_threads

SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_importing_qzoo_leaves_openmps_wait_policy_alone():
    """PASSIVE waiting cost 2.3x alone (benchmarks/README.md): qzoo no longer sets it."""
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ["PYTHONPATH"] = os.pathsep.join([SRC, environ.get("PYTHONPATH", "")])
    code = "import qzoo.cli, os; from qzoo.dqn import DQN; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True,
                          timeout=120)
    assert done.stdout.strip() == "unset"


def fake_sysfs(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    """A /sys/devices/system/cpu with cpuN -> (package, core)."""
    for cpu, (package, core) in cores.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    return root


def test_zero_threads_give_small_networks_one_thread(tmp_path):
    sysfs = fake_sysfs(tmp_path, {cpu: (0, cpu) for cpu in range(8)})
    # MLPs and MinAtar's CNN: threads cost these more in hand-offs than they save, alone too.
    assert resolve_torch_threads(0, False, set(range(8)), sysfs, busy=0) == 1


def test_zero_threads_give_frame_cnns_the_free_cores_of_the_affinity_set(tmp_path):
    sysfs = fake_sysfs(tmp_path, {cpu: (0, cpu) for cpu in range(8)})  # 8 cores, no SMT
    assert resolve_torch_threads(0, True, {0}, sysfs, busy=0) == 1
    assert resolve_torch_threads(0, True, {2, 5, 7}, sysfs, busy=0) == 3
    assert resolve_torch_threads(0, True, set(range(8)), sysfs, busy=0) == 8
    assert resolve_torch_threads(0, True, set(range(8)), sysfs, busy=3) == 5  # three cores taken by others
    assert resolve_torch_threads(0, True, {0, 1}, sysfs, busy=1) == 1  # a seed beside another on 2 cores
    assert resolve_torch_threads(0, True, {0, 1}, sysfs, busy=6) == 1  # never fewer than one


def test_smt_siblings_count_as_one_core(tmp_path):
    # 2 packages x 2 cores x 2 hyperthreads: cpu n and n + 4 share a core, as Linux numbers them.
    sysfs = fake_sysfs(tmp_path, {cpu: (cpu % 4 // 2, cpu % 2) for cpu in range(8)})
    assert physical_cores(set(range(8)), sysfs) == 4
    assert resolve_torch_threads(0, True, {0, 4}, sysfs, busy=0) == 1
    assert resolve_torch_threads(0, True, {0, 1, 2}, sysfs, busy=0) == 3


def test_without_topology_files_each_cpu_counts(tmp_path):
    assert resolve_torch_threads(0, True, {0, 1, 2}, tmp_path / "missing", busy=0) == 3


@pytest.mark.parametrize("requested", [1, 3, 64])
def test_a_fixed_thread_count_is_kept(requested, tmp_path):
    assert resolve_torch_threads(requested, False, {0}, tmp_path, busy=0) == requested


def test_this_process_gets_at_least_one_thread():
    assert resolve_torch_threads(0, True) >= 1


STAT_BEFORE = """cpu  900 0 300 5000 100 0 0 0 0 0
cpu0 500 0 100 2000 50 0 0 0 0 0
cpu1 400 0 200 3000 50 0 0 0 0 0
cpu2 0 0 0 100 0 0 0 0 0 0

intr 12345
"""
# 100 ticks of each CPU later: cpu0 ran 90 (user 80, system 10), cpu1 ran 20 and waited 5 on I/O, cpu2 had 50
# stolen by the hypervisor.
STAT_AFTER = """cpu  1000 0 300 5100 105 0 0 50 0 0
cpu0 580 0 110 2010 50 0 0 0 0 0
cpu1 420 0 200 3075 55 0 0 0 0 0
cpu2 0 0 0 150 0 0 0 50 0 0
intr 23456
"""


def test_busy_time_between_two_readings_of_proc_stat_counts_steal_as_busy_and_iowait_as_free():
    assert cpu_ticks(STAT_BEFORE, {0, 1}) == {0: (600, 2650), 1: (600, 3650)}  # the "cpu" total line is not a CPU
    assert busy_between(STAT_BEFORE, STAT_AFTER, {0}) == pytest.approx(0.9)
    assert busy_between(STAT_BEFORE, STAT_AFTER, {1}) == pytest.approx(0.2)
    assert busy_between(STAT_BEFORE, STAT_AFTER, {2}) == pytest.approx(0.5)
    assert busy_between(STAT_BEFORE, STAT_AFTER, {0, 1, 2}) == pytest.approx(1.6)
    assert busy_between(STAT_BEFORE, STAT_AFTER, {0, 7}) == pytest.approx(0.9)  # a CPU /proc/stat lacks adds 0


def test_a_busy_process_beside_this_one_is_seen_at_once_where_the_load_average_lags():
    """The 1-minute load average of the first version still counted runs that had ended and missed new ones."""
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat on this platform")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        cpus = {next(iter(sorted(os.sched_getaffinity(burner.pid))))} if hasattr(os, "sched_getaffinity") else None
        if cpus is not None:
            os.sched_setaffinity(burner.pid, cpus)  # one known CPU, so it is busy whatever else the machine runs
        busy = max(busy_cores(cpus, seconds=0.3) for _ in range(3))  # the burner is surely running by the last
    finally:
        burner.kill()
        burner.wait()
    assert busy == 1


def test_without_proc_stat_the_load_average_stands_in(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 1.0, 0.5))
    assert busy_cores({0}, seconds=0.0, stat=tmp_path / "missing") == 3
