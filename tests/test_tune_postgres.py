"""Tuning on many machines: two worker processes share one study in a real PostgreSQL server.

The server is Debian's PostgreSQL (``make test`` installs it where missing), started for this test in
a temporary folder, listening on a loopback port only, and stopped afterwards.
"""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

QZOO = str(Path(sys.executable).parent / "qzoo")
pytestmark = pytest.mark.slow


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        pytest.fail("PostgreSQL is not installed; `make test` installs Debian's postgresql package")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pg = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="qzoo-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        user = pwd.getpwnam("postgres")
        os.chmod(root, 0o755)
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(pg / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    run(str(pg / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "start",
        "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1")
    try:
        run(str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "qzoo")
        yield f"postgresql://postgres@127.0.0.1:{port}/qzoo"
    finally:
        run(str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_add_their_trials_to_one_study(postgres_url, tmp_path):
    argv = [QZOO, "tune", "--env", "CartPole-v1", "-n", "1000", "--evaluations", "2", "--eval-episodes", "2",
            "--trials", "3", "--storage", postgres_url, "--study-name", "shared", "--json"]
    workers = [subprocess.Popen([*argv, "--out", str(tmp_path / f"w{i}"), "--seed", str(i)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    ran = [set(r["trials_run"]) for r in reports]
    assert len(ran[0]) == len(ran[1]) == 3
    assert not ran[0] & ran[1], "no trial was run twice"
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials()
    assert len(trials) == 6 and {t.number for t in trials} == ran[0] | ran[1]
    assert all(t.state.is_finished() for t in trials)
