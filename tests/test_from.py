"""`train --from` fine-tunes: epsilon from the source's final, learning_starts only what the user asked for."""

import json

import pytest

from qzoo.cli import main


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    run = tmp_path_factory.mktemp("from") / "source"
    assert main(["train", "--env", "CartPole-v1", "-n", "600", "--run-dir", str(run), "--no-progress",
                 "--set", "eval_freq=0", "learning_starts=300", "exploration_final_eps=0.07", "torch_threads=1"]) == 0
    return run


def dry_run(capsys, *argv):
    assert main(["train", *argv, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_from_starts_at_the_sources_final_epsilon_and_learns_after_one_minibatch(source, capsys):
    report = dry_run(capsys, "--from", str(source))
    assert report["config"]["exploration_initial_eps"] == pytest.approx(0.07)
    assert report["config"]["learning_starts"] == report["config"]["batch_size"]
    assert "the source's final" in report["notes"][0] and "not the source's 300 again" in report["notes"][0]


def test_from_keeps_what_the_user_sets_even_when_it_equals_the_sources_value(source, capsys, tmp_path):
    report = dry_run(capsys, "--from", str(source), "--set", "exploration_initial_eps=1.0", "learning_starts=300")
    assert (report["config"]["exploration_initial_eps"], report["config"]["learning_starts"]) == (1.0, 300)
    assert "(your exploration_initial_eps)" in report["notes"][0] and "learning_starts 300 (yours)" in report["notes"][0]
    file = tmp_path / "c.yml"
    file.write_text("learning_starts: 100\n")
    report = dry_run(capsys, "--from", str(source), "-c", str(file))
    assert report["config"]["learning_starts"] == 100 and report["config"]["exploration_initial_eps"] == pytest.approx(0.07)
