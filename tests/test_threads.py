"""qzoo's thread policy (issue 16): torch_threads 0 resolved from the network and the free CPUs this process may use;
OpenMP's wait policy left alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo.threads import physical_cores, resolve_torch_threads

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
