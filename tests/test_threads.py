"""qzoo's thread policy (issue 16): passive OpenMP waiting set before torch loads, and torch_threads 0 resolved from
the CPUs this process may use. Subprocesses, because OpenMP reads its environment once per process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qzoo.threads import physical_cores, resolve_torch_threads

SRC = str(Path(__file__).resolve().parent.parent / "src")


def child(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ["PYTHONPATH"] = os.pathsep.join([SRC, environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env},
                          check=True, timeout=120)
    return done.stdout.strip()


def test_importing_the_cli_sets_a_passive_omp_wait_policy():
    assert child("import qzoo.cli; import os; print(os.environ['OMP_WAIT_POLICY'])") == "PASSIVE"


def test_the_users_own_wait_policy_is_kept():
    assert child("import qzoo.cli; import os; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_is_set_when_torch_was_imported_first():
    """OpenMP has read its environment already: setting the variable then would only mislead."""
    code = "import torch, qzoo.cli, os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    assert child(code) == "unset"


def test_the_policy_is_in_place_before_torch_loads():
    """The agent's module imports torch; the variable must already be there when it does."""
    code = ("import sys, os\nimport qzoo\nassert 'torch' not in sys.modules\nfrom qzoo.dqn import DQN\n"
            "print(os.environ['OMP_WAIT_POLICY'])")
    assert child(code) == "PASSIVE"


def fake_sysfs(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    """A /sys/devices/system/cpu with cpuN -> (package, core)."""
    for cpu, (package, core) in cores.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    return root


def test_zero_threads_follow_the_affinity_set(tmp_path):
    sysfs = fake_sysfs(tmp_path, {cpu: (0, cpu) for cpu in range(8)})  # 8 cores, no SMT
    assert resolve_torch_threads(0, {0}, sysfs) == 1
    assert resolve_torch_threads(0, {2, 5, 7}, sysfs) == 3
    assert resolve_torch_threads(0, set(range(8)), sysfs) == 8


def test_smt_siblings_count_as_one_core(tmp_path):
    # 2 packages x 2 cores x 2 hyperthreads: cpu n and n + 4 share a core, as Linux numbers them.
    sysfs = fake_sysfs(tmp_path, {cpu: (cpu % 4 // 2, cpu % 2) for cpu in range(8)})
    assert physical_cores(set(range(8)), sysfs) == 4
    assert resolve_torch_threads(0, {0, 4}, sysfs) == 1
    assert resolve_torch_threads(0, {0, 1, 2}, sysfs) == 3


def test_without_topology_files_each_cpu_counts(tmp_path):
    assert resolve_torch_threads(0, {0, 1, 2}, tmp_path / "missing") == 3


@pytest.mark.parametrize("requested", [1, 3, 64])
def test_a_fixed_thread_count_is_kept(requested, tmp_path):
    assert resolve_torch_threads(requested, {0}, tmp_path) == requested


def test_this_process_gets_at_least_one_thread():
    assert resolve_torch_threads(0) >= 1
