"""Progress anywhere: `qzoo train > train.log` prints plain lines where the tqdm bar cannot show."""

import os
import re
import subprocess
import sys
from pathlib import Path

QZOO = str(Path(sys.executable).parent / "qzoo")
LINE = re.compile(r"^step ([\d,]+)/3,000 \(\d+%\) \| \d+ steps/s \| ETA \S+ \| return \S+( \(last \d+\))? \| "
                  r"eps [\d.]+ \| loss \S+$")


def train_to_file(tmp_path: Path, seconds: str) -> list[str]:
    log = tmp_path / f"train-{seconds}.log"
    env = {**os.environ, "QZOO_PROGRESS_SECONDS": seconds, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "w") as out:
        subprocess.run([QZOO, "train", "--env", "CartPole-v1", "-n", "3000", "--run-dir", str(tmp_path / seconds),
                        "--set", "eval_freq=1500", "n_eval_episodes=2", "log_interval=500", "torch_threads=1"],
                       stdout=out, stderr=subprocess.DEVNULL, env=env, check=True, timeout=300)
    return log.read_text().splitlines()


def test_a_run_piped_to_a_file_prints_a_line_every_log_interval_and_one_per_evaluation(tmp_path):
    lines = train_to_file(tmp_path, "0")
    steps = [int(m.group(1).replace(",", "")) for m in map(LINE.match, lines) if m]
    assert steps == [500, 1000, 1500, 2000, 2500, 3000]
    evals = [line for line in lines if line.startswith("eval at step ")]
    assert [line.split(":")[0] for line in evals] == ["eval at step 1,500", "eval at step 3,000"]
    assert lines[-1].startswith("run saved in")


def test_lines_are_at_least_30_seconds_apart_so_a_fast_run_prints_its_first_only(tmp_path):
    lines = train_to_file(tmp_path, "30")
    assert [m.group(1) for m in map(LINE.match, lines) if m] == ["500"]
    assert sum(line.startswith("eval at step ") for line in lines) == 2  # every evaluation has its line
